"""The per-shape kernel choices of echogen/nets/kernels.py (docs/PERF.md changes 11-12), timed op by op:
frame conv as Conv3d (1,k,k) vs Conv2d over frames, temporal conv as shifted GEMMs vs Conv2d (kt,1).

    .venv/bin/python bench/kernel_micro.py [--default-malloc] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from conv_micro import t  # noqa: E402  (bench/ is on the path when run as a script)


def ms(f, n=9):
    """Median milliseconds of f over n calls after two warm-up calls, without autograd."""
    with torch.no_grad():
        f()
        return t(f, n) * 1e3       # t: one more warm-up call, then the median of n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--default-malloc", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from echogen.device import tune_cpu_malloc
    tuned = False if a.default_malloc else tune_cpu_malloc()
    from echogen.nets import kernels
    print(f"# torch {torch.__version__}, {a.threads} thread(s), malloc tuned: {tuned}")
    print("| B,C,T,S | 3x3: Conv2d over frames ms | Conv3d (1,3,3) ms | temporal: GEMMs ms | Conv2d (kt,1) ms |")
    print("|---|---|---|---|---|")
    for b, c, t, s in [(2, 64, 4, 112), (2, 64, 4, 56), (2, 128, 4, 28), (2, 256, 4, 14), (2, 256, 4, 7),
                       (2, 64, 16, 112), (2, 64, 16, 56), (2, 128, 16, 28), (2, 256, 16, 14), (2, 512, 16, 7)]:
        x = torch.randn(b, c, t, s, s)
        w, bias, wt = torch.randn(c, c, 3, 3), torch.randn(c), torch.randn(c, c, 3)
        conv2d = ms(lambda: F.conv2d(x.transpose(1, 2).reshape(b * t, c, s, s), w, bias, padding=1)
                    .reshape(b, t, c, s, s).transpose(1, 2).contiguous())
        conv3d = ms(lambda: F.conv3d(x, w[:, :, None], bias, padding=(0, 1, 1)))
        saved = kernels.PADDED_COPY_MAX, kernels.malloc_tuned
        kernels.PADDED_COPY_MAX, kernels.malloc_tuned = 0, (lambda: False)   # force the GEMM path
        gemm = ms(lambda: kernels.temporal_conv(x, wt, bias, centre=2))
        kernels.PADDED_COPY_MAX, kernels.malloc_tuned = saved
        tconv = ms(lambda: F.conv2d(F.pad(x.reshape(b, c, t, s * s), (0, 0, 2, 0)), wt[..., None], bias))
        print(f"| {b},{c},{t},{s} | {conv2d:.1f} | {conv3d:.1f} | {gemm:.1f} | {tconv:.1f} |", flush=True)


if __name__ == "__main__":
    main()
