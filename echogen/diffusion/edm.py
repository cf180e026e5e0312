"""EDM preconditioning and loss (Karras et al. 2022, "Elucidating the Design Space...", Table 1).

  D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
  c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
  c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
  c_in   = 1 / sqrt(sigma^2 + sigma_data^2)
  c_noise = ln(sigma) / 4
Loss: ln(sigma) ~ N(P_mean, P_std^2), weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2.
"""
from __future__ import annotations

import torch
from torch import nn

from echogen.config import DiffusionConfig
from echogen.rng import randn


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) with ndim dimensions in all."""
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def precond_coeffs(sigma: torch.Tensor, sigma_data: float):
    """Return (c_skip, c_out, c_in, c_noise) for sigma of any shape."""
    s2, sd2 = sigma ** 2, sigma_data ** 2
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma * sigma_data / (s2 + sd2).sqrt()
    c_in = 1 / (s2 + sd2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


class Denoiser(nn.Module):
    """Wraps a plain network F into the denoiser D(x; sigma, cond). Only this class knows c_*."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.25):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma.reshape(x.shape[0])
        c_skip, c_out, c_in, c_noise = (append_dims(c, x.ndim) for c in precond_coeffs(sigma, self.sigma_data))
        F_x = self.net(c_in * x, c_noise.flatten(), **cond)
        return c_skip * x + c_out * F_x.to(x.dtype)


def sample_sigma(n: int, cfg: DiffusionConfig, device=None, generator=None) -> torch.Tensor:
    """Training noise levels: ln(sigma) ~ N(P_mean, P_std^2)."""
    return (randn((n,), generator, device) * cfg.P_std + cfg.P_mean).exp()


def edm_loss(denoiser: Denoiser, y: torch.Tensor, cfg: DiffusionConfig, generator=None, **cond) -> torch.Tensor:
    """Per-sample weighted denoising loss, shape (B,). y is the clean video in [-1, 1]."""
    sigma = sample_sigma(y.shape[0], cfg, y.device, generator)
    weight = (sigma ** 2 + cfg.sigma_data ** 2) / (sigma * cfg.sigma_data) ** 2
    n = randn(y.shape, generator, y.device)
    D_yn = denoiser(y + n * append_dims(sigma, y.ndim), sigma, **cond)
    return weight * ((D_yn - y) ** 2).flatten(1).mean(1)
