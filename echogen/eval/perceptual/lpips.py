"""LPIPS: the learned perceptual image distance of Zhang et al., CVPR 2018 ("The Unreasonable
Effectiveness of Deep Features as a Perceptual Metric"), version 0.1 (the `lpips` package's default).

    d(x, y) = sum_l  mean_{h,w}  sum_c  w_lc * (xhat_lchw - yhat_lchw)^2

where xhat_l are the activations of tap l of an ImageNet trunk (AlexNet or VGG16, torchvision's
weights), each unit-normalised across channels, and w_l >= 0 are the learned 1x1 "lin" weights.
Input frames are greyscale in [0, 1]: copied to R, G, B, mapped to [-1, 1], then through the
package's fixed scaling layer (x - shift) / scale. Weights: echogen/eval/perceptual/convert.py.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from echogen.eval.perceptual.common import frames_to_rgb, model_device

KIND = "lpips"

# Trunks: (in, out, kernel, stride, padding) is a conv + ReLU; "P3" max-pool 3 stride 2; "P2" max-pool 2
# stride 2; "T" taps the activation there. Taps as in the lpips package: AlexNet relu1..relu5,
# VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the trunk's last max-pool is never reached).
_VGG_CONVS = [[(3, 64), (64, 64)], [(64, 128), (128, 128)], [(128, 256), (256, 256), (256, 256)],
              [(256, 512), (512, 512), (512, 512)], [(512, 512), (512, 512), (512, 512)]]
TRUNKS = {
    "alex": [(3, 64, 11, 4, 2), "T", "P3", (64, 192, 5, 1, 2), "T", "P3", (192, 384, 3, 1, 1), "T",
             (384, 256, 3, 1, 1), "T", (256, 256, 3, 1, 1), "T"],
    "vgg": [op for i, block in enumerate(_VGG_CONVS)
            for op in (["P2"] if i else []) + [(a, b, 3, 1, 1) for a, b in block] + ["T"]],
}
# Index of each conv inside torchvision's `features` Sequential (the layout of the user's trunk file).
TORCHVISION_CONV_INDEX = {"alex": (0, 3, 6, 8, 10),
                          "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
MIN_SIZE = {"alex": 31, "vgg": 16}   # smallest frame whose last tap is still >= 1x1
# The lpips package's ScalingLayer constants (ImageNet mean / std expressed in [-1, 1] units).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10                          # in the channel norm: f / (||f|| + eps), as the package does


@dataclass
class LPIPSConfig:
    backbone: str = "alex"           # "alex" (the default LPIPS) or "vgg" (VGG16)
    version: str = "0.1"

    def __post_init__(self):
        if self.backbone not in TRUNKS:
            raise ValueError(f"unknown LPIPS backbone '{self.backbone}' (choose from {', '.join(TRUNKS)})")
        if self.version != "0.1":
            raise ValueError(f"only LPIPS version 0.1 is implemented, got {self.version}")

    def to_dict(self) -> dict:
        return asdict(self)


def tap_channels(backbone: str) -> list[int]:
    spec, out, chans = TRUNKS[backbone], [], 0
    for op in spec:
        if isinstance(op, tuple):
            chans = op[1]
        elif op == "T":
            out.append(chans)
    return out


class LPIPS(nn.Module):
    """forward(a, b): (N, [1|3,] H, W) frame pairs in [0, 1] -> (N,) distances."""

    def __init__(self, cfg: LPIPSConfig | None = None):
        super().__init__()
        self.cfg = cfg or LPIPSConfig()
        self.spec = TRUNKS[self.cfg.backbone]
        self.convs = nn.ModuleList(nn.Conv2d(op[0], op[1], op[2], op[3], op[4])
                                   for op in self.spec if isinstance(op, tuple))
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in tap_channels(self.cfg.backbone))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Trunk activations at the taps of (N, 3, H, W) input already scaled by the scaling layer."""
        feats, i = [], 0
        for op in self.spec:
            if op == "T":
                feats.append(x)
            elif op == "P3":
                x = F.max_pool2d(x, 3, 2)
            elif op == "P2":
                x = F.max_pool2d(x, 2, 2)
            else:
                x = F.relu(self.convs[i](x))
                i += 1
        return feats

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = frames_to_rgb(a).to(self.shift.device), frames_to_rgb(b).to(self.shift.device)
        if a.shape != b.shape:
            raise ValueError(f"LPIPS needs frame pairs of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        if min(a.shape[-2:]) < MIN_SIZE[self.cfg.backbone]:
            raise ValueError(f"LPIPS-{self.cfg.backbone} needs frames of at least "
                             f"{MIN_SIZE[self.cfg.backbone]} pixels a side, got {tuple(a.shape[-2:])}")
        x = torch.cat([a, b]) * 2 - 1                                  # [0, 1] -> [-1, 1]
        x = (x - self.shift) / self.scale                              # the package's scaling layer
        d = torch.zeros(a.shape[0], device=x.device)
        for f, lin in zip(self.taps(x), self.lins):
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)   # unit length across channels
            fa, fb = f.chunk(2)
            d = d + lin((fa - fb) ** 2).mean(dim=(2, 3))[:, 0]         # weighted squared diff, spatial mean
        return d

    @torch.no_grad()
    def video_distance(self, a: torch.Tensor, b: torch.Tensor, batch_size: int = 32) -> float:
        """Mean LPIPS over the frames of two clips (T, H, W) in [0, 1] (frame t against frame t)."""
        if a.shape != b.shape:
            raise ValueError(f"LPIPS needs clips of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        dev = model_device(self)
        d = [self(a[i:i + batch_size].to(dev), b[i:i + batch_size].to(dev)).double().cpu()
             for i in range(0, a.shape[0], batch_size)]
        return float(torch.cat(d).mean())
