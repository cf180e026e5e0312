"""Building blocks of the imagen-compatible space-time UNet (echogen/nets/imagen3d.py).

Written for EchoGen from the published description of imagen-pytorch 1.22.2's Unet3D as modified by
the EchoDiffusion authors (plain dim_head**-0.5 dot-product attention). Module attribute names follow
the parameter names in the published checkpoints (merged.pt), so those load one-to-one; the wrappers
named `fn` only exist to reproduce those names.

Videos are (B, C, T, H, W) throughout.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from echogen.nets.kernels import frame_conv, temporal_conv


class LayerNormG(nn.Module):
    """LayerNorm with a gain only (no bias); eps 1e-5 in float32, 1e-3 otherwise. dim: normalised axis."""

    def __init__(self, dim: int, axis: int = -1):
        super().__init__()
        self.g = nn.Parameter(torch.ones(dim))
        self.axis = axis

    def forward(self, x):
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        if self.axis == -1:  # one fused kernel (docs/PERF.md change 11); same formula as below
            return F.layer_norm(x, x.shape[-1:], self.g, None, eps)
        var = torch.var(x, dim=self.axis, unbiased=False, keepdim=True)
        mean = x.mean(dim=self.axis, keepdim=True)
        g = self.g.reshape(-1, *([1] * (x.ndim - 2)))
        return (x - mean) * (var + eps).rsqrt() * g


class Fn(nn.Module):
    """Holds one module as `fn` (parameter naming of the checkpoints)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn


class SpaceTimeConv(nn.Module):
    """k x k conv per frame, then a causal temporal conv (left-padded by kt - 1) per pixel."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, kt: int = 3):
        super().__init__()
        self.spatial_conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)
        self.temporal_conv = nn.Conv1d(c_out, c_out, kt)
        self.kt = kt

    def forward(self, x, ignore_time: bool = False):
        sc = self.spatial_conv
        x = frame_conv(x, sc.weight, sc.bias, sc.padding[0])                 # (B, C, T, H, W)
        if ignore_time:
            return x
        return temporal_conv(x, self.temporal_conv.weight, self.temporal_conv.bias, centre=self.kt - 1)   # causal


class Block(nn.Module):
    """GroupNorm -> optional (scale + 1, shift) -> SiLU -> space-time conv."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.groupnorm = nn.GroupNorm(groups, c_in)
        self.project = SpaceTimeConv(c_in, c_out)

    def forward(self, x, scale_shift=None, ignore_time=False):
        x = self.groupnorm(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = torch.addcmul(shift, x, scale + 1)                             # x * (scale + 1) + shift
        # x is this block's own temporary: without autograd, SiLU can overwrite it
        return self.project(F.silu(x, inplace=not torch.is_grad_enabled()), ignore_time)


class FrameConv3d(nn.Conv3d):
    """A per-frame k x k conv stored as Conv3d with a (1, k, k) kernel (the checkpoints' layout), run by
    frame_conv."""

    def forward(self, x):
        return frame_conv(x, self.weight[:, :, 0], self.bias, self.padding[1])


def conv2d_as_3d(c_in, c_out, k, padding=0):
    return FrameConv3d(c_in, c_out, (1, k, k), padding=(0, padding, padding))


class GlobalContext(nn.Module):
    """Attention-pooled global descriptor -> per-channel sigmoid gate (B, C, 1, 1, 1)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        hidden = max(3, c_out // 2)
        self.to_k = conv2d_as_3d(c_in, 1, 1)
        self.net = nn.Sequential(nn.Conv3d(c_in, hidden, 1), nn.SiLU(), nn.Conv3d(hidden, c_out, 1), nn.Sigmoid())

    def forward(self, x):
        w = self.to_k(x).flatten(2).softmax(dim=-1)                          # (B, 1, N)
        pooled = torch.einsum("bin,bcn->bci", w, x.flatten(2))               # (B, C, 1)
        return self.net(pooled[..., None, None])


class CrossAttention(nn.Module):
    """Multi-head attention from video tokens to the conditioning tokens, with a learned null key/value."""

    def __init__(self, dim: int, context_dim: int, heads: int = 8, dim_head: int = 64):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.norm = LayerNormG(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), LayerNormG(dim))

    def forward(self, x, context):                                             # x (B, N, C), context (B, M, Cc)
        b, h = x.shape[0], self.heads
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = (z.reshape(b, z.shape[1], h, -1).transpose(1, 2) for z in (q, k, v))   # (B, h, n, d)
        nk, nv = (n.reshape(1, 1, 1, -1).expand(b, h, 1, -1) for n in self.null_kv.unbind(0))
        k, v = torch.cat([nk, k], dim=2), torch.cat([nv, v], dim=2)
        sim = (q * self.scale) @ k.transpose(-1, -2)
        attn = sim.softmax(dim=-1, dtype=torch.float32).to(v.dtype)
        out = (attn @ v).transpose(1, 2).reshape(b, x.shape[1], -1)
        return self.to_out(out)


class DynamicPositionBias(nn.Module):
    """Relative position bias from an MLP over the offset i - j: (heads, n, n)."""

    def __init__(self, dim: int, heads: int, depth: int = 2):
        super().__init__()
        self.mlp = nn.ModuleList([nn.Sequential(nn.Linear(1, dim), LayerNormG(dim), nn.SiLU())])
        for _ in range(max(depth - 1, 0)):
            self.mlp.append(nn.Sequential(nn.Linear(dim, dim), LayerNormG(dim), nn.SiLU()))
        self.mlp.append(nn.Linear(dim, heads))

    def forward(self, n: int, device, dtype):
        pos = torch.arange(-n + 1, n, device=device, dtype=dtype)[:, None]   # offsets -(n-1) .. n-1
        for layer in self.mlp:
            pos = layer(pos)
        i = torch.arange(n, device=device)
        idx = i[:, None] - i[None, :] + n - 1
        return pos[idx].permute(2, 0, 1)


class Attention(nn.Module):
    """Self-attention with multi-query keys/values (one head of k, v shared by all query heads), a learned
    null key/value, optional causal mask and relative position bias. Output LayerNorm gain starts at 0
    when init_zero (the temporal attention starts as the identity inside its residual)."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, causal: bool = False,
                 rel_pos_bias: bool = False, rel_pos_depth: int = 2, init_zero: bool = False):
        super().__init__()
        self.heads, self.scale, self.causal = heads, dim_head ** -0.5, causal
        self.rel_pos_bias = DynamicPositionBias(dim, heads, rel_pos_depth) if rel_pos_bias else None
        self.norm = LayerNormG(dim)
        self.null_attn_bias = nn.Parameter(torch.randn(heads))
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * 2, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False), LayerNormG(dim))
        if init_zero:
            nn.init.zeros_(self.to_out[-1].g)

    def forward(self, x):                                                      # (B, N, C)
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x)                                                       # (B, n, h*d)
        k, v = self.to_kv(x).chunk(2, dim=-1)                                  # (B, n, d)
        nk, nv = (z.reshape(1, 1, -1).expand(b, 1, -1) for z in self.null_kv.unbind(0))
        k, v = torch.cat([nk, k], dim=1), torch.cat([nv, v], dim=1)            # (B, 1 + n, d)
        if self.rel_pos_bias is None and not self.causal:
            # plain attention (the bottleneck's, over T*H*W tokens): a fused kernel, no (n x n) matrix in memory
            q = q.reshape(b, n, self.heads, -1).transpose(1, 2)                # (B, h, n, d)
            out = F.scaled_dot_product_attention(q, k[:, None].expand(-1, self.heads, -1, -1),
                                                 v[:, None].expand(-1, self.heads, -1, -1), scale=self.scale)
            return self.to_out(out.transpose(1, 2).reshape(b, n, -1))
        # Multi-query keys: keep the queries as (B, n*h, d) rows (token-major, no transpose copy), so both
        # products are plain batched GEMMs against the one (B, 1 + n, d) key/value head.
        q = q.reshape(b, n * self.heads, -1)                                   # a view: row (i, head)
        bias = torch.zeros((), dtype=q.dtype, device=q.device)
        if self.rel_pos_bias is not None:
            rel = self.rel_pos_bias(n, x.device, q.dtype)                      # (h, n, n)
            null = self.null_attn_bias.to(q.dtype).reshape(-1, 1, 1).expand(-1, n, 1)
            bias = torch.cat([null, rel], dim=-1).transpose(0, 1).reshape(n * self.heads, n + 1)
        sim = torch.baddbmm(bias.expand(b, n * self.heads, n + 1), q, k.transpose(1, 2), alpha=self.scale)  # (B, n*h, 1+n)
        if self.causal:  # query i sees the null key and keys 0..i
            mask = torch.ones(n, n + 1, dtype=torch.bool, device=x.device).triu(2)
            sim = sim.masked_fill(mask.repeat_interleave(self.heads, dim=0), -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1)
        out = torch.bmm(attn, v).reshape(b, n, -1)                            # (B, n, h*d)
        return self.to_out(out)


class TemporalAttention(Fn):
    """Residual causal attention over frames, per pixel (checkpoint names: fn.fn.*)."""
    CHUNK = 4096

    def __init__(self, dim, heads, dim_head, rel_pos_depth=2):
        super().__init__(Fn(Attention(dim, heads, dim_head, causal=True, rel_pos_bias=True,
                                      rel_pos_depth=rel_pos_depth, init_zero=True)))

    def forward(self, x):
        b, c, t, h, w = x.shape
        # (B, C, T, H, W) -> (B*H*W, T, C) and back, each as a copy of whole H*W rows plus a 2-D transpose
        # (torch copies those blockwise): 2-3x faster than one 5-d permute copy (docs/PERF.md change 14)
        y = x.transpose(1, 2).reshape(b, t * c, h * w).transpose(1, 2).reshape(b * h * w, t, c)
        # one sequence per pixel: in chunks, so a 112x112 level never holds all (t x t) maps at once
        y = torch.cat([part + self.fn.fn(part) for part in y.split(self.CHUNK)])
        y = y.view(b, h * w, t * c).transpose(1, 2).reshape(b, t, c, h, w)
        return y.transpose(1, 2).contiguous()


class SpaceTimeAttention(Fn):
    """Residual attention over all (T, H, W) positions (the bottleneck's attend_at_middle)."""

    def __init__(self, dim, heads, dim_head):
        super().__init__(Fn(Attention(dim, heads, dim_head)))

    def forward(self, x):
        b, c, t, h, w = x.shape
        y = x.flatten(2).transpose(1, 2)
        y = y + self.fn.fn(y)
        return y.transpose(1, 2).reshape(b, c, t, h, w)


class TemporalPEG(Fn):
    """Residual depthwise causal conv over 3 frames (positional encoding generator)."""

    def __init__(self, dim: int):
        super().__init__(nn.Sequential(nn.Identity(), nn.Conv3d(dim, dim, (3, 1, 1), groups=dim)))

    def forward(self, x):
        # x + bias + sum_s w[kt-1-s] * x[t-s], elementwise: the grouped Conv3d takes oneDNN's slow path
        conv = self.fn[1]
        kt, t = conv.weight.shape[2], x.shape[2]
        w = conv.weight.reshape(-1, kt).t()[:, :, None, None, None]          # (kt, C, 1, 1, 1)
        y = torch.addcmul(x + conv.bias[:, None, None, None], x, w[kt - 1])
        for s in range(1, min(kt, t)):
            y[:, :, s:] += x[:, :, :t - s] * w[kt - 1 - s]
        return y


class ResnetBlock(nn.Module):
    """block1 -> [cross-attention to the conditioning tokens] -> block2 (noise-level scale/shift)
    -> [global-context gate] + 1x1 skip."""

    def __init__(self, c_in, c_out, *, time_dim, groups, cond_dim=None, heads=8, dim_head=64, gca=False):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, c_out * 2))
        self.cross_attn = Fn(CrossAttention(c_out, cond_dim, heads, dim_head)) if cond_dim else None
        self.block1 = Block(c_in, c_out, groups)
        self.block2 = Block(c_out, c_out, groups)
        self.gca = GlobalContext(c_out, c_out) if gca else None
        self.res_conv = conv2d_as_3d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x, t, c=None, ignore_time=False):
        scale_shift = self.time_mlp(t)[:, :, None, None, None].chunk(2, dim=1)
        h = self.block1(x, ignore_time=ignore_time)
        if self.cross_attn is not None:
            b, ch, f, hh, ww = h.shape
            tok = h.flatten(2).transpose(1, 2)
            h = h + self.cross_attn.fn(tok, c).transpose(1, 2).reshape(b, ch, f, hh, ww)
        h = self.block2(h, scale_shift=scale_shift, ignore_time=ignore_time)
        if self.gca is not None:
            h = h * self.gca(h)
        return h + (x if self.res_conv is None else self.res_conv(x))


class Downsample(nn.Sequential):
    """Space-to-depth (2 x 2 pixels -> 4x channels, channel-major) then a 1x1 conv."""

    def __init__(self, c_in, c_out):
        super().__init__(nn.Identity(), conv2d_as_3d(c_in * 4, c_out, 1))

    def forward(self, x):
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t, h // 2, 2, w // 2, 2).permute(0, 1, 4, 6, 2, 3, 5).reshape(b, c * 4, t, h // 2, w // 2)
        return self[1](x)


class Parallel(nn.Module):
    def __init__(self, *fns):
        super().__init__()
        self.fns = nn.ModuleList(fns)

    def forward(self, x):
        return sum(f(x) for f in self.fns)


class PixelShuffleUpsample(nn.Module):
    """1x1 conv to 4x channels -> SiLU -> per-frame pixel shuffle (2x in H and W)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.net = nn.Sequential(conv2d_as_3d(c_in, c_out * 4, 1), nn.SiLU())

    def forward(self, x):
        y = self.net(x)
        b, c4, t, h, w = y.shape
        y = y.reshape(b, c4 // 4, 2, 2, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
        return y.reshape(b, c4 // 4, t, h * 2, w * 2)


def learned_sinusoidal(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1 + 2 * len(weights)): [x, sin(2 pi x w), cos(2 pi x w)]."""
    f = x[:, None] * weights[None, :] * 2 * math.pi
    return torch.cat([x[:, None], f.sin(), f.cos()], dim=-1)


class LearnedSinusoidal(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x):
        return learned_sinusoidal(x, self.weights)
