"""Inception-v3 as used for FID (Heusel et al. 2017): the TensorFlow FID network
(inception-2015-12-05) in the form pytorch-fid ports it, returning the 2048-d pool3 features.

It differs from torchvision's ImageNet Inception-v3 in its weights and in three pooling details, all
reproduced here: the average pools inside Mixed_5b-d, Mixed_6b-e and Mixed_7b ignore the zero
padding (TensorFlow's 'SAME' average), and Mixed_7c's pool branch uses a max pool instead.
Input: frames in [0, 1] (greyscale copied to R, G, B) resized to 299x299 (bilinear, half-pixel
centres), then mapped to [-1, 1]. Module names follow the TensorFlow graph (and pytorch-fid), so the
weights file's keys map one to one. Weights: echogen/eval/perceptual/convert.py.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from echogen.eval.perceptual.common import frames_to_rgb, model_device

KIND = "inception_fid"
FEATURES = 2048


@dataclass
class InceptionConfig:
    size: int = 299                # input resize (the FID convention)
    num_classes: int = 1008        # the TF graph's classifier (its weights are not needed for FID)

    def to_dict(self) -> dict:
        return asdict(self)


class BasicConv(nn.Module):
    """Conv (no bias) -> batch norm (eps 1e-3, running statistics) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Mixed(nn.Module):
    """An Inception block: parallel branches concatenated along channels.

    convs: (name, in, out, kernel[, stride[, padding]]); branches: lists of steps, each step a conv
    name, a tuple of conv names (applied side by side to the same input and concatenated), or a pool:
    "avg" (3x3, stride 1, padding not counted), "max1" (3x3, stride 1, padded), "max2" (3x3, stride 2)."""

    def __init__(self, convs: list, branches: list):
        super().__init__()
        for name, *args in convs:
            self.add_module(name, BasicConv(*args))
        self.branches = branches

    def forward(self, x):
        outs = []
        for branch in self.branches:
            h = x
            for step in branch:
                if step == "avg":
                    h = F.avg_pool2d(h, 3, 1, 1, count_include_pad=False)
                elif step == "max1":
                    h = F.max_pool2d(h, 3, 1, 1)
                elif step == "max2":
                    h = F.max_pool2d(h, 3, 2)
                elif isinstance(step, tuple):
                    h = torch.cat([getattr(self, n)(h) for n in step], 1)
                else:
                    h = getattr(self, step)(h)
            outs.append(h)
        return torch.cat(outs, 1)


def block_a(cin: int, pool_features: int) -> Mixed:       # 35x35: Mixed_5b, 5c, 5d
    return Mixed([("branch1x1", cin, 64, 1),
                  ("branch5x5_1", cin, 48, 1), ("branch5x5_2", 48, 64, 5, 1, 2),
                  ("branch3x3dbl_1", cin, 64, 1), ("branch3x3dbl_2", 64, 96, 3, 1, 1),
                  ("branch3x3dbl_3", 96, 96, 3, 1, 1),
                  ("branch_pool", cin, pool_features, 1)],
                 [["branch1x1"], ["branch5x5_1", "branch5x5_2"],
                  ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], ["avg", "branch_pool"]])


def block_b(cin: int) -> Mixed:                            # 35 -> 17 reduction: Mixed_6a
    return Mixed([("branch3x3", cin, 384, 3, 2),
                  ("branch3x3dbl_1", cin, 64, 1), ("branch3x3dbl_2", 64, 96, 3, 1, 1),
                  ("branch3x3dbl_3", 96, 96, 3, 2)],
                 [["branch3x3"], ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], ["max2"]])


def block_c(cin: int, c7: int) -> Mixed:                   # 17x17 factorised 7x7: Mixed_6b..6e
    h, v = ((1, 7), (0, 3)), ((7, 1), (3, 0))              # (kernel, padding) of 1x7 and 7x1 convs
    return Mixed([("branch1x1", cin, 192, 1),
                  ("branch7x7_1", cin, c7, 1), ("branch7x7_2", c7, c7, h[0], 1, h[1]),
                  ("branch7x7_3", c7, 192, v[0], 1, v[1]),
                  ("branch7x7dbl_1", cin, c7, 1), ("branch7x7dbl_2", c7, c7, v[0], 1, v[1]),
                  ("branch7x7dbl_3", c7, c7, h[0], 1, h[1]), ("branch7x7dbl_4", c7, c7, v[0], 1, v[1]),
                  ("branch7x7dbl_5", c7, 192, h[0], 1, h[1]),
                  ("branch_pool", cin, 192, 1)],
                 [["branch1x1"], ["branch7x7_1", "branch7x7_2", "branch7x7_3"],
                  ["branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"],
                  ["avg", "branch_pool"]])


def block_d(cin: int) -> Mixed:                            # 17 -> 8 reduction: Mixed_7a
    return Mixed([("branch3x3_1", cin, 192, 1), ("branch3x3_2", 192, 320, 3, 2),
                  ("branch7x7x3_1", cin, 192, 1), ("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
                  ("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)), ("branch7x7x3_4", 192, 192, 3, 2)],
                 [["branch3x3_1", "branch3x3_2"],
                  ["branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"], ["max2"]])


def block_e(cin: int, pool: str) -> Mixed:                 # 8x8 expanded: Mixed_7b ("avg"), 7c ("max1")
    return Mixed([("branch1x1", cin, 320, 1),
                  ("branch3x3_1", cin, 384, 1), ("branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
                  ("branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
                  ("branch3x3dbl_1", cin, 448, 1), ("branch3x3dbl_2", 448, 384, 3, 1, 1),
                  ("branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)), ("branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
                  ("branch_pool", cin, 192, 1)],
                 [["branch1x1"], ["branch3x3_1", ("branch3x3_2a", "branch3x3_2b")],
                  ["branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")],
                  [pool, "branch_pool"]])


class InceptionFID(nn.Module):
    """forward(frames): (N, [1|3,] H, W) in [0, 1] -> (N, 2048) pool3 features."""

    def __init__(self, cfg: InceptionConfig | None = None):
        super().__init__()
        self.cfg = cfg or InceptionConfig()
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, 2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, 1, 1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = block_a(192, 32), block_a(256, 64), block_a(288, 64)
        self.Mixed_6a = block_b(288)
        self.Mixed_6b, self.Mixed_6c = block_c(768, 128), block_c(768, 160)
        self.Mixed_6d, self.Mixed_6e = block_c(768, 160), block_c(768, 192)
        self.Mixed_7a = block_d(768)
        self.Mixed_7b, self.Mixed_7c = block_e(1280, "avg"), block_e(2048, "max1")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames_to_rgb(frames).to(model_device(self))
        s = self.cfg.size
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False) * 2 - 1   # (N, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)                                                        # (N, 64, 73, 73)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)                 # (N, 192, 35, 35)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)                                                   # -> (N, 2048, 8, 8)
        return x.mean(dim=(2, 3))                                                        # pool3: (N, 2048)

    @torch.no_grad()
    def features(self, frames: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """(N, [C,] H, W) frames in [0, 1] -> (N, 2048) float32 on the CPU, in batches."""
        return torch.cat([self(frames[i:i + batch_size]).float().cpu() for i in range(0, len(frames), batch_size)])
