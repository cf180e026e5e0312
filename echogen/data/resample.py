"""Moving videos between cascade stages: resizing in space, resampling in time, and the
noise augmentation of the low-res input. The SAME functions make the low-res input in training
(from a real clip) and at sampling (from the previous stage's output), so the two always agree.

Time alignment: frame k of a clip at `fps` sits at time k / fps from the clip's start, so frame j
of a stage at fps_hi sits at position j * fps_lo / fps_hi in a stage at fps_lo.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from echogen.rng import randn


def source_frames(count: int, src_fps: float, dst_fps: float, start: int = 0) -> np.ndarray:
    """Indices of the frames of a src_fps video on screen at times k / dst_fps (k < count) after frame
    `start`: start + floor(k * src_fps / dst_fps). The one rule every clip in the project is cut by
    (50 -> 25 fps: 0, 2, 4, ...; 12.5 -> 25 fps: 0, 0, 1, 1, ...)."""
    return start + np.floor(np.arange(count) * (src_fps / dst_fps) + 1e-6).astype(np.int64)


def resize_frames(x: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    """(..., H, W) -> (..., size, size); mode "area": area when shrinking, bicubic (clamped) when
    enlarging; mode "nearest": nearest neighbour (what imagen-pytorch does to its conditioning image)."""
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    if (h, w) == (size, size):
        return x
    flat = x.reshape(-1, 1, h, w).float()
    if mode == "nearest":
        out = F.interpolate(flat, size=(size, size), mode="nearest")
    elif mode != "area":
        raise ValueError(f"unknown frame resize mode '{mode}'")
    elif size < h:
        out = F.interpolate(flat, size=(size, size), mode="area")
    else:
        lo, hi = flat.amin(), flat.amax()
        out = F.interpolate(flat, size=(size, size), mode="bicubic", align_corners=False).clamp(lo, hi)
    return out.reshape(*lead, size, size).to(x.dtype)


def resample_time(v: torch.Tensor, frames: int, ratio: float) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C, frames, H, W) by linear interpolation; output frame j reads
    input position j * ratio (ratio = fps_in / fps_out), clamped to the last frame."""
    t = v.shape[2]
    if frames == t and ratio == 1.0:
        return v
    pos = (torch.arange(frames, dtype=torch.float64) * ratio).clamp(max=t - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=t - 1)
    a = (pos - i0).to(v.dtype).to(v.device).reshape(1, 1, frames, 1, 1)
    return v[:, :, i0.to(v.device)] * (1 - a) + v[:, :, i1.to(v.device)] * a


def subsample_time(v: torch.Tensor, frames: int, ratio: float) -> torch.Tensor:
    """Pick frames of a faster clip: output frame k = input frame round(k * ratio), ratio = fps_in / fps_out."""
    idx = [min(v.shape[2] - 1, int(round(k * ratio))) for k in range(frames)]
    return v[:, :, idx]


def upsample_video(v: torch.Tensor, src_fps: float, frames: int, fps: float, size: int,
                   mode: str = "aligned") -> torch.Tensor:
    """Previous stage's output (B, C, t, h, w) at src_fps -> (B, C, frames, size, size) at fps.
    mode "aligned": frame-time-aligned linear interpolation, then bicubic; "trilinear" / "nearest": one
    F.interpolate over (T, H, W) (what imagen-pytorch does, needed by its checkpoints)."""
    if mode == "trilinear":
        return F.interpolate(v.float(), size=(frames, size, size), mode="trilinear", align_corners=False).to(v.dtype)
    if mode == "nearest":
        return F.interpolate(v.float(), size=(frames, size, size), mode="nearest").to(v.dtype)
    if mode != "aligned":
        raise ValueError(f"unknown low-res resize mode '{mode}'")
    v = resample_time(v, frames, src_fps / fps)
    return resize_frames(v, size)


def lowres_from_target(target: torch.Tensor, fps: float, prev_frames: int, prev_fps: float,
                       prev_size: int) -> torch.Tensor:
    """Training: what the previous stage would have produced for this clip (its frames, its size)."""
    v = subsample_time(target, prev_frames, fps / prev_fps)
    return resize_frames(v, prev_size)


def aug_alpha_sigma(t: torch.Tensor):
    """Imagen's 'linear' continuous-time schedule: log SNR(t) = -ln(expm1(1e-4 + 10 t^2));
    alpha = sqrt(sigmoid(logsnr)), sigma = sqrt(sigmoid(-logsnr)). t = 0 is (almost) clean."""
    logsnr = -torch.log(torch.expm1(1e-4 + 10 * t.double() ** 2))
    return torch.sigmoid(logsnr).sqrt().float(), torch.sigmoid(-logsnr).sqrt().float()


def augment_lowres(lowres: torch.Tensor, t: torch.Tensor, generator=None) -> torch.Tensor:
    """Noise the low-res input (in [-1, 1]) at level t (B,); the network is told t."""
    alpha, sigma = aug_alpha_sigma(t)
    shape = (-1,) + (1,) * (lowres.ndim - 1)
    noise = randn(lowres.shape, generator, lowres.device, lowres.dtype)   # generator: one, or one per sample
    return alpha.to(lowres.device).reshape(shape) * lowres + sigma.to(lowres.device).reshape(shape) * noise
