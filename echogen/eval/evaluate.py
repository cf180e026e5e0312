"""The paper's evaluation: counterfactual and factual generation scored with an EF regressor.

Counterfactual: for each video, generate from its conditioning frame at a target EF drawn uniformly
in [15, 85]; score target vs regressed EF (R^2, MAE, RMSE).
Factual: generate at the video's own EF; compare with the real clip (SSIM, regressed-EF error,
Frechet distance between regressor-backbone features of real and generated clips).
Single-sample scores come first; best-of-K (the paper's best-of-3: the sample whose regressed EF is
nearest the target; SSIM max over K) beside them, always labelled.
With user-supplied networks (echogen.eval.perceptual, docs/METRICS.md) the factual task also reports
LPIPS (mean over frames, generated vs real; best-of-K = min over K), FID over all frames and FVD over
clips (sample 0 of each video against the real clips); without them nothing changes.
With an LV tracer (echogen.nets.tracer) every EF is also read by LV tracing (area curve -> ED / ES -> method of
disks): the real clips, and sample 0 of each task (rows "..., LV tracing"; NaN readings, where tracing
failed, are left out and counted), and by the mean of both readers (rows "..., mean of both readers":
echogen.eval.readout.loop_ef, the number the app states and the EF calibration targets).
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from echogen.data.echonet import cut_clip, load_video, read_filelist
from echogen.eval.metrics import best_of_k, frechet_distance, regression_metrics, ssim_videos
from echogen.data.resample import resize_frames
from echogen.eval.reading import tracing_ef, video_ef
from echogen.eval.readout import loop_ef
from echogen.nets.regressor import at_regressor_rate, extract_features


@dataclass
class EvalSettings:
    split: str = "TEST"
    n: int = 100                # videos (the first n of the split, in FileList order)
    samples: int = 3            # K generations per video and task
    seed: int = 0
    tasks: tuple = ("counterfactual", "factual")
    ef_low: float = 15.0
    ef_high: float = 85.0
    cond_frame: str = "random"  # the paper: a random frame of the video


def regressor_clip(video: torch.Tensor, fps: float, cfg) -> torch.Tensor:
    """(T, H, W) in [0,1] at fps -> (1, cfg.frames, H, W) at cfg.fps (first clip, zero-padded)."""
    return at_regressor_rate(video, fps, cfg)[: cfg.frames][None]


def _real_clip(video_u8: np.ndarray, native_fps: float, frames: int, fps: float) -> torch.Tensor:
    return torch.from_numpy(cut_clip(video_u8, 0, frames, native_fps, fps).astype(np.float32) / 255.0)


def _perceptual_scores(nets: dict, vids: torch.Tensor, real: torch.Tensor, rec: dict, feats: dict) -> None:
    """LPIPS of every sample against the real clip (into rec); FID frame features and FVD clip features
    of the real clip and of sample 0 (into feats[name] = (real list, generated list))."""
    if "lpips" in nets:
        for k, v in enumerate(vids):
            rec[f"factual_lpips_{k}"] = nets["lpips"].video_distance(v, real)
    if "fid" in nets:
        feats["fid"][0].append(nets["fid"].features(real))                    # (T, 2048)
        feats["fid"][1].append(nets["fid"].features(vids[0]))
    if "fvd" in nets:
        feats["fvd"][0].append(nets["fvd"].features(real[None]))              # (1, 400)
        feats["fvd"][1].append(nets["fvd"].features(vids[0][None]))


def evaluate(cascade, regressor, data_root, settings: EvalSettings, out_dir=None, sample_kwargs=None,
             progress=None, perceptual: dict | None = None, tracer=None) -> dict:
    """Run the evaluation; returns the summary dict and writes summary.md/json + per_video.csv to out_dir.

    perceptual: optional {"lpips" | "fid" | "fvd": network} from echogen.eval.perceptual.load_perceptual.
    tracer: optional LVTracer (echogen.nets.tracer.load_tracer): EF by LV tracing beside the regressor's."""
    model, rcfg = regressor
    sample_kwargs = sample_kwargs or {}
    perceptual = perceptual or {}
    rows = [r for r in read_filelist(data_root) if r["Split"] == settings.split.upper()][: settings.n]
    if not rows:
        raise ValueError(f"{data_root}: no videos in split {settings.split}")
    if perceptual and "factual" not in settings.tasks:
        raise ValueError("LPIPS / FID / FVD score the factual task: add factual to --tasks")
    if "fvd" in perceptual and len(rows) < 2:
        raise ValueError(f"FVD compares sets of clips and needs at least 2 videos; split {settings.split} "
                         f"gives {len(rows)} (raise --n)")
    pfeats = {name: ([], []) for name in ("fid", "fvd") if name in perceptual}
    final = cascade.config.stages[-1]
    rng = np.random.default_rng(settings.seed)
    K = settings.samples
    per_video, gen_seconds, feats_real, feats_gen = [], [], [], []
    for i, row in enumerate(rows):
        video, avi_fps = load_video(data_root, row["FileName"])
        native = row.get("FPS") or avi_fps or 50.0
        c = int(rng.integers(len(video))) if settings.cond_frame == "random" else 0
        frame = torch.from_numpy(video[c].astype(np.float32) / 255.0)
        target = float(rng.uniform(settings.ef_low, settings.ef_high))
        rec = {"file": row["FileName"], "ef_true": float(row["EF"]), "cond_frame": c,
               "ef_real_regressed": video_ef(regressor, video, native)[0]}
        if tracer is not None:
            rec["ef_real_tracing"] = tracing_ef(tracer, video, native)
        for task in settings.tasks:
            ef = target if task == "counterfactual" else float(row["EF"])
            t0 = time.perf_counter()
            out = cascade.sample(frame, [ef] * K, seed=settings.seed * 100003 + i * 2 + (task == "factual"),
                                 **sample_kwargs)[-1]
            gen_seconds.append((time.perf_counter() - t0) / K)
            vids = out.video[:, 0]                                            # (K, T, h, w)
            if vids.shape[-1] != rcfg.size:  # e.g. a test-sized cascade: score at the regressor's size
                vids = resize_frames(vids, rcfg.size).clamp(0, 1)
            regressed = [video_ef(regressor, v, out.fps)[0] for v in vids]
            rec[f"{task}_target"] = ef
            for k, e in enumerate(regressed):
                rec[f"{task}_ef_{k}"] = e
            if tracer is not None:
                rec[f"{task}_ef_tracing_0"] = tracing_ef(tracer, vids[0], out.fps)
            if task == "factual":
                real = _real_clip(video, native, final.frames, final.fps)      # (T, H, W)
                s = ssim_videos(vids, real[None].expand_as(vids))
                for k, v in enumerate(s):
                    rec[f"factual_ssim_{k}"] = float(v)
                feats_real.append(extract_features(model, regressor_clip(real, final.fps, rcfg)[None]))
                feats_gen.append(extract_features(model, regressor_clip(vids[0], out.fps, rcfg)[None]))
                _perceptual_scores(perceptual, vids, real, rec, pfeats)
        per_video.append(rec)
        if progress:
            progress(i + 1, len(rows), rec)
    summary = summarise(per_video, settings, feats_real, feats_gen, pfeats)
    summary["seconds_per_video"] = float(np.mean(gen_seconds))
    summary["settings"] = asdict(settings)
    if tracer is not None:
        from echogen.nets.tracer import provenance
        summary["tracer"] = provenance(tracer)
    summary["cascade"] = cascade.config.name
    summary["weights"] = cascade.source
    summary["sampling"] = {k: v for k, v in sample_kwargs.items() if v}   # per-stage overrides of the presets
    calibrate = sample_kwargs.get("calibrate", True)
    cal = getattr(cascade, "ef_calibration", None)
    summary["ef_calibration"] = (cal.to_dict() if calibrate and cal is not None else
                                 "off" if not calibrate else getattr(cascade, "calibration_note", "") or "none")
    if perceptual:
        summary["perceptual"] = {name: {"weights": getattr(net, "source", None), "config": net.cfg.to_dict()}
                                 for name, net in perceptual.items()}
    if out_dir is not None:
        write_outputs(Path(out_dir), summary, per_video)
    return summary


def _finite_metrics(y_true, y_pred) -> dict:
    """regression_metrics over the pairs whose reading is finite, with n (used) and failed (NaN readings)."""
    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    ok = np.isfinite(p)
    m = regression_metrics(t[ok], p[ok]) if ok.sum() >= 2 else {"r2": float("nan"), "mae": float("nan"),
                                                                 "rmse": float("nan")}
    return {**m, "n": int(ok.sum()), "failed": int((~ok).sum())}


def summarise(per_video: list, settings: EvalSettings, feats_real=(), feats_gen=(), perceptual_feats=None) -> dict:
    K, res = settings.samples, {}
    real_true = [r["ef_true"] for r in per_video]
    res["regressor_on_real"] = regression_metrics(real_true, [r["ef_real_regressed"] for r in per_video])
    if all("ef_real_tracing" in r for r in per_video):
        res["tracing_on_real"] = _finite_metrics(real_true, [r["ef_real_tracing"] for r in per_video])
        for task in settings.tasks:
            res[f"{task}_single_tracing"] = _finite_metrics([r[f"{task}_target"] for r in per_video],
                                                            [r[f"{task}_ef_tracing_0"] for r in per_video])
            both = [loop_ef(r[f"{task}_ef_0"], r[f"{task}_ef_tracing_0"]) for r in per_video]   # what the app states
            res[f"{task}_single_mean"] = _finite_metrics([r[f"{task}_target"] for r in per_video],
                                                         [float("nan") if b is None else b[0] for b in both])
    for task in settings.tasks:
        tgt = np.array([r[f"{task}_target"] for r in per_video])
        preds = np.array([[r[f"{task}_ef_{k}"] for k in range(K)] for r in per_video])
        res[f"{task}_single"] = regression_metrics(tgt, preds[:, 0])
        res[f"{task}_best_of_{K}"] = regression_metrics(tgt, best_of_k(tgt, preds))
        if task == "factual":
            ss = np.array([[r[f"factual_ssim_{k}"] for k in range(K)] for r in per_video])
            res["factual_single"]["ssim"] = float(ss[:, 0].mean())
            res[f"factual_best_of_{K}"]["ssim"] = float(ss.max(1).mean())
            if len(feats_real) >= 2:
                res["factual_single"]["fd_regressor"] = frechet_distance(torch.cat(list(feats_real)),
                                                                         torch.cat(list(feats_gen)))
            if all("factual_lpips_0" in r for r in per_video):
                lp = np.array([[r[f"factual_lpips_{k}"] for k in range(K)] for r in per_video])
                res["factual_single"]["lpips"] = float(lp[:, 0].mean())
                res[f"factual_best_of_{K}"]["lpips"] = float(lp.min(1).mean())          # lower is better
            for name, (real, gen) in (perceptual_feats or {}).items():                  # FID (frames), FVD (clips)
                res["factual_single"][name] = frechet_distance(torch.cat(real), torch.cat(gen))
    return res


PERCEPTUAL_COLUMNS = (("lpips", "LPIPS", "{:.4f}"), ("fid", "FID", "{:.2f}"), ("fvd", "FVD", "{:.2f}"))


def markdown_table(summary: dict) -> str:
    K = summary["settings"]["samples"]
    rows = [summary[k] for k in ("factual_single", f"factual_best_of_{K}") if k in summary]
    extra = [c for c in PERCEPTUAL_COLUMNS if any(c[0] in m for m in rows)]   # only the metrics computed
    head = "".join(f" {label} |" for _, label, _ in extra)
    lines = [f"| task | scoring | R^2 | MAE | RMSE | SSIM | FD (regressor feats) |{head} s/video |",
             "|---|---|---|---|---|---|---|" + "---|" * len(extra) + "---|"]
    reg = summary["regressor_on_real"]
    lines.append(f"| regressor on real clips | - | {reg['r2']:.3f} | {reg['mae']:.2f} | {reg['rmse']:.2f} | - | - |"
                 + " - |" * len(extra) + " - |")
    if "tracing_on_real" in summary:
        t = summary["tracing_on_real"]
        lines.append(f"| LV tracing on real clips ({t['n']} read, {t['failed']} failed) | - | {t['r2']:.3f} | "
                     f"{t['mae']:.2f} | {t['rmse']:.2f} | - | - |" + " - |" * len(extra) + " - |")
    for task in summary["settings"]["tasks"]:
        if f"{task}_single_tracing" in summary:
            t = summary[f"{task}_single_tracing"]
            lines.append(f"| {task} | single sample, LV tracing ({t['failed']} failed) | {t['r2']:.3f} | "
                         f"{t['mae']:.2f} | {t['rmse']:.2f} | - | - |" + " - |" * len(extra) + " - |")
        if f"{task}_single_mean" in summary:
            t = summary[f"{task}_single_mean"]
            lines.append(f"| {task} | single sample, mean of both readers | {t['r2']:.3f} | "
                         f"{t['mae']:.2f} | {t['rmse']:.2f} | - | - |" + " - |" * len(extra) + " - |")
        for label, key in (("single sample", f"{task}_single"), (f"best of {K}", f"{task}_best_of_{K}")):
            m = summary[key]
            ssim = f"{m['ssim']:.3f}" if "ssim" in m else "-"
            fd = f"{m['fd_regressor']:.2f}" if "fd_regressor" in m else "-"
            cells = "".join(f" {fmt.format(m[k]) if k in m else '-'} |" for k, _, fmt in extra)
            lines.append(f"| {task} | {label} | {m['r2']:.3f} | {m['mae']:.2f} | {m['rmse']:.2f} | {ssim} | {fd} |"
                         f"{cells} {summary['seconds_per_video']:.1f} |")
    cal = summary.get("ef_calibration")
    if cal is not None:
        lines.append("\nEF conditioning: " + (f"calibrated ({cal['reader']}, over {cal['fit_on']})"
                                              if isinstance(cal, dict) else f"as asked ({cal})"))
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict, per_video: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown_table(summary) + "\n")
    keys = list(dict.fromkeys(k for r in per_video for k in r))
    with open(out / "per_video.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(per_video)
