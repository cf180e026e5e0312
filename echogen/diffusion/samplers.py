"""Sigma schedules and samplers as pure functions (k-diffusion's signature):

    sample_x(model, x, sigmas, extra_args=None, callback=None, generator=None, **settings) -> x_0

`model(x, sigma, **extra_args)` is a denoiser D(x; sigma). `sigmas` is decreasing and ends with 0.
`callback(dict(i, x, sigma, denoised))` is called once per step (it drives the progress bars).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch



def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu") -> torch.Tensor:
    """Karras et al. (2022) eq. 5: n noise levels from sigma_max to sigma_min, then a final 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32).to(device)


def _noise_like(x, generator):
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, generator=None):
    """Deterministic Euler (EDM Algorithm 1 without the 2nd-order correction). NFE = N."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i], **extra_args)
        d = (x - denoised) / sigmas[i]
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[i], "denoised": denoised})
        # Euler step.
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, generator=None,
                S_churn=0.0, S_tmin=0.0, S_tmax=float("inf"), S_noise=1.0):
    """EDM's stochastic Heun sampler (Algorithm 2). NFE = 2N - 1."""
    extra_args = extra_args or {}
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # Increase noise temporarily: gamma_i = min(S_churn / N, sqrt(2) - 1) within [S_tmin, S_tmax].
        gamma = min(S_churn / n, math.sqrt(2) - 1) if S_tmin <= float(sigma) <= S_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + _noise_like(x, generator) * S_noise * (sigma_hat ** 2 - sigma ** 2).sqrt()
        denoised = model(x, sigma_hat, **extra_args)
        d = (x - denoised) / sigma_hat
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})
        # Euler step.
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next > 0:
            # 2nd order correction.
            d_next = (x_next - model(x_next, sigma_next, **extra_args)) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, generator=None):
    """DPM-Solver++(2M) (Lu et al. 2022), multistep in t = -ln(sigma). NFE = N."""
    extra_args = extra_args or {}
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma, **extra_args)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "denoised": denoised})
        if sigma_next == 0:
            # Last step to sigma = 0: the data prediction itself.
            x = denoised
            break
        h = (sigma / sigma_next).log()                      # t_next - t
        if old_denoised is None:
            D = denoised                                    # first step: DPM-Solver++(1) (= DDIM)
        else:
            r = h_last / h
            D = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - torch.expm1(-h) * D
        old_denoised, h_last = denoised, h
    return x


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: its function, its network evaluations for N steps (a CFG pair counts once: it is
    one batched call), and the keyword settings a stage config gives it."""
    fn: Callable
    nfe: Callable[[int], int]
    settings: Callable[[object], dict]


def _heun_settings(stage) -> dict:
    return dict(S_churn=stage.S_churn, S_tmin=stage.S_tmin, S_tmax=stage.S_tmax, S_noise=stage.S_noise)


SAMPLERS: dict[str, SamplerSpec] = {
    "heun": SamplerSpec(sample_heun, lambda n: 2 * n - 1, _heun_settings),
    "euler": SamplerSpec(sample_euler, lambda n: n, lambda stage: {}),
    "dpmpp_2m": SamplerSpec(sample_dpmpp_2m, lambda n: n, lambda stage: {}),
}


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}' (choose from {', '.join(SAMPLERS)})")
    return SAMPLERS[name]


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations per sample of `sampler` for `steps` steps (SAMPLERS[sampler].nfe)."""
    return get_sampler(sampler).nfe(steps)
