"""Classifier-free guidance: a property of the denoiser call, beside the preconditioning (the samplers
know nothing of conditioning). Takes a scalar sigma or one sigma per sample."""
from __future__ import annotations

import torch

from echogen.diffusion.edm import append_dims


def row_quantile(a: torch.Tensor, p: float) -> torch.Tensor:
    """torch.quantile(a, p, dim=1) with linear interpolation, for (B, N), from two order statistics:
    same values, 4-7x faster on video-sized rows (no full sort; docs/PERF.md)."""
    n = a.shape[1]
    pos = torch.tensor(p, dtype=a.dtype) * (n - 1)      # rank in a's dtype, as torch.quantile computes it
    lo = int(pos)
    frac = pos - lo
    v_lo = a.kthvalue(lo + 1, dim=1).values
    if frac == 0 or lo + 1 >= n:
        return v_lo
    return torch.lerp(v_lo, a.kthvalue(lo + 2, dim=1).values, frac.to(a.device))


class GuidedDenoiser:
    """Classifier-free guidance with cond and uncond in ONE batch, plus dynamic thresholding.

    D = D_uncond + w (D_cond - D_uncond); w = 1 skips the uncond half. The uncond half sets the
    networks' `ef_keep` mask to False (their learned null EF).
    Dynamic thresholding (Imagen): s = max(1, percentile_p(|D|)) per sample; D <- clamp(D, -s, s) / s.
    """

    def __init__(self, denoiser, cond: dict, guidance: float = 1.0, threshold: float = 0.0):
        self.denoiser, self.cond, self.w, self.p = denoiser, cond, float(guidance), float(threshold)
        if self.w != 1.0:
            ref = next(v for v in cond.values() if torch.is_tensor(v))
            b = ref.shape[0]
            keep = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)])
            self.cond2 = {k: (torch.cat([v, v]) if torch.is_tensor(v) else v) for k, v in cond.items()}
            self.cond2["ef_keep"] = keep.to(ref.device)

    def __call__(self, x, sigma):
        if self.w == 1.0:
            D = self.denoiser(x, sigma, **self.cond)
        else:
            per_sample = torch.is_tensor(sigma) and sigma.ndim > 0 and sigma.numel() > 1
            sigma2 = torch.cat([sigma, sigma]) if per_sample else sigma
            D_c, D_u = self.denoiser(torch.cat([x, x]), sigma2, **self.cond2).chunk(2)
            D = D_u + self.w * (D_c - D_u)
        if self.p > 0:
            s = row_quantile(D.flatten(1).abs().float(), self.p).clamp(min=1.0).to(D.dtype)
            s = append_dims(s, D.ndim)
            D = D.clamp(-s, s) / s
        return D
