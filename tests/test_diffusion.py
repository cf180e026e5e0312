"""EDM preconditioning, loss and samplers, checked against exact answers."""
import math

import pytest
import torch

from echogen.config import DiffusionConfig
from echogen.diffusion.edm import Denoiser, edm_loss, precond_coeffs
from echogen.diffusion.guidance import GuidedDenoiser, row_quantile
from echogen.diffusion.samplers import SAMPLERS, get_sigmas_karras, nfe


def test_preconditioning_unit_variance():
    # y ~ N(0, sigma_data^2), x = y + sigma n: the network's input c_in x and its ideal target
    # (y - c_skip x) / c_out both have unit variance at every noise level.
    sd = 0.25
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200_000, generator=g) * sd
    for sigma in [0.002, 0.05, 0.25, 1.0, 10.0, 80.0]:
        s = torch.tensor(sigma)
        c_skip, c_out, c_in, _ = precond_coeffs(s, sd)
        x = y + sigma * torch.randn(y.shape, generator=g)
        assert abs((c_in * x).std().item() - 1) < 0.01, sigma
        assert abs(((y - c_skip * x) / c_out).std().item() - 1) < 0.01, sigma


def test_c_noise_is_quarter_log_sigma():
    _, _, _, c_noise = precond_coeffs(torch.tensor([1.0, math.e ** 4]), 0.25)
    assert torch.allclose(c_noise, torch.tensor([0.0, 1.0]))


def test_karras_schedule_decreasing_to_zero():
    s = get_sigmas_karras(32, 0.002, 80.0, 7.0)
    assert s.shape == (33,)
    assert s[-1] == 0 and abs(s[0].item() - 80.0) < 1e-3 and abs(s[-2].item() - 0.002) < 1e-6
    assert torch.all(s[1:] < s[:-1])


class ExactGaussianDenoiser(torch.nn.Module):
    """The true denoiser for data ~ N(0, s^2): E[y | x] = x s^2 / (s^2 + sigma^2)."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x, sigma, **_):
        return x * self.s ** 2 / (self.s ** 2 + torch.as_tensor(sigma) ** 2)


@pytest.mark.parametrize("name,steps,kwargs", [
    ("euler", 256, {}),
    ("heun", 64, {}),
    ("heun", 128, dict(S_churn=40, S_tmin=0.05, S_tmax=50, S_noise=1.003)),
    ("dpmpp_2m", 64, {}),
])
def test_sampler_recovers_gaussian_std(name, steps, kwargs):
    s = 0.5
    g = torch.Generator().manual_seed(1)
    sigmas = get_sigmas_karras(steps, 0.002, 80.0)
    x = torch.randn(2, 1, 8, 32, 32, generator=g) * (sigmas[0] ** 2 + s ** 2).sqrt()
    out = SAMPLERS[name].fn(ExactGaussianDenoiser(s), x, sigmas, generator=g, **kwargs)
    assert abs(out.std().item() - s) / s < 0.02, out.std().item()
    assert abs(out.mean().item()) < 0.02


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_sampler_error_shrinks_with_steps(name):
    s, errs = 0.5, []
    for steps in (8, 32, 128):
        x0 = torch.randn(4096, generator=torch.Generator().manual_seed(2))
        sigmas = get_sigmas_karras(steps, 0.002, 80.0)
        out = SAMPLERS[name].fn(ExactGaussianDenoiser(s), x0 * (sigmas[0] ** 2 + s ** 2).sqrt(), sigmas)
        errs.append(abs((out / x0).mean().item() - s))  # deterministic ODE: out is exactly x0 scaled
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.03 * s, errs


def test_sampler_callback_and_nfe():
    calls = []
    den = ExactGaussianDenoiser(0.5)
    counted = {"n": 0}

    def model(x, sigma):
        counted["n"] += 1
        return den(x, sigma)

    for name in SAMPLERS:
        calls.clear()
        counted["n"] = 0
        SAMPLERS[name].fn(model, torch.randn(1, 4) * 80, get_sigmas_karras(5, 0.002, 80.0),
                       callback=lambda d: calls.append(d["i"]))
        assert calls == list(range(5))
        assert counted["n"] == nfe(name, 5), name


class TinyCondNet(torch.nn.Module):
    """Plain network whose output depends on EF and the keep mask, per sample."""

    def __init__(self):
        super().__init__()
        self.null = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x, c_noise, frame, ef, ef_keep=None, **_):
        e = ef if ef_keep is None else torch.where(ef_keep, ef, self.null)
        return torch.tanh(x * (1 + e[:, None, None, None, None]) + c_noise[:, None, None, None, None])


def test_cfg_one_batch_equals_two_calls():
    den = Denoiser(TinyCondNet(), 0.25)
    b = 3
    cond = {"frame": torch.rand(b, 1, 4, 4), "ef": torch.rand(b)}
    x, sigma = torch.randn(b, 1, 2, 4, 4), torch.tensor(2.0)
    w = 5.0
    D_c = den(x, sigma, **cond, ef_keep=torch.ones(b, dtype=torch.bool))
    D_u = den(x, sigma, **cond, ef_keep=torch.zeros(b, dtype=torch.bool))
    ref = D_u + w * (D_c - D_u)
    got = GuidedDenoiser(den, cond, w, threshold=0.0)(x, sigma)
    assert torch.allclose(got, ref, atol=1e-6)
    assert not torch.allclose(D_c, D_u)


def test_dynamic_thresholding_bounds_output():
    den = lambda x, sigma, **_: x * 3  # noqa: E731
    got = GuidedDenoiser(den, {"frame": torch.zeros(2, 1, 1, 1)}, 1.0, threshold=0.95)(torch.randn(2, 1000), 1.0)
    assert got.abs().max() <= 1.0 + 1e-6


def test_edm_loss_zero_for_perfect_denoiser():
    class Perfect(torch.nn.Module):
        def forward(self, x, sigma, **_):
            return torch.zeros_like(x)  # data is all zeros

    loss = edm_loss(Perfect(), torch.zeros(4, 1, 2, 4, 4), DiffusionConfig(), generator=torch.Generator().manual_seed(0))
    assert loss.shape == (4,) and torch.all(loss == 0)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 4097])
def test_row_quantile_matches_torch_quantile(n):
    a = torch.randn(3, n, generator=torch.Generator().manual_seed(n)).abs()
    for p in (0.0, 0.5, 0.95, 1.0):
        assert torch.equal(row_quantile(a, p), torch.quantile(a, p, dim=1))
