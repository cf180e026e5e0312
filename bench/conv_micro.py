"""Micro-benchmark of the UNet's convolution shapes on the CPU: which backend each Conv3d lands on,
and what reshaping to Conv2d / Conv1d or channels_last_3d would save. Same weights, outputs checked.

    .venv/bin/python bench/conv_micro.py [--threads 1] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def t(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def backend(fn):
    with torch.profiler.profile() as p:
        fn()
    names = [e.key for e in p.key_averages() if e.key in ("aten::mkldnn_convolution", "aten::slow_conv3d_forward",
                                                           "aten::_slow_conv2d_forward", "aten::conv_depthwise3d")]
    return ",".join(n.replace("aten::", "") for n in names) or "?"


def spatial_as_conv2d(x, w, b):
    """(B,C,T,H,W) conv with kernel (1,k,k) as a Conv2d over B*T frames."""
    B, C, T, H, W = x.shape
    y = F.conv2d(x.transpose(1, 2).reshape(B * T, C, H, W), w[:, :, 0], b, padding=w.shape[-1] // 2)
    return y.reshape(B, T, -1, H, W).transpose(1, 2)


def temporal_as_conv2d(x, w, b):
    """(B,C,T,H,W) conv with kernel (kt,1,1) as a Conv2d with kernel (kt,1) over (T, H*W)."""
    B, C, T, H, W = x.shape
    y = F.conv2d(x.reshape(B, C, T, H * W), w[..., 0], b, padding=(w.shape[2] // 2, 0))
    return y.reshape(B, -1, T, H, W)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cases = [  # (name, B, C, T, H, W): demo base level 0 (CFG batch 2), demo SR stage level 0, paper 1SCM level 0
        ("demo-base L0", 2, 32, 16, 28, 28),
        ("demo-spatial L0", 1, 16, 16, 112, 112),
        ("demo-temporal L0", 1, 16, 32, 112, 112),
        ("1SCM L0", 2, 64, 16, 112, 112),
    ]
    print(f"threads {a.threads}, torch {torch.__version__}")
    print("| shape (B,C,T,H,W) | op | Conv3d backend | Conv3d ms | reshaped ms | channels_last_3d ms | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for name, B, C, T, H, W in cases:
            x = torch.randn(B, C, T, H, W)
            xcl = x.contiguous(memory_format=torch.channels_last_3d)
            for op, k, pad, alt in [("spatial (1,3,3)", (1, 3, 3), (0, 1, 1), spatial_as_conv2d),
                                    ("temporal (3,1,1)", (3, 1, 1), (1, 0, 0), temporal_as_conv2d)]:
                conv = torch.nn.Conv3d(C, C, k, padding=pad)
                f3 = lambda: conv(x)  # noqa: E731
                fa = lambda: alt(x, conv.weight, conv.bias)  # noqa: E731
                ccl = torch.nn.Conv3d(C, C, k, padding=pad).to(memory_format=torch.channels_last_3d)
                ccl.load_state_dict(conv.state_dict())
                fcl = lambda: ccl(xcl)  # noqa: E731
                diff = (f3() - fa()).abs().max().item()
                print(f"| {name} {B, C, T, H, W} | {op} | {backend(f3)} | {1e3 * t(f3, a.repeats):.1f} "
                      f"| {1e3 * t(fa, a.repeats):.1f} ({backend(fa)}) | {1e3 * t(fcl, a.repeats):.1f} ({backend(fcl)}) "
                      f"| {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
