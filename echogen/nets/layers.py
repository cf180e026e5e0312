"""Building blocks of the space-time factorised UNet. Tensors are videos (B, C, T, H, W).

A "space-time" convolution is a per-frame spatial conv (kernel (1, k, k)) followed by a temporal conv
(kernel (kt, 1, 1)) that starts as an exact identity, so a freshly initialised video model computes
the same thing as its per-frame image model. `ignore_time=True` skips every temporal layer: the
network then treats the T frames as independent images (image/video joint training).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from echogen.nets.kernels import temporal_conv


def sinusoidal(x: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) scalars -> (B, dim) sin/cos features of scale * x."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = scale * x.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class MLPEmbedding(nn.Module):
    """Scalar (noise level or augmentation level) -> embedding vector."""

    def __init__(self, dim: int, emb_dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(x, self.dim))


class TemporalConv(nn.Module):
    """Conv over frames only, kernel (kt, 1, 1), centred ('same') padding, identity at init."""

    def __init__(self, ch: int, kt: int = 3):
        super().__init__()
        assert kt % 2 == 1, "temporal kernel must be odd for a centred identity"
        self.conv = nn.Conv3d(ch, ch, (kt, 1, 1), padding=(kt // 2, 0, 0))
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for c in range(ch):  # Dirac at the centre tap: output frame t = input frame t
                self.conv.weight[c, c, kt // 2, 0, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same maths as Conv3d with a (kt, 1, 1) kernel; from 8 frames a 2D conv over the free view
        # (B, C, T, H*W), 3-4x faster than CPU Conv3d in training (docs/PERF.md changes 1 and 11)
        k = self.conv.weight.shape[2]
        return temporal_conv(x, self.conv.weight[..., 0, 0], self.conv.bias, centre=k // 2)


class SpaceTimeConv(nn.Module):
    """Per-frame spatial conv then temporal conv."""

    def __init__(self, cin: int, cout: int, k: int = 3, kt: int = 3):
        super().__init__()
        self.spatial = nn.Conv3d(cin, cout, (1, k, k), padding=(0, k // 2, k // 2))
        self.temporal = TemporalConv(cout, kt) if kt > 1 else None

    def forward(self, x: torch.Tensor, ignore_time: bool = False) -> torch.Tensor:
        x = self.spatial(x)
        if self.temporal is not None and not ignore_time:
            x = self.temporal(x)
        return x


def zero_(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """GN -> SiLU -> conv -> scale/shift from the embedding -> GN -> SiLU -> conv, plus skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, kt: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = SpaceTimeConv(cin, cout, kt=kt)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = SpaceTimeConv(cout, cout, kt=kt)
        zero_(self.conv2.spatial)  # residual branch starts at zero
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb, ignore_time=False):
        h = self.conv1(F.silu(self.norm1(x)), ignore_time)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.drop(h), ignore_time)
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over token sequences (N, L, C) with an optional additive bias."""

    def __init__(self, dim: int, heads: int, head_dim: int, ctx_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.q = nn.Linear(dim, inner, bias=False)
        self.kv = nn.Linear(ctx_dim or dim, 2 * inner, bias=False)
        self.out = zero_(nn.Linear(inner, dim))

    def forward(self, x, ctx=None, bias=None):
        ctx = x if ctx is None else ctx
        n, l, _ = x.shape
        q = self.q(x).view(n, l, self.heads, self.head_dim).transpose(1, 2)          # (N, h, L, d)
        k, v = self.kv(ctx).view(n, ctx.shape[1], 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)                   # (N, h, L, d)
        return self.out(o.transpose(1, 2).reshape(n, l, -1))


class SpatialAttention(nn.Module):
    """Self-attention among the H*W positions of each frame."""

    def __init__(self, ch, heads, head_dim, groups):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, ch), ch)
        self.attn = Attention(ch, heads, head_dim)

    def forward(self, x, **_):
        b, c, t, h, w = x.shape
        tok = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)            # (B*T, HW, C)
        out = self.attn(tok).view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + out


class TemporalAttention(nn.Module):
    """Self-attention among the T frames at each pixel, with a learned relative-position bias."""

    def __init__(self, ch, heads, head_dim, groups, max_rel: int = 64):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, ch), ch)
        self.attn = Attention(ch, heads, head_dim)
        self.max_rel = max_rel
        self.rel_bias = nn.Embedding(2 * max_rel + 1, heads)
        nn.init.zeros_(self.rel_bias.weight)

    def forward(self, x, ignore_time=False, **_):
        if ignore_time:
            return x
        b, c, t, h, w = x.shape
        pos = torch.arange(t, device=x.device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_rel, self.max_rel) + self.max_rel
        bias = self.rel_bias(rel).permute(2, 0, 1).to(x.dtype)                          # (heads, T, T)
        tok = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)             # (B*H*W, T, C)
        out = self.attn(tok, bias=bias).view(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return x + out


class CrossAttention(nn.Module):
    """Every position attends to [learned null token, EF token] (two keys, so softmax is not trivial)."""

    def __init__(self, ch, ctx_dim, heads, head_dim, groups):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, ch), ch)
        self.attn = Attention(ch, heads, head_dim, ctx_dim=ctx_dim)
        self.null = nn.Parameter(torch.randn(1, 1, ctx_dim) * 0.02)

    def forward(self, x, ctx=None, **_):
        b, c, t, h, w = x.shape
        ctx = torch.cat([self.null.expand(b, 1, -1).to(ctx.dtype), ctx], dim=1)       # (B, 2, ctx_dim)
        tok = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b, t * h * w, c)             # (B, THW, C)
        out = self.attn(tok, ctx=ctx).view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + out


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=(x.shape[2], *size), mode="nearest"))
