"""Full-size parity with the published EchoDiffusion networks, built exactly as the authors built them.

Runs in the reference environment (bench/setup_reference_env.sh), the authors' fork of imagen-pytorch
(branch `distillation`) first on the path, one published config.yaml (HReynaud/EchoDiffusion
diffusion/configs/1SCM.yaml, 2SCM.yaml or 4SCM_v2.yaml):

    PYTHONPATH=/path/to/imagen-pytorch-fork:. .ref-venv/bin/python bench/published_parity.py \
        --config EchoDiffusion/diffusion/configs/1SCM.yaml --out /tmp/1scm [--frames F] [--stages base,...]

1. builds the cascade as diffusion/train.py does (OmegaConf.load, `Unet3D(**v, lowres_cond=(i > 0))`,
   ElucidatedImagen without `elucidated`, ImagenTrainer(**trainer); bench/make_parity_fixtures.py's
   build_authors_way), randomises the EMA weights (seeded; so no layer is a no-op) and saves
   OUT/merged.pt with ImagenTrainer.save, the published layout (hundreds of MB: keep OUT outside the repo);
   OUT/config.yaml is the config, copied;
2. converts it with echogen.weights.convert (`python -m echogen convert` does the same) into OUT/bundle;
3. per stage, feeds the fork's preconditioned denoiser and EchoGen's the same inputs: sigma 5.0 and 0.3 in
   one batch (per-sample), EF 62 % and 35 %, a grey frame (given to the fork as 3 equal RGB channels), for
   SR stages a low-res video at noise level 0.2; guidance 1 and 5 (5 also with dynamic thresholding at
   the 95th percentile); compares to float32 tolerance (rtol 1e-4, atol 1e-4) and writes OUT/parity.json.
   The networks are full size; the input may be shortened with --frames (the stage's frame count
   otherwise) to keep CPU time in minutes: the network is the same at any length.
Then sample through the CLI with the converted bundle, e.g.
    python -m echogen generate --weights /tmp/1scm/bundle --image assets/examples/phantom_test_ef50.png \
        --ef 50 --steps 2 --out /tmp/1scm.mp4
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TOL = dict(rtol=1e-4, atol=1e-4)


def _fixtures_module():
    spec = importlib.util.spec_from_file_location("make_parity_fixtures", ROOT / "bench" / "make_parity_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="a published EchoDiffusion config.yaml")
    ap.add_argument("--out", required=True, help="folder for merged.pt, config.yaml, bundle/, parity.json")
    ap.add_argument("--frames", type=int, default=0, help="input frames per stage (0 = the stage's own)")
    ap.add_argument("--stages", default="", help="comma-separated stage names to compare (default all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="reuse OUT/merged.pt and OUT/bundle if present")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fx = _fixtures_module()
    report = {"config": Path(a.config).name, "torch": torch.__version__, "threads": torch.get_num_threads()}

    t0 = time.time()
    torch.manual_seed(a.seed)
    cfg, imagen, trainer = fx.build_authors_way(a.config)
    for i, ema in enumerate(trainer.ema_unets):
        fx.randomise(ema.ema_model, 300 + a.seed + i)
    report["fork_params"] = [sum(p.numel() for p in e.ema_model.parameters()) for e in trainer.ema_unets]
    report["fork_cross_attn_levels"] = [[blk[1].cross_attn is not None for blk in e.ema_model.downs]
                                        for e in trainer.ema_unets]
    ck, cpath = out / "merged.pt", out / "config.yaml"
    if not (a.reuse and ck.is_file()):
        trainer.save(str(ck), time_elapsed=1.0)
    shutil.copyfile(a.config, cpath)
    report["merged_pt_MB"] = round(ck.stat().st_size / 1e6, 1)
    report["build_save_s"] = round(time.time() - t0, 1)
    print(json.dumps({k: report[k] for k in ("fork_params", "fork_cross_attn_levels", "merged_pt_MB")}))

    from echogen.diffusion.cascade import Cascade
    from echogen.weights.convert import convert_imagen_checkpoint
    from echogen.diffusion.guidance import GuidedDenoiser
    t0 = time.time()
    if not (a.reuse and (out / "bundle" / "manifest.json").is_file()):
        man = convert_imagen_checkpoint(ck, cpath, out / "bundle")
    else:
        man = json.loads((out / "bundle" / "manifest.json").read_text())
    report["convert_s"] = round(time.time() - t0, 1)
    report["notes"] = man["provenance"]["notes"]
    casc = Cascade.load(out / "bundle")
    report["echogen_params"] = [sum(p.numel() for p in casc.denoisers[s].parameters()) for s in casc.config.stage_names]
    print("converted:", json.dumps({"stages": man["stages"], "echogen_params": report["echogen_params"]}))

    want = [s for s in a.stages.split(",") if s] or casc.config.stage_names
    sd = float(cfg.imagen.sigma_data)
    g = torch.Generator().manual_seed(1000 + a.seed)
    ef = torch.tensor([0.62, 0.35])
    sig = torch.tensor([5.0, 0.3])
    report["stages"] = {}
    ok = True
    for i, st in enumerate(casc.config.stages):
        if st.name not in want:
            continue
        net = trainer.ema_unets[i].ema_model.eval()
        T = a.frames or st.frames
        S = st.size
        x = torch.randn((2, 3, T, S, S), generator=g) * sig.reshape(2, 1, 1, 1, 1)
        grey = torch.rand((2, 1, S, S), generator=g)
        fork_cond = dict(text_embeds=ef.reshape(2, 1, 1), text_mask=torch.ones(2, 1, dtype=torch.bool),
                         cond_images=grey.expand(-1, 3, -1, -1))
        ours_cond = {"frame": grey, "ef": ef}
        if i > 0:
            low = torch.rand((2, 3, T, S, S), generator=g) * 2 - 1
            fork_cond.update(lowres_cond_img=low, lowres_noise_times=torch.full((2,), 0.2))
            ours_cond.update(lowres=low, aug=torch.full((2,), 0.2))
        res = {"input": [2, 3, T, S, S]}
        with torch.no_grad():
            t0 = time.time()
            fork = {}
            for w in (1.0, 5.0):
                d = imagen.preconditioned_network_forward(net.forward_with_cond_scale, x, sig, sigma_data=sd,
                                                          clamp=False, cond_scale=w, **fork_cond)
                fork[f"w{int(w)}.raw"] = d
            fork["w5.thr"] = imagen.threshold_x_start(fork["w5.raw"], dynamic_threshold=True)
            res["fork_s"] = round(time.time() - t0, 1)
            t0 = time.time()
            memo = {}
            den = casc.denoisers[st.name]

            def once(xx, ss, _den=den, _memo=memo, **c):     # thresholded and raw w=5 share one call
                key = xx.shape[0]
                if key not in _memo:
                    _memo[key] = _den(xx, ss, **c)
                return _memo[key]
            ours = {}
            for w, thr in ((1, "raw"), (5, "raw"), (5, "thr")):
                ours[f"w{w}.{thr}"] = GuidedDenoiser(once, ours_cond, float(w), 0.95 if thr == "thr" else 0.0)(x, sig)
            res["echogen_s"] = round(time.time() - t0, 1)
        for k in fork:
            diff = (ours[k] - fork[k]).abs()
            res[k] = {"max_abs_diff": float(diff.max()), "max_abs_ref": float(fork[k].abs().max()),
                      "max_rel_diff": float((diff / fork[k].abs().clamp(min=1e-3)).max())}
            try:
                torch.testing.assert_close(ours[k], fork[k], **TOL)
                res[k]["ok"] = True
            except AssertionError as e:
                res[k]["ok"], ok = False, False
                res[k]["error"] = str(e).splitlines()[0]
        report["stages"][st.name] = res
        print(st.name, json.dumps(res))
        (out / "parity.json").write_text(json.dumps(report, indent=1))
    report["all_ok"] = ok
    (out / "parity.json").write_text(json.dumps(report, indent=1))
    print("PARITY", "OK" if ok else "FAILED", f"(tolerance {TOL}); {out / 'parity.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
