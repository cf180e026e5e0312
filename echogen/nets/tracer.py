"""LV tracer: a small 2-D UNet that segments the left-ventricular cavity in each frame, and the
interpretable EF it gives (LV area per frame -> ED / ES frames -> method-of-disks volumes -> EF).

Weights: a .safetensors file of kind "tracer" with its TracerConfig in the metadata (echogen.weights.bundle),
or a bundle whose manifest names it ("tracer": "tracer.safetensors"). Trained by train/train_tracer.py
on the traced ED / ES frames of any EchoNet-format dataset (VolumeTracings.csv).

    model, cfg = load_tracer("assets/weights/demo")
    res = trace_video(model, video_uint8_T_112_112, fps=50)      # res["ef"], res["area"], res["volume"], ...
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from echogen.config import copy_preset, dataclass_from_dict
from echogen.eval.lv_volume import N_DISKS, disks_from_mask, ef_from_volumes, fill_frames, implausible_frames
from echogen.weights.bundle import ModelFile, WeightsError

KIND = "tracer"
TRACE_FPS = 25.0          # clips faster than this are traced at this rate (ES is found to within 40 ms)
MIN_TRACE_S = 0.3         # shortest clip traced for an EF: end-systole comes ~0.3 s after end-diastole
BEAT_SPREAD = 10.0        # EF points between a clip's beats beyond which its confidence falls (to half at 30)


@dataclass
class TracerConfig:
    size: int = 112
    widths: tuple = (8, 16, 32, 64, 96)   # channels per level (each level below the first halves H, W)
    groups: int = 4                       # GroupNorm groups
    mean: float = 0.15                    # input normalisation, [0, 1] units (measured on the training data)
    std: float = 0.2
    threshold: float = 0.5                # probability above which a pixel is LV cavity
    n_disks: int = N_DISKS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TracerConfig":
        return dataclass_from_dict(TracerConfig, d, "tracer", WeightsError)


TRACER_PRESETS = {
    "small": TracerConfig(),                                          # ~0.4 M params, ~1.6 MB fp32
    "full": TracerConfig(widths=(32, 64, 128, 256, 384), groups=8),   # ~6 M params, for a GPU
    "tiny": TracerConfig(widths=(4, 8), groups=2),                    # tests only
}


def get_tracer_preset(name: str) -> TracerConfig:
    return copy_preset(TRACER_PRESETS, name, "tracer")


# ------------------------------------------------------------------------------------------ network
class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, groups: int):
        g = math.gcd(groups, c_out)
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(g, c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(g, c_out), nn.SiLU())


class LVTracer(nn.Module):
    """(B, 1, H, W) frames in [0, 1] -> (B, 1, H, W) LV-cavity logits. H, W divisible by 2^(levels-1)."""

    def __init__(self, cfg: TracerConfig):
        super().__init__()
        self.cfg = cfg
        w = list(cfg.widths)
        self.enc = nn.ModuleList()
        c = 1
        for wi in w:
            self.enc.append(ConvBlock(c, wi, cfg.groups))
            c = wi
        self.dec = nn.ModuleList(ConvBlock(w[i + 1] + w[i], w[i], cfg.groups) for i in reversed(range(len(w) - 1)))
        self.head = nn.Conv2d(w[0], 1, 1)
        nn.init.constant_(self.head.bias, -2.0)         # starts by calling most pixels "not LV"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"LVTracer expects (B, 1, H, W) frames, got {tuple(x.shape)}")
        h = (x - self.cfg.mean) / self.cfg.std
        skips = []
        for i, blk in enumerate(self.enc):
            if i:
                h = F.max_pool2d(h, 2)
            h = blk(h)
            skips.append(h)
        for blk, skip in zip(self.dec, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = blk(torch.cat([h, skip], 1))
        return self.head(h)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ weights
def _build(cfg_dict: dict) -> tuple[LVTracer, TracerConfig]:
    cfg = TracerConfig.from_dict(cfg_dict)
    return LVTracer(cfg), cfg


FILE = ModelFile(KIND, "LV tracer", "train/train_tracer.py", _build)


def save_tracer(path, model: LVTracer, cfg: TracerConfig, **extra) -> Path:
    """Write the state dict with its config in the metadata (kind "tracer"); extra strings (trained_on,
    steps, val_dice, ...) go into the metadata too."""
    return FILE.save(path, model, cfg, **extra)


def resolve_tracer_path(path_or_bundle) -> Path:
    """A .safetensors file, or a bundle folder whose manifest names the tracer."""
    return FILE.resolve(path_or_bundle)


def has_tracer(path_or_bundle) -> bool:
    return FILE.has(path_or_bundle)


def load_tracer(path_or_bundle, device=None) -> tuple[LVTracer, TracerConfig]:
    """Load a tracer (eval mode) from a .safetensors file or a weights bundle folder. The metadata is
    kept on model.meta (e.g. model.meta.get("trained_on"))."""
    return FILE.load(path_or_bundle, device)


# ------------------------------------------------------------------------------------------ inference
def _float_frames(frames) -> torch.Tensor:
    v = frames if isinstance(frames, torch.Tensor) else torch.as_tensor(np.asarray(frames))
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3:
        raise ValueError(f"expected frames (T, H, W) or one frame (H, W), got shape {tuple(v.shape)}")
    return v.float() / 255.0 if v.dtype == torch.uint8 else v.float().clamp(0, 1)


@torch.no_grad()
def predict_probs(model: LVTracer, frames, batch_size: int = 32) -> torch.Tensor:
    """LV-cavity probabilities (T, H, W) on the CPU for frames (T, H, W) (uint8, or float in [0, 1])."""
    v = _float_frames(frames)
    size = model.cfg.size
    if tuple(v.shape[1:]) != (size, size):
        raise ValueError(f"frames must be {size}x{size} (got {tuple(v.shape[1:])}); preprocess them first")
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = [torch.sigmoid(model(v[i:i + batch_size, None].to(dev))).float().cpu()[:, 0]
           for i in range(0, len(v), batch_size)]
    model.train(was)
    return torch.cat(out)


def mask_confidence(prob: np.ndarray, threshold: float = 0.5) -> float:
    """How decided the tracer is about one frame, in [0, 1]: mean |2p - 1| over the pixels near its LV
    (the predicted cavity grown by 3 px); 0 when it found no cavity."""
    import cv2

    m = (prob >= threshold).astype(np.uint8)
    if m.sum() == 0:
        return 0.0
    near = cv2.dilate(m, np.ones((7, 7), np.uint8)) > 0
    return float(np.abs(2 * prob[near] - 1).mean())


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    p, t = np.asarray(pred) > 0.5, np.asarray(target) > 0.5
    s = p.sum() + t.sum()
    return 1.0 if s == 0 else float(2.0 * (p & t).sum() / s)


def trace_frames(model: LVTracer, frames, cfg: TracerConfig | None = None) -> dict:
    """Trace every frame: {"probs" (T, H, W) float32, "area" (T,) px (soft), "volume" (T,) px^3 (method of
    disks; 0 where no cavity was found), "confidence" (T,), "found" (T,) bool}."""
    cfg = cfg or model.cfg
    probs = predict_probs(model, frames).numpy()
    area, vol, conf, found = [], [], [], []
    for p in probs:
        d = disks_from_mask(p, cfg.n_disks) if (p >= cfg.threshold).any() else None
        found.append(d is not None)
        area.append(0.0 if d is None else float((p >= cfg.threshold).sum()))
        vol.append(0.0 if d is None else d["volume"])
        conf.append(mask_confidence(p, cfg.threshold))
    return {"probs": probs, "area": np.array(area), "volume": np.array(vol), "confidence": np.array(conf),
            "found": np.array(found)}


def trace_video(model: LVTracer, video, fps: float, cfg: TracerConfig | None = None,
                max_fps: float = TRACE_FPS) -> dict:
    """Interpretable EF of a clip (T, H, W): the LV is traced in every frame (resampled to at most max_fps),
    ED / ES are the maxima / minima of the LV area, volumes come from the method of disks on the traced
    masks, EF = (EDV - ESV) / EDV (the median over the beats found). fps <= 0: unknown, frames used as they are.

    Returns trace_frames' arrays plus {"frames": source-frame index of each traced frame, "fps": rate traced
    at, "ef", "edv", "esv", "ed", "es" (indices into the traced frames), "beats", "confidence" (mean),
    "usable" (T,) bool, "failed": a reason string or ""}. Frames whose trace is implausible
    (echogen.eval.lv_volume.implausible_frames: no cavity, collapsed, leaking, a one-frame spike) get
    confidence 0 and their area / volume interpolated from the neighbouring frames; over 20 % of them fail the clip.
    "beat_spread": max - min of the beats' EFs; beyond BEAT_SPREAD points the confidence falls (x0.5 at 30)."""
    from echogen.nets.regressor import resample_indices

    cfg = cfg or model.cfg
    v = _float_frames(video)
    rate = fps if fps > 0 else max_fps
    idx = np.arange(len(v))
    if fps > max_fps:
        idx = resample_indices(len(v), fps, max_fps)
        rate = max_fps
    res = trace_frames(model, v[torch.as_tensor(idx)], cfg)
    res["frames"], res["fps"] = idx, rate
    found = res["found"]
    bad = implausible_frames(res["area"], found, rate, res["volume"])
    res["usable"] = ~bad
    res["confidence"] = np.where(bad, 0.0, res["confidence"])         # an implausible trace is not a confident one
    if bad.any() and not bad.all():                                    # never a 0 volume at a frame with no LV
        res["area"], res["volume"] = fill_frames(res["area"], bad), fill_frames(res["volume"], bad)
    failed = ""
    if len(idx) < 2:
        failed = "a single frame has no ED and ES"
    elif len(idx) / rate < MIN_TRACE_S:
        failed = (f"the clip lasts {len(idx) / rate:.2f} s: too short to hold end-diastole and end-systole "
                  f"(at least {MIN_TRACE_S:.2f} s)")
    elif found.mean() < 0.8:
        failed = f"no LV cavity found in {int((~found).sum())} of {len(found)} frames"
    elif bad.mean() > 0.2:
        failed = (f"no plausible LV trace in {int(bad.sum())} of {len(bad)} frames (collapsed, leaking or "
                  f"jumping from frame to frame)")
    if failed:
        res.update(ef=math.nan, edv=math.nan, esv=math.nan, ed=-1, es=-1, beats=[])
    else:
        res.update(ef_from_volumes(res["volume"], res["area"], rate))
        failed = res.pop("why")
    res["frame_confidence"] = res["confidence"]
    res["confidence"] = float(np.mean(res["frame_confidence"])) if len(idx) else 0.0
    efs = [b[2] for b in res.get("beats") or []]
    res["beat_spread"] = float(max(efs) - min(efs)) if len(efs) > 1 else 0.0
    if res["beat_spread"] > BEAT_SPREAD:          # beats of one clip that disagree: the tracing is not reliable
        res["confidence"] *= max(0.5, 1.0 - (res["beat_spread"] - BEAT_SPREAD) / 40.0)
    res["failed"] = failed
    return res


def provenance(model, full: bool = False) -> str:
    """"LV tracer 'small' (9000 steps) trained on <data>" from the weights' metadata, worded as
    echogen.eval.readout.model_provenance words a bundle's (the CLI and the app name a tracer alike); <data> in a
    few words (echogen.weights.bundle.data_summary), full=True: the whole recorded training history."""
    from echogen.weights.bundle import data_summary, steps_summary
    meta = getattr(model, "meta", {}) or {}
    label = "LV tracer" + (f" '{meta['preset']}'" if meta.get("preset") else "")
    if meta.get("steps"):
        label += f" ({meta['steps'] if full else steps_summary(meta['steps'])} steps)"
    if not meta.get("trained_on"):
        return f"{label} (training data not recorded in the weights)"
    return f"{label} trained on {meta['trained_on'] if full else data_summary(meta['trained_on'])}"
