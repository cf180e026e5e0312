"""Metrics of the paper's evaluation: EF regression scores, SSIM, Frechet distance, best-of-K.

Everything takes numpy arrays or torch tensors and computes in float64; scalars come back as floats.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _f64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _pair(y_true, y_pred) -> tuple[torch.Tensor, torch.Tensor]:
    t, p = _f64(y_true).reshape(-1), _f64(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"targets and predictions differ in length: {t.numel()} vs {p.numel()}")
    if t.numel() == 0:
        raise ValueError("no values to score")
    return t, p


# ---------------------------------------------------------------------------------------------
# Regression (EF target vs EF read by the regressor)
# ---------------------------------------------------------------------------------------------

def r2(y_true, y_pred) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (1 = perfect, 0 = predicting the mean).

    NaN when the targets are all equal (SS_tot = 0)."""
    t, p = _pair(y_true, y_pred)
    ss_res = ((t - p) ** 2).sum()
    ss_tot = ((t - t.mean()) ** 2).sum()
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def mae(y_true, y_pred) -> float:
    t, p = _pair(y_true, y_pred)
    return float((t - p).abs().mean())


def rmse(y_true, y_pred) -> float:
    t, p = _pair(y_true, y_pred)
    return float(((t - p) ** 2).mean().sqrt())


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """{"r2", "mae", "rmse"} in one call."""
    return {"r2": r2(y_true, y_pred), "mae": mae(y_true, y_pred), "rmse": rmse(y_true, y_pred)}


def mae_by_bin(y_true, y_pred, edges=None) -> list[tuple[int, int, int, float | None]]:
    """(lo, hi, count, MAE) for each EF bin [lo, hi) of the true EF (the last bin includes hi); MAE None where
    the bin is empty. edges: default echogen.ef.EF_BIN_EDGES."""
    from echogen.ef import EF_BIN_EDGES
    e = EF_BIN_EDGES if edges is None else edges
    y, yh = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    out = []
    for k, (lo, hi) in enumerate(zip(e, e[1:])):
        m = (y >= lo) & ((y <= hi) if k == len(e) - 2 else (y < hi))
        out.append((lo, hi, int(m.sum()), float(np.abs(y[m] - yh[m]).mean()) if m.any() else None))
    return out


def best_of_k(targets, preds, return_index: bool = False):
    """Per row, the prediction nearest the target (the paper's best-of-3).

    targets (N,), preds (N, K) -> chosen (N,) [, index (N,)] as numpy arrays."""
    t, p = _f64(targets).reshape(-1), _f64(preds)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[0] != t.shape[0]:
        raise ValueError(f"best_of_k: expected targets (N,) and preds (N, K); got {tuple(t.shape)} and {tuple(p.shape)}")
    idx = (p - t[:, None]).abs().argmin(dim=1)                      # first of equals on ties
    chosen = p.gather(1, idx[:, None])[:, 0]
    return (chosen.numpy(), idx.numpy()) if return_index else chosen.numpy()


# ---------------------------------------------------------------------------------------------
# SSIM (Wang et al. 2004): Gaussian 11x11 window, sigma 1.5, K1 = 0.01, K2 = 0.03, valid positions only
# ---------------------------------------------------------------------------------------------

def gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1D Gaussian (size,), float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 2D Gaussian window (size, size), float64: the outer product of gaussian_1d."""
    g = gaussian_1d(size, sigma)
    return g[:, None] * g[None, :]


def ssim_per_frame(a, b, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM of each 2D frame: inputs (..., H, W) of equal shape -> (...) float64 tensor.

    Pixels in [0, data_range] (use data_range=255 for uint8). H and W must be >= win_size."""
    x, y = _f64(a), _f64(b)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim < 2 or min(x.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs frames of at least {win_size}x{win_size}, got shape {tuple(x.shape)}")
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    x, y = x.reshape(-1, 1, h, w), y.reshape(-1, 1, h, w)            # (N, 1, H, W)
    g = gaussian_1d(win_size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    # the Gaussian window is separable: a 1 x k then a k x 1 pass (valid, no padding) over the five moment
    # maps at once equals the k x k window (2k instead of k^2 taps; float64 has no fast CPU conv kernel)
    z = torch.cat([x, y, x * x, y * y, x * y], dim=1)                # (N, 5, H, W)
    z = F.conv2d(z, g.view(1, 1, 1, -1).expand(5, 1, 1, win_size), groups=5)
    z = F.conv2d(z, g.view(1, 1, -1, 1).expand(5, 1, win_size, 1), groups=5)
    mu_x, mu_y, exx, eyy, exy = z.unbind(1)                          # each (N, H-k+1, W-k+1)
    var_x = exx - mu_x ** 2
    var_y = eyy - mu_y ** 2
    cov = exy - mu_x * mu_y
    # SSIM map: luminance x contrast-structure terms (eq. 13 of Wang et al.)
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2)).reshape(lead)


def ssim(a, b, data_range: float = 1.0) -> float:
    """Mean SSIM over all frames of a frame or video pair (..., H, W)."""
    return float(ssim_per_frame(a, b, data_range).mean())


def ssim_videos(a, b, data_range: float = 1.0) -> np.ndarray:
    """Per-video SSIM (mean over frames): (B, [C,] T, H, W) pairs -> (B,) numpy."""
    s = ssim_per_frame(a, b, data_range)
    return s.reshape(s.shape[0], -1).mean(dim=1).numpy()


# ---------------------------------------------------------------------------------------------
# Frechet distance between two feature sets (FID / FVD formula, any feature extractor)
# ---------------------------------------------------------------------------------------------

def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh (negative round-off clipped)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(feats_a, feats_b) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2) of two (N, D) feature sets.

    Tr((C_a C_b)^1/2) is computed as Tr((C_a^1/2 C_b C_a^1/2)^1/2), whose argument is symmetric PSD,
    so only eigh is needed (no scipy)."""
    a, b = _f64(feats_a), _f64(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs (N, D) feature sets with the same D, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("frechet_distance needs at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    c_a, c_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    s_a = _sqrtm_psd(c_a)
    m = s_a @ c_b @ s_a
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = ((mu_a - mu_b) ** 2).sum() + torch.trace(c_a) + torch.trace(c_b) - 2 * tr_covmean
    return float(d.clamp(min=0))
