"""EF regressor: a factorised (2+1)D residual video network that reads LVEF (%) from an echo clip.

It scores generated videos (PAPER.md "EF regressor used for scoring") and backs `python -m echogen ef`.
The idea is EchoNet-Dynamic's R(2+1)D-18 (Tran et al. 2018): every 3D convolution is split into a
per-frame spatial conv (1 x k x k) and a per-pixel temporal conv (kt x 1 x 1), with a norm and ReLU in
between; residual blocks; global average pooling; one linear output, starting at EF 55.6 % (the
mean EF of EchoNet-Dynamic) so the untrained network already predicts the population mean.

Input (B, 1, T, 112, 112) in [0, 1] at cfg.fps; output EF in % (B,). The network normalises its input
with cfg.mean / cfg.std itself, so callers always pass [0, 1] pixels.
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
from echogen.data.resample import source_frames
from echogen.weights.bundle import ModelFile, WeightsError

KIND = "regressor"


@dataclass
class RegressorConfig:
    frames: int = 32                  # clip length the network sees
    fps: float = 25.0                 # clip frame rate; videos are resampled to it
    size: int = 112                   # clip height = width
    stem_width: int = 64
    widths: tuple = (64, 128, 256, 512)  # channels of each residual stage
    blocks: tuple = (2, 2, 2, 2)      # residual blocks per stage (stages 2.. halve T, H, W)
    stem_stride: int = 2              # spatial stride of the stem (time is never strided there)
    temporal_kernel: int = 3
    norm: str = "batch"               # batch | group
    groups: int = 8                   # GroupNorm groups (norm="group")
    dropout: float = 0.0              # before the linear head
    mean: float = 0.128               # pixel normalisation, [0,1] units (EchoNet-Dynamic: ~32.7/255)
    std: float = 0.196                #                                     (~50/255)
    bias_init: float = 55.6           # EF (%) the untrained head predicts (paper / EchoNet)
    ef_scale: float = 10.0            # the head works in units of ef_scale % (see EFRegressor.forward)
    clip_stride: int = 8              # frames between clip starts when averaging over a long video

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "RegressorConfig":
        return dataclass_from_dict(RegressorConfig, d, "regressor", WeightsError)


REGRESSOR_PRESETS = {
    # CPU preset (~0.9 M params): clips of 32 frames @ 25 fps = the demo cascade's output (every 2nd
    # frame of a 50 fps EchoNet video). The stem strides 4x in space (28x28 feature maps), which makes
    # a training step ~10x cheaper than stride 2; GroupNorm because CPU batches are small.
    "small": RegressorConfig(frames=32, fps=25.0, stem_width=16, widths=(16, 32, 64, 128),
                             blocks=(1, 1, 1, 1), stem_stride=4, norm="group", groups=8, dropout=0.1),
    # R(2+1)D-18 size (~31 M params), EchoNet-Dynamic's 32 frames with period 2 of 50 fps video.
    "full": RegressorConfig(frames=32, fps=25.0, stem_width=64, widths=(64, 128, 256, 512),
                            blocks=(2, 2, 2, 2), stem_stride=2, norm="batch", dropout=0.0),
    # for tests only: a few thousand parameters, 8-frame clips
    "tiny": RegressorConfig(frames=8, fps=25.0, stem_width=4, widths=(4, 8), blocks=(1, 1),
                            stem_stride=4, norm="group", groups=2, clip_stride=4),
}


def get_regressor_preset(name: str) -> RegressorConfig:
    return copy_preset(REGRESSOR_PRESETS, name, "regressor")


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

def _norm(cfg: RegressorConfig, ch: int) -> nn.Module:
    if cfg.norm == "batch":
        return nn.BatchNorm3d(ch)
    if cfg.norm == "group":
        return nn.GroupNorm(math.gcd(cfg.groups, ch), ch)
    raise ValueError(f"unknown norm '{cfg.norm}' (batch | group)")


class Conv2Plus1D(nn.Sequential):
    """A kt x k x k 3D conv factorised as spatial (1 x k x k) -> norm -> ReLU -> temporal (kt x 1 x 1).

    The middle width follows R(2+1)D: chosen so the pair has about the parameters of the 3D conv."""

    def __init__(self, cfg: RegressorConfig, c_in: int, c_out: int, k: int = 3, stride: int = 1,
                 t_stride: int = 1, mid: int | None = None):
        kt = cfg.temporal_kernel
        if mid is None:
            mid = max(1, (kt * k * k * c_in * c_out) // (k * k * c_in + kt * c_out))
        super().__init__(
            nn.Conv3d(c_in, mid, (1, k, k), stride=(1, stride, stride), padding=(0, k // 2, k // 2), bias=False),
            _norm(cfg, mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, c_out, (kt, 1, 1), stride=(t_stride, 1, 1), padding=(kt // 2, 0, 0), bias=False),
        )


class Block(nn.Module):
    """Residual block: two (2+1)D convs; a strided 1x1x1 projection on the skip when the shape changes."""

    def __init__(self, cfg: RegressorConfig, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = Conv2Plus1D(cfg, c_in, c_out, stride=stride, t_stride=stride)
        self.norm1 = _norm(cfg, c_out)
        self.conv2 = Conv2Plus1D(cfg, c_out, c_out)
        self.norm2 = _norm(cfg, c_out)
        nn.init.zeros_(self.norm2.weight)  # each block starts as its skip path: stable early training
        self.skip = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), _norm(cfg, c_out))

    def forward(self, x):
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + self.skip(x))


class EFRegressor(nn.Module):
    def __init__(self, cfg: RegressorConfig):
        super().__init__()
        self.cfg = cfg
        if len(cfg.widths) != len(cfg.blocks):
            raise ValueError(f"widths {cfg.widths} and blocks {cfg.blocks} must have the same length")
        # Stem: 7x7 spatial (strided) then temporal, as R(2+1)D.
        self.stem = nn.Sequential(
            Conv2Plus1D(cfg, 1, cfg.stem_width, k=7, stride=cfg.stem_stride),
            _norm(cfg, cfg.stem_width), nn.ReLU(inplace=True))
        stages, c = [], cfg.stem_width
        for i, (w, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            for j in range(n):
                stages.append(Block(cfg, c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(c, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.constant_(self.head.bias, cfg.bias_init / cfg.ef_scale)  # output starts at bias_init %

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, H, W) in [0, 1] -> pooled backbone features (B, C); used for Frechet distances."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"EFRegressor expects (B, 1, T, H, W) clips, got shape {tuple(x.shape)}")
        x = (x - self.cfg.mean) / self.cfg.std
        h = self.stages(self.stem(x))           # (B, C, T', H', W')
        return h.mean(dim=(2, 3, 4))             # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # EF = ef_scale * head(features). Adam moves each weight by ~lr per step whatever the loss scale,
        # so a head in raw % (ef_scale = 1, EchoNet's choice) needs thousands of steps just to span the
        # 10-80 % range; in units of 10 % it gets there ten times sooner. ef_scale = 1 is the raw head.
        return self.cfg.ef_scale * self.head(self.dropout(self.features(x))).squeeze(1)  # (B,) EF in %


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

def _build(cfg_dict: dict) -> tuple:
    if cfg_dict.get("arch") == "echonet_r2plus1d_18":  # EchoNet-Dynamic's published regressor
        from echogen.nets.echonet_r2plus1d import EchoNetConfig, EchoNetR2Plus1D
        cfg = EchoNetConfig.from_dict(cfg_dict)
        return EchoNetR2Plus1D(cfg), cfg
    cfg = RegressorConfig.from_dict(cfg_dict)
    return EFRegressor(cfg), cfg


FILE = ModelFile(KIND, "EF regressor", "train/train_regressor.py", _build)


def save_regressor(path, model: EFRegressor, cfg: RegressorConfig, **extra) -> Path:
    """Write the model's state dict with its config in the metadata (kind "regressor")."""
    return FILE.save(path, model, cfg, **extra)


def resolve_regressor_path(path_or_bundle) -> Path:
    """A .safetensors file, or a bundle folder whose manifest names the regressor."""
    return FILE.resolve(path_or_bundle)


def load_regressor(path_or_bundle, device=None) -> tuple[EFRegressor, RegressorConfig]:
    """Load a regressor (eval mode) from a .safetensors file or a weights bundle folder."""
    return FILE.load(path_or_bundle, device)


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------

def resample_indices(n: int, src_fps: float, dst_fps: float) -> np.ndarray:
    """Frame indices that resample an n-frame video from src_fps to dst_fps: output frame k shows the
    source frame on screen at time k / dst_fps (floor of k * src_fps / dst_fps).

    50 -> 25 fps gives every 2nd frame: 0, 2, 4, ...; an unknown src_fps (<= 0) keeps every frame."""
    if src_fps <= 0 or abs(src_fps - dst_fps) < 1e-6:
        return np.arange(n)
    m = max(1, int(math.floor((n - 1) * dst_fps / src_fps + 1e-6)) + 1)
    return np.minimum(source_frames(m, src_fps, dst_fps), n - 1)


def at_regressor_rate(video: torch.Tensor, fps: float, cfg) -> torch.Tensor:
    """(T, H, W) at fps -> (T', H, W) at cfg.fps, zero-padded at the end to at least cfg.frames."""
    v = video[torch.as_tensor(resample_indices(video.shape[0], fps, cfg.fps))]
    if v.shape[0] < cfg.frames:
        v = F.pad(v, (0, 0, 0, 0, 0, cfg.frames - v.shape[0]))
    return v


def _as_float_video(video) -> torch.Tensor:
    """(T, H, W) uint8 or float in [0, 1] (numpy or torch) -> float32 tensor in [0, 1]."""
    v = torch.as_tensor(np.asarray(video) if not isinstance(video, torch.Tensor) else video)
    if v.ndim != 3:
        raise ValueError(f"expected a greyscale video (T, H, W), got shape {tuple(v.shape)}")
    if v.dtype == torch.uint8:
        return v.float() / 255.0
    return v.float().clamp(0.0, 1.0)


def clip_starts(n: int, frames: int, stride: int) -> list[int]:
    """Starts of every clip of `frames` frames with the given stride, the last one ending at the video's end."""
    if n <= frames:
        return [0]
    starts = list(range(0, n - frames + 1, max(1, stride)))
    if starts[-1] != n - frames:
        starts.append(n - frames)
    return starts


@torch.no_grad()
def predict_ef_batch(model: EFRegressor, videos: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """EF (%) of clips already at cfg.fps: (B, 1, T, H, W) float in [0, 1] -> (B,) on CPU."""
    cfg = model.cfg
    if videos.ndim != 5 or videos.shape[1] != 1 or tuple(videos.shape[-2:]) != (cfg.size, cfg.size):
        raise ValueError(f"expected (B, 1, T, {cfg.size}, {cfg.size}) clips, got {tuple(videos.shape)}")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = [model(videos[i:i + batch_size].to(dev, torch.float32)).float().cpu()
           for i in range(0, videos.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def extract_features(model: EFRegressor, videos: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Backbone features (B, C) of (B, 1, T, H, W) clips in [0, 1] (for Frechet distances)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = [model.features(videos[i:i + batch_size].to(dev, torch.float32)).float().cpu()
           for i in range(0, videos.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out)


def short_loop(video, fps: float, cfg) -> bool:
    """The video is shorter than the regressor's window (cfg.frames at cfg.fps) and repeats without a jump
    (echogen.data.loops.wrap_ok): a seamless loop, e.g. one generated heart cycle or a scanner's one-beat export.
    predict_ef repeats such a loop to fill the window instead of zero-padding it."""
    from echogen.data.loops import wrap_ok
    n = len(video)
    return n * cfg.fps / (fps if fps > 0 else cfg.fps) < cfg.frames and wrap_ok(video)


def predict_ef(model: EFRegressor, cfg: RegressorConfig, video, fps: float, device=None,
               stride: int | None = None, batch_size: int = 16) -> tuple[float, list[float]]:
    """EF (%) of one whole video, averaged over its clips as EchoNet-Dynamic does.

    video: (T, H, W) uint8 or float in [0, 1], H = W = cfg.size; fps: its frame rate (<= 0: assume cfg.fps).
    The video is resampled to cfg.fps, cut into cfg.frames-long clips every `stride` frames
    (default cfg.clip_stride; the last clip ends at the last frame). A short video is repeated to fill one
    clip when it is a seamless loop (short_loop), else zero-padded at the end. Returns (mean EF, per-clip EFs)."""
    v = _as_float_video(video)                                      # (T, H, W)
    if short_loop(v, fps, cfg):                                     # one window of the loop repeated
        need = math.ceil(cfg.frames * (fps if fps > 0 else cfg.fps) / cfg.fps)
        v = v.repeat(math.ceil(need / len(v)), 1, 1)[:need]
    if tuple(v.shape[1:]) != (cfg.size, cfg.size):
        raise ValueError(f"frames must be {cfg.size}x{cfg.size} (got {tuple(v.shape[1:])}); "
                         "preprocess them first (echogen.data.inputs.prepare_array)")
    if hasattr(model, "predict_video"):                             # a model with its own clip protocol
        if device is not None:
            model.to(device)
        efs = model.predict_video(v, fps, stride=stride, batch_size=batch_size)
        return float(np.mean(efs)), [float(e) for e in efs]
    v = at_regressor_rate(v, fps, cfg)
    starts = clip_starts(v.shape[0], cfg.frames, stride or cfg.clip_stride)
    clips = torch.stack([v[s:s + cfg.frames] for s in starts])[:, None]  # (N, 1, T, H, W)
    if device is not None:
        model.to(device)
    efs = predict_ef_batch(model, clips, batch_size=batch_size)
    return float(efs.mean()), [float(e) for e in efs]
