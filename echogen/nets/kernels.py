"""Convolutions of the space-time UNets written as the kernels that are fast on the CPU (docs/PERF.md
change 11). Same maths as the nn layers whose parameters they take; videos are (B, C, T, H, W)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from echogen.device import malloc_tuned

# Largest padded input (bytes) that temporal_conv copies for the Conv2d path while glibc's malloc is left
# as it is (echogen.device.tune_cpu_malloc not run): larger blocks are fresh mmaps, page-faulted each call.
PADDED_COPY_MAX = 32 << 20


def pointwise(xv: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """bias + W @ x per batch element: xv (B, C, N), weight (C_out, C) -> (B, C_out, N). A batched GEMM
    against the expanded weight (matmul would transpose-copy x and the result for B > 1)."""
    b, _, n = xv.shape
    wb = weight.expand(b, -1, -1)
    return torch.bmm(wb, xv) if bias is None else torch.baddbmm(bias[:, None].expand(b, -1, n), wb, xv)


def temporal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, centre: int) -> torch.Tensor:
    """Conv over frames, per pixel, zero-padded: y[t] = bias + sum_k W[..., k] @ x[t + k - centre].
    weight (C_out, C, kt) (a Conv1d's; a (kt, 1, 1) Conv3d's squeezed). centre = kt - 1 is causal (left
    padding kt - 1), centre = kt // 2 is 'same' padding. Run as kt matrix products over the free view
    (B, C, T*H*W), each shifted by whole frames and accumulated in place: no padded copy of the input.
    Clips of 8 or more frames take oneDNN's Conv2d with a (kt, 1) kernel over the view (B, C, T, H*W)
    instead, which reads the input once: centred, with the conv's own padding; causal, over a padded copy,
    unless that copy would be a fresh mmap (malloc not tuned, copy > PADDED_COPY_MAX). Measured per
    shape: docs/PERF.md changes 1 and 11."""
    b, c, t, h, w = x.shape
    kt, hw = weight.shape[-1], h * w
    if torch.is_autocast_enabled(x.device.type):
        # autocast leaves in-place products alone: give every GEMM below one dtype, autocast's
        dt = torch.get_autocast_dtype(x.device.type)
        x, weight, bias = x.to(dt), weight.to(dt), None if bias is None else bias.to(dt)
    if t >= 8 and 2 * centre == kt - 1:   # centred: no copy
        return F.conv2d(x.reshape(b, c, t, hw), weight[..., None], bias, padding=(centre, 0)).view(b, -1, t, h, w)
    if t >= 8 and (malloc_tuned() or b * c * (t + kt - 1) * hw * x.element_size() <= PADDED_COPY_MAX):
        pad = (0, 0, centre, kt - 1 - centre)
        y = F.conv2d(F.pad(x.reshape(b, c, t, hw), pad), weight[..., None], bias)
        return y.view(b, -1, t, h, w)
    xv = x.reshape(b, c, t, hw)
    y = pointwise(xv.reshape(b, c, -1), weight[:, :, centre], bias).view(b, -1, t, hw)   # (B, C_out, T, HW)
    for k in range(kt):
        d = k - centre                                                       # tap k reads frame t + d
        if d == 0 or abs(d) >= t:
            continue
        dst, src = (y[:, :, -d:], xv[:, :, :t + d]) if d < 0 else (y[:, :, :t - d], xv[:, :, d:])
        dst.reshape(b, -1, (t - abs(d)) * hw).baddbmm_(weight[:, :, k].expand(b, -1, -1), src.reshape(b, c, -1))
    return y.view(b, -1, t, h, w)


def frame_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Per-frame k x k conv of x (B, C, T, H, W); weight (C_out, C, k, k). Which kernel runs depends on the
    shape (measured): 1 x 1 -> one matrix product; a wide stem (k > 3 or few input channels) -> Conv2d over
    the B*T frames (oneDNN's Conv3d path takes ~50x longer for a 15 x 15 stem at batch 1); otherwise Conv3d
    with a (1, k, k) kernel straight on the 5-d tensor (no transposes)."""
    b, c, t, h, w = x.shape
    co, k = weight.shape[0], weight.shape[-1]
    if k == 1:
        return pointwise(x.reshape(b, c, -1), weight.reshape(co, c), bias).view(b, co, t, h, w)
    if k > 3 or c < 16:
        y = F.conv2d(x.transpose(1, 2).reshape(b * t, c, h, w), weight, bias, padding=padding)
        return y.reshape(b, t, co, h, w).transpose(1, 2)
    return F.conv3d(x, weight[:, :, None], bias, padding=(0, padding, padding))
