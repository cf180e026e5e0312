"""Score an LV tracer on an EchoNet-format split: Dice on the traced frames, and the EF that LV tracing reads
from each whole video against FileList's EF, optionally on clips degraded as real exports are (a lower frame
rate, a short clip, fewer grey levels, JPEG). Used by train/train_tracer.py (TEST at the end of training) and
train/eval_tracer.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from echogen.data.echonet import load_video, read_filelist, read_tracings
from echogen.eval.lv_volume import disks_from_mask, tracing_mask
from echogen.eval.metrics import regression_metrics
from echogen.data.resample import source_frames
from echogen.nets.tracer import dice, predict_probs, trace_video


@dataclass
class Degrade:
    """An export degradation applied to every evaluated video (0 = keep)."""
    fps: float = 0.0         # resample to this frame rate (sample and hold, as an exported clip)
    frames: int = 0          # keep only the first N frames (after resampling)
    levels: int = 0          # quantise to this many grey levels
    jpeg: int = 0            # JPEG quality of every frame
    mirror: bool = False     # left-right mirror (a site that shows the LV on the other side of the screen)
    upside_down: bool = False  # rows reversed (a site that shows apical views apex-down)

    def label(self) -> str:
        parts = [f"{self.fps:g} fps" if self.fps else "", f"{self.frames} frames" if self.frames else "",
                 f"{self.levels} grey levels" if self.levels else "", f"JPEG q{self.jpeg}" if self.jpeg else "",
                 "mirrored" if self.mirror else "", "upside down" if self.upside_down else ""]
        return ", ".join(p for p in parts if p) or "as written"

    def apply(self, video: np.ndarray, fps: float) -> tuple[np.ndarray, float]:
        v = video
        if self.fps and self.fps < fps:
            n = int(np.floor((len(v) - 1) * self.fps / fps + 1e-6)) + 1
            v = v[np.minimum(source_frames(n, fps, self.fps), len(v) - 1)]
            fps = self.fps
        if self.frames:
            v = v[: self.frames]
        if self.levels:
            q = np.round(v.astype(np.float32) / 255 * (self.levels - 1)) / (self.levels - 1)
            v = (q * 255 + 0.5).astype(np.uint8)
        if self.jpeg:
            v = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg])[1],
                                       cv2.IMREAD_GRAYSCALE) for f in v])
        if self.mirror:
            v = np.ascontiguousarray(v[:, :, ::-1])
        if self.upside_down:
            v = np.ascontiguousarray(v[:, ::-1])
        return v, fps


def _resized(v: np.ndarray, size: int) -> np.ndarray:
    if v.shape[1:] == (size, size):
        return v
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in v])


def traced_frames(root, split: str, size: int, limit=None, mask_frames: int = 0):
    """uint8 frames (N, S, S), soft reference masks (N, S, S) and (filename, frame) of every traced frame of
    a split (masks rasterised from VolumeTracings.csv, coordinates scaled to S), or None if there are none.
    mask_frames=K > 0: also K frames spread evenly over each video that has a per-frame mask file
    (ROOT/Masks/NAME.npz, `python -m echogen phantom --masks`), with their masks: frames between ED and ES and
    in diastole (mitral leaflets open), which no EchoNet tracing labels."""
    from pathlib import Path

    from echogen.data.phantom import load_masks

    rows = [r for r in read_filelist(root) if r["Split"] == split]
    if limit is not None:
        rows = rows[:limit]
    tracings = read_tracings(root)
    frames, masks, keys = [], [], []
    for r in rows:
        tr = tracings.get(r["FileName"])
        if not tr or not (Path(root) / "Videos" / (r["FileName"] + ".avi")).is_file():
            continue
        v, _ = load_video(root, r["FileName"])
        h, w = v.shape[1:]
        for fr, coords in sorted(tr.items()):
            if not 0 <= fr < len(v) or len(coords) < 3:
                continue
            frames.append(_resized(v[fr:fr + 1], size)[0])
            masks.append(tracing_mask(coords * np.array([size / w, size / h, size / w, size / h]), (size, size),
                                      soft=True))
            keys.append((r["FileName"], int(fr)))
        if mask_frames and (Path(root) / "Masks" / (r["FileName"] + ".npz")).is_file():
            m, _ = load_masks(root, r["FileName"])
            if m.shape != v.shape:
                raise ValueError(f"{root}: Masks/{r['FileName']}.npz has shape {m.shape}, the video {v.shape}")
            picks = np.linspace(0, len(v) - 1, mask_frames + 2)[1:-1].round().astype(int)
            for fr in sorted(set(picks.tolist()) - set(tr)):
                frames.append(_resized(v[fr:fr + 1], size)[0])
                masks.append(_resized(m[fr:fr + 1].astype(np.float32), size)[0])
                keys.append((r["FileName"], int(fr)))
    if not frames:
        return None
    return np.stack(frames), np.stack(masks).astype(np.float32), keys


def _finite(t, p):
    t, p = np.asarray(t, float), np.asarray(p, float)
    ok = np.isfinite(p)
    if ok.sum() < 2:
        return None
    r = regression_metrics(t[ok], p[ok])
    r["pearson_r"] = float(np.corrcoef(t[ok], p[ok])[0, 1])
    return r


def evaluate_tracer(model, root, split: str = "TEST", n=None, degrade: Degrade | None = None,
                    frames_data=None, regressor=None, orient=None) -> tuple[dict, list[dict]]:
    """(summary, per-video rows). Dice on the traced frames (never degraded: a JPEG'd reference is still the
    same tracing), tracing EF of each whole video (degraded if asked), and two controls on the traced frames:
    EF from the predicted masks at the labelled ED / ES frames, and EF from the reference masks themselves
    (what the method of disks on a perfect mask gives against FileList's EF). regressor: (model, cfg) from
    echogen.nets.regressor.load_regressor, to score it on the same (degraded) clips. orient: an orientation
    network (echogen.nets.orient): each degraded clip is put in the standard view first, as `echogen ef` does."""
    t0 = time.time()
    cfg = model.cfg
    degrade = degrade or Degrade()
    data = frames_data if frames_data is not None else traced_frames(root, split, cfg.size, n)
    if data is None:
        raise ValueError(f"{root}: no traced {split} frames")
    probs = predict_probs(model, torch.from_numpy(data[0])).numpy()
    dices = [dice(pr >= cfg.threshold, mk >= 0.5) for pr, mk in zip(probs, data[1])]
    rows = {r["FileName"]: r for r in read_filelist(root)}
    by_name: dict = {}
    for (name, fr), pr, mk in zip(data[2], probs, data[1]):
        by_name.setdefault(name, []).append((fr, pr, mk))
    per_video = []
    for name, items in by_name.items():
        v, avi_fps = load_video(root, name)
        fps = rows[name].get("FPS") or avi_fps or 50.0
        v, fps = degrade.apply(_resized(v, cfg.size), fps)
        view = None
        if orient is not None:
            from echogen.nets.orient import standard_view
            v, view = standard_view(v, orient)
        res = trace_video(model, v, fps)
        rec = {"file": name, "ef_true": float(rows[name]["EF"]), "ef_tracing": res["ef"],
               "confidence": res["confidence"], "failed": res["failed"], "frames": len(v), "fps": fps,
               "beats": len(res["beats"])}
        if view is not None:
            rec["read_mirrored_back"] = view["mirrored"]
            rec["read_turned"] = view["turned"]
        if len(items) == 2:
            vp = {fr: (disks_from_mask(pr >= cfg.threshold) or {"volume": 0.0})["volume"] for fr, pr, _ in items}
            vr = {fr: (disks_from_mask(mk) or {"volume": 0.0})["volume"] for fr, _, mk in items}
            (fa, _, _), (fb, _, _) = items
            ed, es = (fa, fb) if vr[fa] >= vr[fb] else (fb, fa)
            ef_p = 100 * (vp[ed] - vp[es]) / max(vp[ed], 1e-9)
            rec["ef_pred_masks_labelled_frames"] = ef_p if -100 <= ef_p <= 100 else float("nan")  # NaN: broken masks
            rec["ef_reference_masks"] = 100 * (vr[ed] - vr[es]) / max(vr[ed], 1e-9)
        if regressor is not None:
            from echogen.nets.regressor import predict_ef
            rec["ef_regressor"] = predict_ef(regressor[0], regressor[1], v, fps)[0]
        per_video.append(rec)
    ok = [r for r in per_video if np.isfinite(r["ef_tracing"])]
    summary = {"split": split, "degrade": degrade.label(), "dice_mean": float(np.mean(dices)),
               "dice_median": float(np.median(dices)), "dice_p10": float(np.percentile(dices, 10)),
               "traced_frames": len(dices), "videos": len(per_video), "tracing_failed": len(per_video) - len(ok),
               "tracing_ef": _finite([r["ef_true"] for r in per_video], [r["ef_tracing"] for r in per_video])}
    if orient is not None:
        summary["read_mirrored_back"] = int(sum(r["read_mirrored_back"] for r in per_video))
        summary["read_turned"] = int(sum(r["read_turned"] for r in per_video))
    if regressor is not None:
        summary["regressor_ef"] = _finite([r["ef_true"] for r in per_video], [r["ef_regressor"] for r in per_video])
    two = [r for r in per_video if "ef_reference_masks" in r]
    if len(two) > 1:
        summary["ef_pred_masks_labelled_frames"] = _finite([r["ef_true"] for r in two],
                                                           [r["ef_pred_masks_labelled_frames"] for r in two])
        summary["ef_reference_masks"] = _finite([r["ef_true"] for r in two], [r["ef_reference_masks"] for r in two])
    summary["seconds"] = time.time() - t0
    return summary, per_video
