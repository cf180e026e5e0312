"""Domain randomisation for echo clips: appearance, geometry, time and export degradations.

Models trained on a simulator learn its look (one sector style, one grey-level curve, clean speckle,
50 fps, long clips) unless that look is randomised away. `augment_clips` draws, per clip, a random
acquisition and export: gamma / gain / contrast / depth gain (TGC), blur, speckle grain, noise, apical
haze, lateral-wall dropout, a narrower or shifted sector and edge crops, small rotations / zooms /
shifts, a lower resolution, sample-and-hold to a low frame rate (exported clips at ~8 fps), playback
speed, a short clip (the rest zero, as predict_ef pads it), palette quantisation and JPEG. Label masks
(LV tracings) follow the geometry and time changes exactly; conditioning frames get the same spatial and
appearance changes as their clip.

Deterministic: every random number comes from the torch.Generator passed in, drawn in a fixed order
whatever is switched on, so the same generator state gives the same output.

One call for every training script:
    x = augment_clips(x, gen)                                # (B, C, T, H, W) or (B, T, H, W) in [0, 1]
    x, masks = augment_clips(x, gen, masks=masks)           # + label masks of the same shape
    x, frames = augment_clips(x, gen, frames=frames)        # + conditioning frames (B, C, H, W)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from echogen.config import dataclass_from_dict
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Per-clip probabilities (p_*) and ranges (uniform between the two values)."""
    # appearance
    p_gamma: float = 0.8
    gamma: tuple = (0.55, 1.8)          # x ** gamma (log-compression / dynamic-range look)
    p_gain: float = 0.9
    gain: tuple = (0.6, 1.5)
    bias: tuple = (-0.06, 0.06)
    p_contrast: float = 0.5
    contrast: tuple = (0.7, 1.4)        # about the clip's mean
    p_tgc: float = 0.5
    tgc: tuple = (-0.5, 0.5)            # gain ramp with depth: x * (1 + k * (y / H - 0.5))
    p_blur: float = 0.5
    blur: tuple = (0.3, 1.6)            # Gaussian sigma (px), drawn separately along x and y
    p_speckle: float = 0.6
    speckle: tuple = (0.1, 0.5)         # multiplicative grain amplitude (log units)
    speckle_size: tuple = (0.5, 2.5)    # grain correlation length (px)
    p_noise: float = 0.6
    noise: tuple = (0.0, 0.06)          # additive Gaussian std
    p_haze: float = 0.3
    haze: tuple = (0.05, 0.3)           # near-field clutter brightness at the top (apex) of the image
    p_dropout: float = 0.3
    dropout: tuple = (0.4, 0.9)         # darkening of an angular wedge (lateral-wall dropout)
    # geometry
    p_affine: float = 0.8
    rotate: tuple = (-12.0, 12.0)       # degrees
    zoom: tuple = (0.85, 1.2)
    shift: float = 0.08                 # up to this fraction of the size, along x and y
    p_flip: float = 0.0                 # left-right mirror (off: it swaps the sides of LV and RV)
    p_sector: float = 0.5
    sector_angle: tuple = (25.0, 45.0)  # half angle (degrees) of a sector mask with its apex at the top
    sector_depth: tuple = (0.8, 1.1)    # radius, in image heights
    p_crop: float = 0.3
    crop: tuple = (0.0, 0.12)           # blank bands up to this fraction at each edge
    p_lowres: float = 0.3
    lowres: tuple = (0.4, 0.9)          # down- then up-sample by this factor
    # time (clips only)
    p_hold: float = 0.35
    hold_fps: tuple = (6.0, 18.0)       # sample-and-hold to this frame rate (given the clip's fps)
    p_speed: float = 0.3
    speed: tuple = (0.75, 1.0)          # playback speed (< 1: slower heart, frames repeated)
    p_short: float = 0.2
    short_frames: tuple = (12, 24)      # keep this many frames, the rest zeros
    # export
    p_quantise: float = 0.3
    levels: tuple = (12, 64)            # grey levels (palette-compressed exports)
    p_jpeg: float = 0.3
    jpeg_quality: tuple = (15, 75)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "AugmentConfig":
        return dataclass_from_dict(AugmentConfig, d, "augmentation")


def _mild() -> AugmentConfig:
    """The old regressor augmentation's strength: gain / brightness, shifts, a little noise."""
    off = {f.name: 0.0 for f in dataclasses.fields(AugmentConfig) if f.name.startswith("p_")}
    return dataclasses.replace(AugmentConfig(**off), p_gain=1.0, gain=(0.85, 1.15), bias=(-0.05, 0.05),
                               p_affine=1.0, rotate=(0.0, 0.0), zoom=(1.0, 1.0), shift=4 / 112,
                               p_noise=1.0, noise=(0.0, 0.02))


def _off() -> AugmentConfig:
    return AugmentConfig(**{f.name: 0.0 for f in dataclasses.fields(AugmentConfig) if f.name.startswith("p_")})


PRESETS = {"wide": AugmentConfig, "mild": _mild, "off": _off}


def get_augment_preset(name: str) -> AugmentConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown augmentation preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]()


# ----------------------------------------------------------------------------------------- helpers
class _Draw:
    """Uniform numbers from a torch.Generator (CPU), one at a time, in call order."""

    def __init__(self, g: torch.Generator):
        self.g = g

    def u(self, lo=0.0, hi=1.0) -> float:
        return float(lo + (hi - lo) * torch.rand((), generator=self.g))

    def r(self, rng) -> float:
        return self.u(rng[0], rng[1])

    def p(self, prob: float) -> bool:
        return self.u() < prob          # always draws, so the stream never depends on prob


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W) with sigmas along x and y (<= 0.05: none); edges replicated.
    A weighted sum of shifted copies (much faster on the CPU than a one-channel conv2d)."""
    out = x
    for sigma, dim in ((sx, 2), (sy, 1)):
        if sigma <= 0.05:
            continue
        k = _gauss_kernel(sigma)
        r = len(k) // 2
        pad = (r, r, 0, 0) if dim == 2 else (0, 0, r, r)
        p = F.pad(out[:, None], pad, mode="replicate")[:, 0]
        n = out.shape[dim]
        acc = k[0] * p.narrow(dim, 0, n)
        for j in range(1, len(k)):
            acc = acc + k[j] * p.narrow(dim, j, n)
        out = acc
    return out


def _polar(h: int, w: int, apex_x: float, apex_y: float = 0.0):
    """Angle from straight down (rad) and distance (px) of every pixel from a sector apex."""
    y = torch.arange(h, dtype=torch.float32)[:, None]
    x = torch.arange(w, dtype=torch.float32)[None, :]
    return torch.atan2(x - apex_x, y - apex_y + 1e-6), torch.hypot(x - apex_x, y - apex_y)


def _jpeg(frames: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of (N, H, W) in [0, 1] at one quality (per-frame encodes, as exported stills)."""
    out = []
    for f in frames:
        u8 = (f.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        out.append(torch.from_numpy(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0))
    return torch.stack(out)


def time_indices(t: int, fps: float, d: _Draw, cfg: AugmentConfig) -> tuple[torch.Tensor, int]:
    """Frame indices (t,) for playback-speed jitter and sample-and-hold, and the number of frames kept
    (the rest are zeroed: a short export)."""
    idx = torch.arange(t, dtype=torch.float64)
    do_speed, speed = d.p(cfg.p_speed), d.r(cfg.speed)
    if do_speed:
        idx = torch.floor(idx * speed + 1e-6)
    do_hold, hold = d.p(cfg.p_hold), d.r(cfg.hold_fps)
    if do_hold and fps > 0 and hold < fps:
        # the exported clip showed frames at times j / hold; at fps each frame repeats the last shown one
        shown = torch.floor(torch.floor(torch.arange(t, dtype=torch.float64) * hold / fps + 1e-6) * fps / hold + 1e-6)
        idx = idx[shown.long().clamp(max=t - 1)]
    do_short, short = d.p(cfg.p_short), int(round(d.r(cfg.short_frames)))
    keep = min(t, max(2, short)) if do_short else t
    return idx.long().clamp(0, t - 1), keep


# ------------------------------------------------------------------------------------ one clip
def augment_video(video: torch.Tensor, g: torch.Generator, cfg: AugmentConfig | None = None,
                  mask: torch.Tensor | None = None, extra: torch.Tensor | None = None, fps: float = 25.0,
                  temporal: bool = True):
    """Augment one clip (T, H, W) in [0, 1] with one random acquisition / export drawn from g.

    mask: (T, H, W) label mask (soft or 0/1) moved by the same geometry and time changes, returned
    thresholded at 0.5 as float. extra: (K, H, W) frames (e.g. the conditioning frame) that get the same
    spatial and appearance changes but no time changes. fps: the clip's frame rate (for sample-and-hold).
    temporal=False skips the time changes (single frames). Returns video, or a tuple (video, mask, extra)
    with None for what was not given."""
    cfg = cfg or AugmentConfig()
    if video.ndim != 3:
        raise ValueError(f"augment_video expects (T, H, W), got {tuple(video.shape)}")
    d = _Draw(g)
    x = video.float()
    t, h, w = x.shape
    m = mask.float() if mask is not None else None
    # ---- time
    idx, keep = time_indices(t, fps, d, cfg)
    if temporal and t > 1:
        x = x[idx]
        m = m[idx] if m is not None else None
    else:
        keep = t
    k_extra = 0
    if extra is not None:
        k_extra = extra.shape[0]
        x = torch.cat([x, extra.float()], 0)
    n = x.shape[0]
    # ---- geometry (one affine for the whole clip)
    do_aff = d.p(cfg.p_affine)
    ang, zoom = math.radians(d.r(cfg.rotate)), d.r(cfg.zoom)
    sx, sy = d.u(-cfg.shift, cfg.shift) * 2, d.u(-cfg.shift, cfg.shift) * 2   # grid units span 2
    flip = d.p(cfg.p_flip)
    if do_aff or flip:
        if not do_aff:
            ang, zoom, sx, sy = 0.0, 1.0, 0.0, 0.0
        c, s = math.cos(ang) / zoom, math.sin(ang) / zoom
        fx = -1.0 if flip else 1.0
        theta = torch.tensor([[c * fx, -s, sx], [s * fx, c, sy]], dtype=torch.float32)[None]
        grid = F.affine_grid(theta, (1, 1, h, w), align_corners=False)
        x = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        if m is not None:
            m = F.grid_sample(m[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    # ---- appearance
    do_lowres, lowres = d.p(cfg.p_lowres), d.r(cfg.lowres)
    if do_lowres:
        hs, ws = max(8, int(round(h * lowres))), max(8, int(round(w * lowres)))
        x = F.interpolate(F.interpolate(x[None], size=(hs, ws), mode="area"), size=(h, w), mode="bilinear",
                          align_corners=False)[0]
    do_spk, amp, size, mix = d.p(cfg.p_speckle), d.r(cfg.speckle), d.r(cfg.speckle_size), d.u()
    if do_spk:
        static = _blur(torch.randn((1, h, w), generator=g), size, size * d.u(0.5, 1.5))
        moving = _blur(torch.randn((n, h, w), generator=g), size, size)
        field = math.sqrt(mix) * static + math.sqrt(1 - mix) * moving
        field = field / field.flatten(1).std(1).clamp_min(1e-6).view(-1, 1, 1)
        x = x * torch.exp(amp * field - 0.5 * amp * amp)
    do_blur, bx, by = d.p(cfg.p_blur), d.r(cfg.blur), d.r(cfg.blur)
    if do_blur:
        x = _blur(x, bx, by)
    apex_x = w / 2 + d.u(-0.1, 0.1) * w
    theta_px, r_px = _polar(h, w, apex_x)
    do_haze, haze, haze_r = d.p(cfg.p_haze), d.r(cfg.haze), d.u(0.15, 0.4) * h
    if do_haze:
        blob = _blur(torch.rand((1, h, w), generator=g), 3.0, 3.0)[0]
        x = x + haze * torch.exp(-r_px / haze_r) * (0.5 + blob)
    do_drop, drop, drop_at, drop_w = d.p(cfg.p_dropout), d.r(cfg.dropout), d.u(-0.6, 0.6), d.u(0.08, 0.25)
    if do_drop:
        wedge = torch.exp(-0.5 * ((theta_px - drop_at) / drop_w) ** 2)
        x = x * (1 - drop * wedge)
    do_gamma, gamma = d.p(cfg.p_gamma), d.r(cfg.gamma)
    if do_gamma:
        x = x.clamp(0, 1) ** gamma
    do_gain, gain, bias = d.p(cfg.p_gain), d.r(cfg.gain), d.r(cfg.bias)
    if do_gain:
        x = x * gain + bias
    do_con, con = d.p(cfg.p_contrast), d.r(cfg.contrast)
    if do_con:
        mean = x.mean()
        x = (x - mean) * con + mean
    do_tgc, tgc = d.p(cfg.p_tgc), d.r(cfg.tgc)
    if do_tgc:
        ramp = 1 + tgc * (torch.arange(h, dtype=torch.float32) / h - 0.5)
        x = x * ramp.view(1, h, 1)
    do_noise, noise = d.p(cfg.p_noise), d.r(cfg.noise)
    if do_noise:
        x = x + noise * torch.randn(x.shape, generator=g)
    # ---- sector mask and edge crops (black outside, as in exported images)
    do_sec, half, depth = d.p(cfg.p_sector), math.radians(d.r(cfg.sector_angle)), d.r(cfg.sector_depth) * h
    if do_sec:
        edge = torch.clamp((half - theta_px.abs()) * r_px.clamp_min(1.0), 0, 1) * torch.clamp(depth - r_px, 0, 1)
        x = x * edge
    do_crop = d.p(cfg.p_crop)
    bands = [int(round(d.r(cfg.crop) * s)) for s in (h, h, w, w)]
    if do_crop:
        top, bottom, left, right = bands
        keep_mask = torch.zeros((h, w))
        keep_mask[top:h - bottom, left:w - right] = 1
        x = x * keep_mask
    x = x.clamp(0, 1)
    # ---- export
    do_q, levels = d.p(cfg.p_quantise), int(round(d.r(cfg.levels)))
    if do_q:
        x = torch.round(x * (levels - 1)) / (levels - 1)
    do_jpeg, quality = d.p(cfg.p_jpeg), int(round(d.r(cfg.jpeg_quality)))
    if do_jpeg:
        x = _jpeg(x, quality)
    out_extra = x[n - k_extra:] if k_extra else None
    x = x[:n - k_extra] if k_extra else x
    if keep < t:
        x[keep:] = 0
        if m is not None:
            m[keep:] = 0
    if m is not None:
        m = (m >= 0.5).float()
    if mask is None and extra is None:
        return x
    return x, m, out_extra


# ------------------------------------------------------------------------------------ batches
def augment_clips(x: torch.Tensor, g: torch.Generator, cfg: AugmentConfig | None = None,
                  masks: torch.Tensor | None = None, frames: torch.Tensor | None = None, fps: float = 25.0,
                  temporal: bool = True):
    """Augment a batch: x (B, C, T, H, W) or (B, T, H, W) in [0, 1], one random acquisition per clip
    (channels share it). masks: label masks shaped like x (geometry and time follow the clip).
    frames: conditioning frames (B, C, H, W) or (B, H, W) that get their clip's spatial and appearance
    changes. Returns x, or (x, masks) / (x, frames) / (x, masks, frames) for what was given."""
    cfg = cfg or AugmentConfig()
    five = x.ndim == 5
    if x.ndim not in (4, 5):
        raise ValueError(f"augment_clips expects (B, C, T, H, W) or (B, T, H, W), got {tuple(x.shape)}")
    xb = x if five else x[:, None]
    mb = None if masks is None else (masks if five else masks[:, None])
    fb = None if frames is None else (frames if frames.ndim == 4 else frames[:, None])
    b, c = xb.shape[:2]
    out = torch.empty(xb.shape, dtype=torch.float32)
    out_m = None if mb is None else torch.empty(mb.shape, dtype=torch.float32)
    out_f = None if fb is None else torch.empty(fb.shape, dtype=torch.float32)
    for i in range(b):
        state = g.get_state()
        for ch in range(c):
            if ch:
                g.set_state(state)                          # every channel of a clip: the same draw
            r = augment_video(xb[i, ch].cpu(), g, cfg, mask=None if mb is None else mb[i, ch].cpu(),
                              extra=None if fb is None else fb[i, ch][None].cpu(), fps=fps, temporal=temporal)
            if mb is None and fb is None:
                out[i, ch] = r
            else:
                out[i, ch] = r[0]
                if out_m is not None:
                    out_m[i, ch] = r[1]
                if out_f is not None:
                    out_f[i, ch] = r[2][0]
    out = out.to(x.device)
    res = [out if five else out[:, 0]]
    if out_m is not None:
        res.append((out_m if five else out_m[:, 0]).to(masks.device))
    if out_f is not None:
        res.append((out_f if frames.ndim == 4 else out_f[:, 0]).to(frames.device))
    return res[0] if len(res) == 1 else tuple(res)
