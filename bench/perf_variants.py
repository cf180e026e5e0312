"""Proposed speed changes to EchoGen's UNet, measured on a COPY of the network (echogen/nets/unet.py and
echogen/nets/layers.py are not edited): each variant patches module instances of a deep copy, is checked
against the baseline's output, and is timed round-robin with it so machine load hits all alike.

    .venv/bin/python bench/perf_variants.py --preset demo [--stages base,spatial] [--threads 1]
        [--variants temporal_conv2d,channels_last,compile] [--repeats 5]

Variants
  temporal_conv2d  TemporalConv's Conv3d (kt,1,1) lands on aten::slow_conv3d (im2col) on the CPU; the same
                   weights as a Conv2d with kernel (kt,1) over (B, C, T, H*W) run on oneDNN. No copy: a view.
  spatial_conv2d   temporal_conv2d plus every (1,k,k) / 1x1x1 Conv3d as a Conv2d over B*T frames.
  imagen_temporal_conv2d  (paper presets' imagen3d network) its causal temporal Conv1d over permuted
                   (B*H*W, C, T) copies as a Conv2d (kt,1) over the view (B, C, T, H*W).
  cross_attn_2key  EF cross-attention with its 2 keys folded into the q / out projections (exact).
  channels_last    the whole network and its input in torch.channels_last_3d.
  compile          torch.compile (inductor) of temporal_conv2d's network: fuses GroupNorm/SiLU/scale-shift.
  threads2         baseline at 2 threads instead of --threads (interleaved with the others).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from echogen.eval.bench import stage_inputs  # noqa: E402
from echogen.diffusion.cascade import build_denoiser  # noqa: E402
from echogen.config import get_preset  # noqa: E402
from echogen.nets.layers import TemporalConv  # noqa: E402


def _temporal_conv2d_forward(self, x):
    b, c, t, h, w = x.shape
    wgt = self.conv.weight[..., 0]                                  # (C, C, kt, 1)
    y = F.conv2d(x.reshape(b, c, t, h * w), wgt, self.conv.bias, padding=(wgt.shape[2] // 2, 0))
    return y.reshape(b, -1, t, h, w)


def temporal_conv2d(net):
    n = 0
    for m in net.modules():
        if isinstance(m, TemporalConv):
            m.forward = types.MethodType(_temporal_conv2d_forward, m)
            n += 1
    return net


class Conv3dAs2d(torch.nn.Module):
    """A Conv3d with kernel (1, k, k) run as a Conv2d over the B*T frames (same weights). torch's CPU
    dispatcher sends batch-1 Conv3d with N*C*T*H <= 20480 (and every 1x1x1 conv at 1 thread) to the
    im2col path aten::slow_conv3d; as a Conv2d of batch B*T it goes to oneDNN. Costs two transposes."""

    def __init__(self, conv: torch.nn.Conv3d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        b, c, t, h, w = x.shape
        cv = self.conv
        y = F.conv2d(x.transpose(1, 2).reshape(b * t, c, h, w), cv.weight[:, :, 0], cv.bias,
                     stride=cv.stride[1:], padding=cv.padding[1:])
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


def spatial_conv2d(net):
    """temporal_conv2d plus every (1, k, k) Conv3d (stem, resblocks, skips, down/upsample, out) as Conv2d."""
    temporal_conv2d(net)
    for parent in list(net.modules()):
        if isinstance(parent, TemporalConv):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Conv3d) and child.kernel_size[0] == 1:
                setattr(parent, name, Conv3dAs2d(child))
    return net


def _cross_attn_2key_forward(self, x, ctx=None, **_):
    """CrossAttention with its 2 keys (null token, EF token) folded into the projections: same maths.
    logits = x . (W_q,h^T k_j)  and  out = sum_j a_j (W_o,h v_j) + b, so the per-token work is C x 2h
    twice instead of C x (h d) twice (the q and out projections over all T*H*W tokens)."""
    b, c, t, h, w = x.shape
    at = self.attn
    H, d = at.heads, at.head_dim
    ctx = torch.cat([self.null.expand(b, 1, -1).to(ctx.dtype), ctx], dim=1)            # (B, 2, ctx_dim)
    k, v = at.kv(ctx).view(b, 2, 2, H, d).unbind(2)                                  # (B, 2, H, d) each
    wq = at.q.weight.view(H, d, c)                                                   # (H, d, C)
    M = torch.einsum("hdc,bjhd->bchj", wq, k).reshape(b, c, H * 2) * d ** -0.5      # (B, C, 2H)
    wo = at.out.weight.view(c, H, d)                                                 # (C, H, d)
    P = torch.einsum("chd,bjhd->bhjc", wo, v).reshape(b, H * 2, c)                   # (B, 2H, C)
    tok = self.norm(x).flatten(2).transpose(1, 2)                                    # (B, THW, C)
    a = torch.bmm(tok, M).view(b, -1, H, 2).softmax(-1).view(b, -1, H * 2)           # (B, THW, 2H)
    out = torch.baddbmm(at.out.bias.view(1, 1, c), a, P)                             # (B, THW, C)
    return x + out.transpose(1, 2).view(b, c, t, h, w)


def cross_attn_2key(net):
    from echogen.nets.layers import CrossAttention
    for m in net.modules():
        if isinstance(m, CrossAttention):
            m.forward = types.MethodType(_cross_attn_2key_forward, m)
    return net


def _imagen_stconv_forward(self, x, ignore_time: bool = False):
    """echogen.nets.imagen SpaceTimeConv with its causal temporal Conv1d over (B*H*W, C, T) (two permute copies)
    run instead as a Conv2d with kernel (kt, 1) over the free view (B, C, T, H*W), left-padded kt - 1."""
    b, _, t, h, w = x.shape
    x = self.spatial_conv(x.transpose(1, 2).reshape(b * t, -1, h, w))
    x = x.reshape(b, t, -1, h, w).transpose(1, 2)
    if ignore_time:
        return x
    c = x.shape[1]
    y = F.pad(x.reshape(b, c, t, h * w), (0, 0, self.kt - 1, 0))
    y = F.conv2d(y, self.temporal_conv.weight[..., None], self.temporal_conv.bias)
    return y.reshape(b, c, t, h, w)


def imagen_temporal_conv2d(net):
    from echogen.nets.imagen.layers import SpaceTimeConv as ImagenSTConv
    for m in net.modules():
        if isinstance(m, ImagenSTConv):
            m.forward = types.MethodType(_imagen_stconv_forward, m)
    return net


def perturb(net, seed=0):
    """Random weights everywhere (fresh nets have zero-initialised branches, which would hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--stages", default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="temporal_conv2d,channels_last,threads2")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = get_preset(a.preset)
    names = a.stages.split(",") if a.stages else cfg.stage_names
    variants = a.variants.split(",")
    print(f"# {a.preset} | torch {torch.__version__} | threads {a.threads} | load {os.getloadavg()} | "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')} | {' '.join(sys.argv)}", flush=True)
    print("| stage | variant | forward s (median) | vs baseline | max abs diff |\n|---|---|---|---|---|", flush=True)
    for st in cfg.stages:
        if st.name not in names:
            continue
        torch.manual_seed(0)
        base = perturb(build_denoiser(st, cfg.diffusion).net.eval())
        b = 2 if st.guidance != 1 else 1                             # CFG batch as sampled
        inp = stage_inputs(st, b, a.frames)
        x, cond = inp["x"], inp["cond"]
        c_noise = torch.zeros(b)
        nets = {"baseline": (base, x, a.threads)}
        if "temporal_conv2d" in variants:
            nets["temporal_conv2d"] = (temporal_conv2d(copy.deepcopy(base)), x, a.threads)
        if "imagen_temporal_conv2d" in variants:
            nets["imagen_temporal_conv2d"] = (imagen_temporal_conv2d(copy.deepcopy(base)), x, a.threads)
        if "cross_attn_2key" in variants:
            nets["cross_attn_2key"] = (cross_attn_2key(copy.deepcopy(base)), x, a.threads)
        if "spatial_conv2d" in variants:
            nets["spatial_conv2d"] = (spatial_conv2d(copy.deepcopy(base)), x, a.threads)
        if "channels_last" in variants:
            nets["channels_last"] = (copy.deepcopy(base).to(memory_format=torch.channels_last_3d),
                                     x.contiguous(memory_format=torch.channels_last_3d), a.threads)
        if "compile" in variants:
            nets["compile"] = (torch.compile(temporal_conv2d(copy.deepcopy(base))), x, a.threads)
        if "threads2" in variants:
            nets["threads2"] = (base, x, 2)
        with torch.no_grad():
            ref = base(x, c_noise, **cond)
            diffs = {}
            for k, (net, xi, th) in nets.items():
                t0 = time.perf_counter()
                diffs[k] = (net(xi, c_noise, **cond) - ref).abs().max().item()   # also the warm-up
                if k == "compile":
                    print(f"  (compile + first call: {time.perf_counter() - t0:.1f} s)", flush=True)
            times = {k: [] for k in nets}
            for _ in range(a.repeats):
                for k, (net, xi, th) in nets.items():
                    torch.set_num_threads(th)
                    t0 = time.perf_counter()
                    net(xi, c_noise, **cond)
                    times[k].append(time.perf_counter() - t0)
                torch.set_num_threads(a.threads)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in nets:
            print(f"| {st.name} {b}x{st.frames if a.frames is None else a.frames}x{st.size}² | {k} | {med[k]:.4f} "
                  f"| {med[k] / med['baseline']:.2f}x | {diffs[k]:.1e} |", flush=True)
    print(f"# load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
