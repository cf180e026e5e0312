"""The EF of a video: one function for the app's readout, teaching pools, evaluation and the CLI.

A video of any square size is resized to the regressor's input (echogen.data.resample.resize_frames:
area when shrinking, bicubic when enlarging) and read clip by clip (echogen.nets.regressor.predict_ef).
"""
from __future__ import annotations

import numpy as np
import torch

from echogen.data.resample import resize_frames


def video_ef(regressor, video, fps: float) -> tuple[float, list[float]] | None:
    """regressor: (model, cfg) from echogen.nets.regressor.load_regressor, or None (-> None).
    video: (T, H, W) or (1, T, H, W) or (1, 1, T, H, W), uint8 or float in [0, 1], numpy or torch.
    fps: its frame rate (<= 0: the regressor's own). Returns (EF %, per-clip EFs)."""
    if regressor is None:
        return None
    from echogen.nets.regressor import predict_ef

    model, cfg = regressor
    v = torch.as_tensor(np.asarray(video)) if not torch.is_tensor(video) else video.detach().cpu()
    v = v.float() / 255 if v.dtype == torch.uint8 else v.float()
    v = v.reshape(-1, *v.shape[-2:])                                   # (T, H, W)
    if v.shape[-2] != v.shape[-1]:
        raise ValueError(f"EF reading needs square frames, got {tuple(v.shape[-2:])}")
    if v.shape[-1] != cfg.size:
        v = resize_frames(v, cfg.size).clamp(0, 1)
    return predict_ef(model, cfg, v.numpy(), float(fps or 0.0))


def tracing_ef(tracer, video, fps: float) -> float:
    """EF (%) of a video by LV tracing (echogen.nets.tracer.trace_video: area curve -> ED / ES -> method of disks);
    NaN where tracing failed. tracer: an LVTracer; video: (T, H, W) torch or numpy, uint8 or float in [0, 1]."""
    from echogen.nets.tracer import trace_video
    v = torch.as_tensor(np.asarray(video)) if not torch.is_tensor(video) else video
    if v.shape[-1] != tracer.cfg.size:
        v = resize_frames(v.float() / 255.0 if v.dtype == torch.uint8 else v, tracer.cfg.size).clamp(0, 1)
    return float(trace_video(tracer, v, fps)["ef"])


def generated_ef(regressor, tracer, video, fps: float) -> dict:
    """A GENERATED clip's EF as the app's readout states it: each reader on the whole clip, rounded as shown
    (0.1), combined by echogen.eval.readout.loop_ef (the mean of both when both read it).
    regressor: (model, cfg) or None; tracer: an LVTracer or None; video: (T, H, W) in [0, 1].
    Returns {"ef", "read_by" (a LOOP_READER text), "regressor", "tracing"}, each None where not read."""
    from echogen.eval.readout import LOOP_READER, loop_ef

    reg = video_ef(regressor, video, fps)
    trc = tracing_ef(tracer, video, fps) if tracer is not None else float("nan")
    parts = {"regressor": None if reg is None else round(reg[0], 1),
             "tracing": round(trc, 1) if np.isfinite(trc) else None}
    both = loop_ef(parts["regressor"], parts["tracing"])
    return {"ef": None if both is None else round(both[0], 1), "read_by": None if both is None else LOOP_READER[both[1]],
            **parts}
