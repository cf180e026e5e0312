"""EchoNet-Dynamic's published EF regressor (Ouyang et al. 2020), re-implemented for EchoGen.

The published file `r2plus1d_18_32_2_pretrained.pt` holds the weights of an R(2+1)D-18 video ResNet
(Tran et al. 2018) whose last layer is a single linear output (EF in %). This module builds the same
network with plain torch (no torchvision), with parameter names laid out as in that file (minus the
`module.` prefix DataParallel added), so converting is a strict one-to-one copy (echogen.weights.convert).

Architecture (per "(2+1)D" conv: 1 x k x k spatial conv -> BatchNorm -> ReLU -> kt x 1 x 1 temporal conv,
with a middle width chosen so the pair has about the parameters of a full k x k x kt conv):
  stem   : 3 -> 45 (1x7x7, stride 1,2,2) -> BN -> ReLU -> 45 -> 64 (3x1x1) -> BN -> ReLU
  layer1 : 2 basic blocks, 64 channels
  layer2-4: 2 basic blocks each, 128 / 256 / 512 channels; the first block strides 2 in T, H and W
  pool   : global average -> fc 512 -> 1
A basic block is relu(BN(conv(relu(BN(conv(x))))) + skip(x)); both of its (2+1)D convs use the middle
width computed from the block's input and output widths; the skip is a strided 1x1x1 conv + BN when the
shape changes.

Inputs: EchoNet clips are 3-channel (grey echo stored as RGB), normalised per channel with a mean / std
computed on EchoNet-Dynamic's training split (in 0-255 units), 32 frames taken every 2nd frame of the
~50 fps video (`period` 2), 112 x 112. At test time EchoNet averages the prediction over every clip start
(stride 1 in source frames); a video shorter than frames * period is padded at the end with frames equal
to the mean (0 after normalisation). `predict_video` reproduces that.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCH = "echonet_r2plus1d_18"


@dataclass
class EchoNetConfig:
    arch: str = ARCH
    frames: int = 32                  # clip length the network sees
    period: int = 2                   # take every `period`-th frame of the source video
    source_fps: float = 50.0          # frame rate `period` refers to (EchoNet-Dynamic's videos)
    size: int = 112
    # per-channel pixel normalisation in [0, 1] units; EchoNet computes it on its TRAIN split at run
    # time (echonet.utils.get_mean_and_std, ~32.7 and ~50 in 0-255 units); override for exact values
    mean: tuple = (0.128, 0.128, 0.128)
    std: tuple = (0.196, 0.196, 0.196)
    widths: tuple = (64, 128, 256, 512)
    blocks: tuple = (2, 2, 2, 2)
    stem_mid: int = 45
    clip_stride: int = 1              # clip starts every source frame, as EchoNet's clips="all"

    @property
    def fps(self) -> float:
        """Frame rate of the frames a clip holds (source_fps / period)."""
        return self.source_fps / self.period

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "EchoNetConfig":
        known = {f.name for f in dataclasses.fields(EchoNetConfig)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown EchoNet regressor config keys: {sorted(unknown)}")
        return EchoNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _mid(c_in: int, c_out: int) -> int:
    # middle width of a (2+1)D conv replacing a 3x3x3 conv: same parameter count (Tran et al. 2018)
    return (c_in * c_out * 27) // (c_in * 9 + 3 * c_out)


def _conv2plus1d(c_in: int, c_out: int, mid: int, stride: int = 1) -> nn.Sequential:
    # indices 0 / 1 / 3 are the parameter names of the published file
    return nn.Sequential(
        nn.Conv3d(c_in, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
        nn.Conv3d(mid, c_out, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        mid = _mid(c_in, c_out)
        self.conv1 = nn.Sequential(_conv2plus1d(c_in, c_out, mid, stride), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv2plus1d(c_out, c_out, mid), nn.BatchNorm3d(c_out))
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out))

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + skip)


class EchoNetR2Plus1D(nn.Module):
    """(B, 1 or 3, T, H, W) pixels in [0, 1] -> EF (%) (B,). Normalises its input itself."""

    def __init__(self, cfg: EchoNetConfig):
        super().__init__()
        self.cfg = cfg
        w0 = cfg.widths[0]
        self.stem = nn.Sequential(
            nn.Conv3d(3, cfg.stem_mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(cfg.stem_mid), nn.ReLU(inplace=True),
            nn.Conv3d(cfg.stem_mid, w0, (3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(w0), nn.ReLU(inplace=True))
        c = w0
        for i, (w, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.n_layers = len(cfg.widths)
        self.fc = nn.Linear(c, 1)
        self.register_buffer("_mean", torch.tensor(cfg.mean, dtype=torch.float32).reshape(1, 3, 1, 1, 1),
                             persistent=False)
        self.register_buffer("_std", torch.tensor(cfg.std, dtype=torch.float32).reshape(1, 3, 1, 1, 1),
                             persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] not in (1, 3):
            raise ValueError(f"EchoNet regressor expects (B, 1 or 3, T, H, W) clips, got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1, -1) if x.shape[1] == 1 else x   # grey -> EchoNet's RGB
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)

    def backbone(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, T, H, W) -> pooled features (B, 512)."""
        h = self.stem(z)
        for i in range(self.n_layers):
            h = getattr(self, f"layer{i + 1}")(h)
        return h.mean(dim=(2, 3, 4))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalise(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)).squeeze(1)

    @torch.no_grad()
    def predict_video(self, video: torch.Tensor, fps: float, stride: int | None = None,
                      batch_size: int = 16) -> list[float]:
        """EchoNet's test-time protocol on one (T, H, W) video in [0, 1] at `fps` (<= 0: source_fps).

        A video not at source_fps is first resampled to it (nearest earlier frame). Then every clip
        start s (every `stride` source frames, default 1) gives the clip s, s + period, ...; a short
        video is padded at the end with normalised zeros (the mean). Returns the per-clip EFs."""
        cfg = self.cfg
        v = video.float()
        if fps > 0 and abs(fps - cfg.source_fps) > 1e-6:
            n = v.shape[0]
            m = max(1, int(np.floor((n - 1) * cfg.source_fps / fps + 1e-6)) + 1)
            idx = np.minimum(np.floor(np.arange(m) * fps / cfg.source_fps + 1e-6).astype(np.int64), n - 1)
            v = v[torch.as_tensor(idx)]
        z = self.normalise(v[None, None])[0]                             # (3, T, H, W), normalised
        need = cfg.frames * cfg.period
        if z.shape[1] < need:
            z = F.pad(z, (0, 0, 0, 0, 0, need - z.shape[1]))            # zeros = the mean colour
        starts = list(range(0, z.shape[1] - (cfg.frames - 1) * cfg.period, max(1, stride or cfg.clip_stride)))
        dev = next(self.parameters()).device
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(starts), batch_size):
            clips = torch.stack([z[:, s:s + (cfg.frames - 1) * cfg.period + 1:cfg.period]
                                 for s in starts[i:i + batch_size]])
            out += self.fc(self.backbone(clips.to(dev))).squeeze(1).float().cpu().tolist()
        self.train(was_training)
        return out


def strip_prefix(state: dict, prefix: str = "module.") -> dict:
    """DataParallel's `module.` prefix off every key (all keys must carry it, or none)."""
    has = [k.startswith(prefix) for k in state]
    if any(has) and not all(has):
        raise ValueError(f"some keys start with '{prefix}' and some do not")
    return {k[len(prefix):]: v for k, v in state.items()} if any(has) else dict(state)
