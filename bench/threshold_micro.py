"""Dynamic thresholding's percentile: torch.quantile (a full sort) vs torch.kthvalue (selection), same result.

    .venv/bin/python bench/threshold_micro.py
"""
import statistics
import time

import torch


def quantile_kth(a: torch.Tensor, p: float) -> torch.Tensor:
    """torch.quantile(a, p, dim=1) (linear interpolation) from two order statistics, per row of (B, N)."""
    n = a.shape[1]
    pos = p * (n - 1)
    lo = int(pos)
    frac = pos - lo
    v_lo = a.kthvalue(lo + 1, dim=1).values
    if frac == 0 or lo + 1 >= n:
        return v_lo
    v_hi = a.kthvalue(lo + 2, dim=1).values
    return v_lo + (v_hi - v_lo) * frac


def t(fn, r=7):
    fn()
    out = []
    for _ in range(r):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| D shape | quantile ms | kthvalue x2 ms | max abs diff |\n|---|---|---|---|")
    for shape in [(1, 1, 16, 28, 28), (1, 1, 16, 112, 112), (1, 1, 32, 112, 112), (1, 1, 64, 112, 112)]:
        a = torch.randn(shape).flatten(1).abs()
        q = lambda: torch.quantile(a, 0.95, dim=1)  # noqa: E731
        k = lambda: quantile_kth(a, 0.95)  # noqa: E731
        print(f"| {shape} | {1e3 * t(q):.1f} | {1e3 * t(k):.1f} | {(q() - k()).abs().max().item():.1e} |")
