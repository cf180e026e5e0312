"""Build the parity fixtures of tests/test_convert.py with the reference implementations.

Runs in the reference environment (bench/setup_reference_env.sh: torch 2.14.1, torchvision 0.29.1,
imagen-pytorch 1.22.2), with the EchoDiffusion authors' fork of imagen-pytorch (branch `distillation`)
first on the path, e.g.
    PYTHONPATH=/path/to/imagen-pytorch-fork:. .ref-venv/bin/python bench/make_parity_fixtures.py
EchoGen never imports either library; this script only writes tensors.

Writes tests/fixtures/published/:
  imagen_tiny.safetensors  EMA weights of three tiny Unet3Ds (keys "{i}.<param>") built by the fork,
                           every parameter randomised (the fork zero-initialises some layers), plus
                           fixed inputs and the fork's preconditioned denoiser outputs (guidance 1 / 5,
                           with / without dynamic thresholding) and a 3-step deterministic sample
  imagen_tiny.json         the fork's Unet3D options per unet, the merged.pt top-level / ema key layout
                           (non-parameter ema entries), the Imagen settings
  echonet_r2plus1d.safetensors  input clip, torchvision r2plus1d_18 (fc -> 1) features and output, with
                           weights from tests/fixtures/published/detfill.py (not stored: 31 M parameters)
  echonet_r2plus1d.json    its state-dict key names and shapes
It also converts the checkpoint ImagenTrainer.save() wrote (the real merged.pt layout) with
echogen.weights.convert in this environment and prints the result, as a documented check.

    ... bench/make_parity_fixtures.py --full-2scm DIR
writes a full-size 2SCM merged.pt (random weights, fork's ImagenTrainer.save) + config.yaml for the
end-to-end check in docs/PUBLISHED.md.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "published"
SIGMA_DATA = 0.25


def _detfill():
    spec = importlib.util.spec_from_file_location("detfill", OUT / "detfill.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _patch_t5():
    import transformers  # imagen-pytorch reads a T5 config from the hub at import time
    transformers.T5Config.from_pretrained = staticmethod(lambda *a, **k: transformers.T5Config(d_model=768))


UNETS = [  # base (non memory-efficient, bottleneck attention), SR memory-efficient, SR without cross-attention
    dict(dim=8, dim_mults=[1, 2], num_resnet_blocks=2, max_text_len=1, layer_attns=False,
         layer_cross_attns=[False, True], cond_images_channels=3, attend_at_middle=True, attn_heads=2, attn_dim_head=8),
    dict(dim=8, dim_mults=[1, 2], num_resnet_blocks=1, max_text_len=1, layer_attns=False,
         layer_cross_attns=[False, True], memory_efficient=True, cond_images_channels=3, attn_heads=2, attn_dim_head=8),
    dict(dim=8, dim_mults=[1, 2], num_resnet_blocks=1, max_text_len=1, layer_attns=False,
         layer_cross_attns=False, cond_images_channels=3, attend_at_middle=False, attn_heads=2, attn_dim_head=8),
]
IMAGEN = dict(condition_on_text=True, image_sizes=[8, 16, 16], text_embed_dim=1, num_sample_steps=3,
              temporal_downsample_factor=[2, 1, 1], sigma_min=0.002, sigma_max=80, sigma_data=SIGMA_DATA, rho=7,
              P_mean=-1.2, P_std=1.2, S_churn=0, S_tmin=0.05, S_tmax=50, S_noise=1.003, resize_mode="trilinear")
VIDEO_FRAMES = 8


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random and O(1)-preserving (gains near 1), so no layer is a no-op."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        r = torch.randn(p.shape, generator=g)
        if name.endswith(".g") or (name.endswith("weight") and p.ndim == 1):
            p.copy_(1 + 0.2 * r)
        elif p.ndim >= 2 and "null" not in name and "latents" not in name and "pos_emb" not in name:
            p.copy_(r / max(1, p[0].numel()) ** 0.5)
        else:
            p.copy_(0.3 * r)


def imagen_fixtures(tensors: dict, meta: dict) -> None:
    _patch_t5()
    from imagen_pytorch import ElucidatedImagen, ImagenTrainer, Unet3D

    torch.manual_seed(0)
    unets = [Unet3D(**u, lowres_cond=i > 0) for i, u in enumerate(UNETS)]
    imagen = ElucidatedImagen(unets=unets, **IMAGEN)
    trainer = ImagenTrainer(imagen=imagen, lr=5e-4, split_batches=False)
    for i, ema in enumerate(trainer.ema_unets):
        randomise(imagen.unets[i], 100 + i)            # the online weights ("model")
        randomise(ema.ema_model, 200 + i)               # the EMA weights the paper sampled with
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "merged.pt"
        trainer.save(str(path), time_elapsed=12.5)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta["checkpoint_layout"] = {
            "top_level": sorted(ckpt),
            "ema_non_parameter_keys": sorted(k for k in ckpt["ema"] if ".ema_model." not in k),
            "version": ckpt["version"], "steps": ckpt["steps"].tolist()}
        _check_echogen_converts(path)

    meta["unets"] = UNETS
    meta["imagen"] = IMAGEN
    meta["video_frames"] = VIDEO_FRAMES
    g = torch.Generator().manual_seed(7)
    ef = torch.tensor([0.62, 0.0])                      # EF 62 %, and EF exactly 0 (masked as "no text")
    frame = torch.rand((2, 1, 16, 16), generator=g).expand(-1, 3, -1, -1).contiguous()
    tensors["ef"] = ef
    for i, (unet, ema) in enumerate(zip(imagen.unets, trainer.ema_unets)):
        net = ema.ema_model.eval()
        for k, v in net.state_dict().items():
            tensors[f"{i}.{k}"] = v.contiguous()
        size = IMAGEN["image_sizes"][i]
        frames = VIDEO_FRAMES // IMAGEN["temporal_downsample_factor"][i]
        x = torch.randn((2, 3, frames, size, size), generator=g)
        cond = dict(text_embeds=ef.reshape(2, 1, 1), text_mask=(ef != 0).reshape(2, 1),
                    cond_images=torch.nn.functional.interpolate(frame, size=(size, size), mode="nearest"))
        tensors[f"case{i}.frame"] = cond["cond_images"][:, :1].contiguous()
        if i > 0:
            low = torch.rand((2, 3, frames, size, size), generator=g) * 2 - 1
            cond.update(lowres_cond_img=low, lowres_noise_times=torch.full((2,), 0.2))
            tensors[f"case{i}.lowres"] = low
        for si, sigma in enumerate([0.3, 5.0]):
            xs = x * sigma
            tensors[f"case{i}.x{si}"] = xs
            for w in (1.0, 5.0):
                for clamp in (False, True):
                    d = imagen.preconditioned_network_forward(
                        net.forward_with_cond_scale, xs, float(sigma), sigma_data=SIGMA_DATA, clamp=clamp,
                        dynamic_threshold=True, cond_scale=w, **cond)
                    tensors[f"case{i}.D{si}.w{int(w)}.{'thr' if clamp else 'raw'}"] = d.contiguous()
            d = imagen.preconditioned_network_forward(net.forward, xs, float(sigma), sigma_data=SIGMA_DATA,
                                                      ignore_time=True, **cond)
            tensors[f"case{i}.D{si}.notime"] = d.contiguous()
        meta.setdefault("sigmas", [0.3, 5.0])

    # a 3-step deterministic (S_churn = 0) sample of the base unet with guidance 5, EMA weights
    imagen.unets[0].load_state_dict(trainer.ema_unets[0].ema_model.state_dict())
    torch.manual_seed(123)
    noise = torch.randn((2, 3, VIDEO_FRAMES // 2, 8, 8))
    torch.manual_seed(123)
    out = imagen.sample(text_embeds=ef.reshape(2, 1, 1), cond_images=tensors["case0.frame"].expand(-1, 3, -1, -1),
                        video_frames=VIDEO_FRAMES, cond_scale=5.0, stop_at_unet_number=1, use_tqdm=False)
    tensors["sample0.noise"] = noise
    tensors["sample0.out"] = out.contiguous()


def _check_echogen_converts(path: Path) -> None:
    """The real trainer-saved layout converts with EchoGen (printed; the tests rebuild the layout)."""
    try:
        from echogen.weights.convert import convert_imagen_checkpoint
    except Exception as e:  # noqa: BLE001 (EchoGen may need packages this env lacks)
        print(f"(skipped EchoGen conversion check: {e})")
        return
    import yaml
    cfg = {"unets": {f"unet{i + 1}": u for i, u in enumerate(UNETS)}, "imagen": dict(IMAGEN),
           "dataset": {"fps": 32, "duration": 0.25}}
    with tempfile.TemporaryDirectory() as tmp:
        cpath = Path(tmp) / "config.yaml"
        cpath.write_text(yaml.safe_dump(cfg))
        try:
            out = convert_imagen_checkpoint(path, cpath, Path(tmp) / "bundle")
            print("EchoGen converted the trainer-saved checkpoint:", json.dumps(out["stages"]))
        except Exception as e:  # noqa: BLE001
            print(f"EchoGen conversion of the trainer-saved checkpoint FAILED: {e}")


def echonet_fixtures(tensors: dict, meta: dict) -> None:
    from torchvision.models.video import r2plus1d_18
    fill = _detfill()
    model = r2plus1d_18(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 1)
    sd = model.state_dict()
    meta["echonet_keys"] = {k: list(v.shape) for k, v in sd.items()}
    model.load_state_dict(fill.fill_state(meta["echonet_keys"]))
    model.eval()
    g = torch.Generator().manual_seed(11)
    z = torch.randn((2, 3, 8, 32, 32), generator=g)     # already normalised clips
    with torch.no_grad():
        feats = torch.flatten(model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(model.stem(z)))))), 1)
        y = model(z)
    tensors.update({"z": z, "features": feats.contiguous(), "y": y.reshape(-1).contiguous()})


FULL_2SCM = {  # the values of EchoDiffusion's diffusion/configs/2SCM.yaml that define the networks
    "unets": {"unet1": dict(dim=64, num_resnet_blocks=2, dim_mults=[1, 2, 4], max_text_len=1, layer_attns=False,
                            layer_cross_attns=[False, False, True], cond_images_channels=3),
              "unet2": dict(dim=64, num_resnet_blocks=2, dim_mults=[1, 2, 4], max_text_len=1, layer_attns=False,
                            layer_cross_attns=[False, False, True], memory_efficient=True, cond_images_channels=3)},
    "imagen": dict(elucidated=True, condition_on_text=True, image_sizes=[56, 112], text_embed_dim=1,
                   num_sample_steps=[32, 64], random_crop_sizes=[None, 56], temporal_downsample_factor=[4, 1],
                   sigma_min=0.002, sigma_max=80, sigma_data=0.25, rho=7, P_mean=-1.2, P_std=1.2, S_churn=[80, 160],
                   S_tmin=0.05, S_tmax=50, S_noise=1.003, resize_mode="trilinear"),
    "trainer": {"split_batches": False, "lr": 5e-4},
    "dataset": {"fps": 32, "duration": 2.0, "grayscale": False},
    "checkpoint": {"cond_scale": 5.0},
}


def full_2scm(out: Path) -> None:
    """A full-size 2SCM checkpoint (random weights) in the published layout: out/merged.pt + config.yaml,
    saved by the fork's ImagenTrainer. Without `elucidated` in the yaml, as the published 1SCM config."""
    import yaml
    _patch_t5()
    from imagen_pytorch import ElucidatedImagen, ImagenTrainer, Unet3D
    torch.manual_seed(0)
    cfg = json.loads(json.dumps(FULL_2SCM))
    unets = [Unet3D(**u, lowres_cond=i > 0) for i, u in enumerate(cfg["unets"].values())]
    imagen = ElucidatedImagen(unets=unets, **{k: v for k, v in cfg["imagen"].items() if k != "elucidated"})
    trainer = ImagenTrainer(imagen=imagen, **cfg["trainer"])
    for i, ema in enumerate(trainer.ema_unets):
        randomise(ema.ema_model, 300 + i)
    out.mkdir(parents=True, exist_ok=True)
    trainer.save(str(out / "merged.pt"), time_elapsed=1.0)
    del cfg["imagen"]["elucidated"]
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    print(f"wrote {out / 'merged.pt'} ({(out / 'merged.pt').stat().st_size / 1e6:.0f} MB) and config.yaml")


def main() -> int:
    from safetensors.torch import save_file
    if len(sys.argv) == 3 and sys.argv[1] == "--full-2scm":
        full_2scm(Path(sys.argv[2]))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    t, m = {}, {}
    imagen_fixtures(t, m)
    save_file(t, str(OUT / "imagen_tiny.safetensors"))
    (OUT / "imagen_tiny.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    t, m = {}, {}
    echonet_fixtures(t, m)
    save_file(t, str(OUT / "echonet_r2plus1d.safetensors"))
    (OUT / "echonet_r2plus1d.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    for f in sorted(OUT.iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
