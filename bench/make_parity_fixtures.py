"""Build the parity fixtures of tests/test_convert.py with the reference implementations.

Runs in the reference environment (bench/setup_reference_env.sh: torch 2.14.1, torchvision 0.29.1,
imagen-pytorch 1.22.2, omegaconf 2.2.3 as the authors pinned), with the EchoDiffusion authors' fork of
imagen-pytorch (branch `distillation`) first on the path, e.g.
    PYTHONPATH=/path/to/imagen-pytorch-fork:. .ref-venv/bin/python bench/make_parity_fixtures.py
EchoGen never imports either library (nor omegaconf); this script only writes tensors.

The imagen networks are built the way the authors' scripts build theirs (build_authors_way: a config.yaml
read with OmegaConf, `Unet3D(**v, lowres_cond=(i > 0))`, ElucidatedImagen, ImagenTrainer.save), so a YAML
list reaches Unet3D as an omegaconf ListConfig, as it did for the published checkpoints.

Writes tests/fixtures/published/:
  imagen_tiny.safetensors  EMA weights of the three tiny Unet3Ds of TINY_YAML (keys "{i}.<param>"),
                           every parameter randomised (the fork zero-initialises some layers), plus
                           fixed inputs and the fork's preconditioned denoiser outputs (guidance 1 / 5,
                           with / without dynamic thresholding, one sigma per batch and per-sample
                           sigmas 5.0 / 0.3 in one batch; the grey frame given to the fork as RGB, the
                           low-res input at level 0.2) and a 3-step deterministic sample
  imagen_tiny.json         TINY_YAML (config_yaml), the cross-attention levels the fork built, the merged.pt
                           top-level / ema key layout (non-parameter ema entries), and list_probes: for
                           each list-valued Unet3D option, what the fork builds from it through OmegaConf
                           (state-dict keys and shapes, or its error)
  echonet_r2plus1d.safetensors  input clip, torchvision r2plus1d_18 (fc -> 1) features and output, with
                           weights from tests/fixtures/published/detfill.py (not stored: 31 M parameters)
  echonet_r2plus1d.json    its state-dict key names and shapes
It also converts the checkpoint ImagenTrainer.save() wrote (the real merged.pt layout) with
echogen.weights.convert in this environment and prints the result, as a documented check.
Full-size published networks: bench/published_parity.py (same builder).
"""
from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "published"


def _detfill():
    spec = importlib.util.spec_from_file_location("detfill", OUT / "detfill.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _patch_t5():
    import transformers  # imagen-pytorch reads a T5 config from the hub at import time
    transformers.T5Config.from_pretrained = staticmethod(lambda *a, **k: transformers.T5Config(d_model=768))


# A tiny cascade written as the authors wrote theirs (diffusion/configs/2SCM.yaml's keys, tiny values) and
# built as their scripts build it: OmegaConf.load, Unet3D(**v, lowres_cond=i > 0). Through OmegaConf,
# `layer_cross_attns: [False, True]` gives unets 1 and 2 cross-attention at BOTH levels (the published
# networks' quirk, echogen/weights/convert.py); unet 3 (`False`) has none, like 4SCM's last stage.
TINY_YAML = """\
unets:
  unet1: # base, non memory-efficient, bottleneck attention
    dim: 8
    num_resnet_blocks: 2
    dim_mults: [1, 2]
    max_text_len: 1
    layer_attns: False
    layer_cross_attns: [False, True]
    cond_images_channels: 3
    attend_at_middle: True
    attn_heads: 2
    attn_dim_head: 8
  unet2: # SR, memory-efficient
    dim: 8
    num_resnet_blocks: 1
    dim_mults: [1, 2]
    max_text_len: 1
    layer_attns: False
    layer_cross_attns: [False, True]
    memory_efficient: True
    cond_images_channels: 3
    attn_heads: 2
    attn_dim_head: 8
  unet3: # SR without cross-attention or bottleneck attention
    dim: 8
    num_resnet_blocks: 1
    dim_mults: [1, 2]
    max_text_len: 1
    layer_attns: False
    layer_cross_attns: False
    cond_images_channels: 3
    attend_at_middle: False
    attn_heads: 2
    attn_dim_head: 8
imagen:
  elucidated: True
  condition_on_text: True
  image_sizes: [8, 16, 16]
  text_embed_dim: 1
  num_sample_steps: 3
  temporal_downsample_factor: [2, 1, 1]
  sigma_min: 0.002
  sigma_max: 80
  sigma_data: 0.25
  rho: 7
  P_mean: -1.2
  P_std: 1.2
  S_churn: 0
  S_tmin: 0.05
  S_tmax: 50
  S_noise: 1.003
  resize_mode: 'trilinear'
trainer:
  split_batches: False
  lr: 5e-4
dataset:
  fps: 32
  duration: 0.25
checkpoint:
  cond_scale: 5.
"""
VIDEO_FRAMES = 8

# One Unet3D option given as a YAML list, on top of PROBE_BASE, built through OmegaConf: what the fork does
# with it (its state-dict key names and shapes, or the error it raises). tests/test_convert.py checks that
# echogen.weights.convert resolves each the same way or refuses it.
PROBE_BASE = dict(dim=8, dim_mults=[1, 2], num_resnet_blocks=1, max_text_len=1, attn_heads=2, attn_dim_head=8,
                  cond_images_channels=3, layer_attns=False, layer_cross_attns=False, text_embed_dim=1)
LIST_PROBES = {
    "layer_cross_attns=[False, True]": ("layer_cross_attns", [False, True]),
    "layer_cross_attns=[False, False]": ("layer_cross_attns", [False, False]),
    "layer_cross_attns=[]": ("layer_cross_attns", []),
    "layer_attns=[False, False]": ("layer_attns", [False, False]),
    "layer_attns=[]": ("layer_attns", []),
    "num_resnet_blocks=[1, 2]": ("num_resnet_blocks", [1, 2]),
    "resnet_groups=[4, 4]": ("resnet_groups", [4, 4]),
    "layer_attns_depth=[1, 2]": ("layer_attns_depth", [1, 2]),
    "temporal_strides=[1, 1]": ("temporal_strides", [1, 1]),
    "attn_heads=[2, 2]": ("attn_heads", [2, 2]),
    "attn_dim_head=[8, 8]": ("attn_dim_head", [8, 8]),
    "ff_mult=[2, 2]": ("ff_mult", [2, 2]),
    "init_cross_embed_kernel_sizes=[3, 7]": ("init_cross_embed_kernel_sizes", [3, 7]),
    "cross_embed_downsample_kernel_sizes=[2, 4]": ("cross_embed_downsample_kernel_sizes", [2, 4]),
    "dim_mults=[1, 2, 2]": ("dim_mults", [1, 2, 2]),
}


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


def build_authors_way(config_path):
    """(config, ElucidatedImagen, ImagenTrainer) built from a config.yaml the way EchoDiffusion's
    diffusion/train.py builds them: OmegaConf.load, Unet3D(**v, lowres_cond=(i > 0)) for each unets entry,
    ElucidatedImagen(unets, **OmegaConf.to_container(imagen)) without `elucidated`, ImagenTrainer(**trainer)."""
    _patch_t5()
    from imagen_pytorch import ElucidatedImagen, ImagenTrainer, Unet3D
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(str(config_path))
    unets = [Unet3D(**v, lowres_cond=(i > 0)) for i, (_, v) in enumerate(cfg.unets.items())]
    im = OmegaConf.to_container(cfg.imagen)
    im.pop("elucidated", None)         # train.py deletes it before building (the 1SCM / 4SCM configs lack it)
    imagen = ElucidatedImagen(unets=unets, **im)
    trainer = ImagenTrainer(imagen=imagen, **OmegaConf.to_container(cfg.trainer))
    return cfg, imagen, trainer


def list_probes() -> dict:
    """LIST_PROBES through OmegaConf and the fork's Unet3D: {"base": {key: shape}, probe: {"error": ...} or
    {"added": {key: shape}, "removed": [key, ...]} relative to base}."""
    _patch_t5()
    from imagen_pytorch import Unet3D
    from omegaconf import OmegaConf

    def keys(u):
        return {k: list(v.shape) for k, v in u.state_dict().items()}
    base = keys(Unet3D(**OmegaConf.create(PROBE_BASE), lowres_cond=False))
    out = {"base_options": PROBE_BASE, "base": base}
    for name, (k, v) in LIST_PROBES.items():
        try:
            got = keys(Unet3D(**OmegaConf.create({**PROBE_BASE, k: v}), lowres_cond=False))
        except Exception as e:  # noqa: BLE001 (what the authors' code raises is the datum)
            out[name] = {"option": k, "value": v, "error": f"{type(e).__name__}: {e}"}
            continue
        out[name] = {"option": k, "value": v, "removed": sorted(set(base) - set(got)),
                     "added": {kk: s for kk, s in got.items() if base.get(kk) != s}}
    return out


def imagen_fixtures(tensors: dict, meta: dict) -> None:
    from omegaconf import OmegaConf
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cpath = Path(tmp) / "config.yaml"
        cpath.write_text(TINY_YAML)
        cfg, imagen, trainer = build_authors_way(cpath)
        for i, ema in enumerate(trainer.ema_unets):
            randomise(imagen.unets[i], 100 + i)            # the online weights ("model")
            randomise(ema.ema_model, 200 + i)               # the EMA weights the paper sampled with
        path = Path(tmp) / "merged.pt"
        trainer.save(str(path), time_elapsed=12.5)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta["checkpoint_layout"] = {
            "top_level": sorted(ckpt),
            "ema_non_parameter_keys": sorted(k for k in ckpt["ema"] if ".ema_model." not in k),
            "version": ckpt["version"], "steps": ckpt["steps"].tolist()}
        _check_echogen_converts(path, cpath)

    meta["config_yaml"] = TINY_YAML
    meta["unets"] = list(OmegaConf.to_container(cfg.unets).values())
    meta["cross_attn_levels_built"] = [[b[1].cross_attn is not None for b in u.downs] for u in imagen.unets]
    meta["video_frames"] = VIDEO_FRAMES
    sizes, tdf = list(cfg.imagen.image_sizes), list(cfg.imagen.temporal_downsample_factor)
    sd = float(cfg.imagen.sigma_data)
    g = torch.Generator().manual_seed(7)
    ef = torch.tensor([0.62, 0.0])                      # EF 62 %, and EF exactly 0 (masked as "no text")
    frame = torch.rand((2, 1, 16, 16), generator=g).expand(-1, 3, -1, -1).contiguous()   # grey frame as RGB
    tensors["ef"] = ef
    for i, (unet, ema) in enumerate(zip(imagen.unets, trainer.ema_unets)):
        net = ema.ema_model.eval()
        for k, v in net.state_dict().items():
            tensors[f"{i}.{k}"] = v.contiguous()
        size = sizes[i]
        frames = VIDEO_FRAMES // tdf[i]
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
                        net.forward_with_cond_scale, xs, float(sigma), sigma_data=sd, clamp=clamp,
                        dynamic_threshold=True, cond_scale=w, **cond)
                    tensors[f"case{i}.D{si}.w{int(w)}.{'thr' if clamp else 'raw'}"] = d.contiguous()
            d = imagen.preconditioned_network_forward(net.forward, xs, float(sigma), sigma_data=sd,
                                                      ignore_time=True, **cond)
            tensors[f"case{i}.D{si}.notime"] = d.contiguous()
        # per-sample noise levels in one batch (sample 0 at sigma 5, sample 1 at 0.3)
        sig = torch.tensor([5.0, 0.3])
        xs = x * sig.reshape(2, 1, 1, 1, 1)
        tensors[f"case{i}.xmix"] = xs
        for w, clamp in ((1.0, False), (5.0, False), (5.0, True)):
            d = imagen.preconditioned_network_forward(net.forward_with_cond_scale, xs, sig, sigma_data=sd,
                                                      clamp=clamp, dynamic_threshold=True, cond_scale=w, **cond)
            tensors[f"case{i}.Dmix.w{int(w)}.{'thr' if clamp else 'raw'}"] = d.contiguous()
    meta["sigmas"] = [0.3, 5.0]
    meta["sigmas_mix"] = [5.0, 0.3]

    # a 3-step deterministic (S_churn = 0) sample of the base unet with guidance 5, EMA weights
    imagen.unets[0].load_state_dict(trainer.ema_unets[0].ema_model.state_dict())
    torch.manual_seed(123)
    noise = torch.randn((2, 3, VIDEO_FRAMES // 2, 8, 8))
    torch.manual_seed(123)
    out = imagen.sample(text_embeds=ef.reshape(2, 1, 1), cond_images=tensors["case0.frame"].expand(-1, 3, -1, -1),
                        video_frames=VIDEO_FRAMES, cond_scale=5.0, stop_at_unet_number=1, use_tqdm=False)
    tensors["sample0.noise"] = noise
    tensors["sample0.out"] = out.contiguous()
    meta["list_probes"] = list_probes()


def _check_echogen_converts(path: Path, cpath: Path) -> None:
    """The real trainer-saved checkpoint and its config.yaml convert with EchoGen (printed; the tests
    rebuild the layout)."""
    try:
        from echogen.weights.convert import convert_imagen_checkpoint
    except Exception as e:  # noqa: BLE001 (EchoGen may need packages this env lacks)
        print(f"(skipped EchoGen conversion check: {e})")
        return
    with tempfile.TemporaryDirectory() as tmp:
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


def main() -> int:
    from safetensors.torch import save_file
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
