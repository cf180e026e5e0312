"""Random draws that can come from one generator per sample.

Sampling and training draw from explicit torch.Generators (never the global RNG, which other threads of
a server may consume). Data-parallel training gives every sample its own generator so that what a sample
draws does not depend on the batch or rank it lands in.
"""
from __future__ import annotations

import torch


def randn(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """N(0, 1) noise of shape (B, ...). generator: None (the global RNG), one torch.Generator for the whole
    batch, or a list of B generators, one per sample: then what a sample draws does not depend on the batch
    it is in (data-parallel training: N ranks x batch B draw what one process at batch N*B draws)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} per-sample generators for a batch of {shape[0]}")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in generator]).to(device)
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)


def rand(n: int, generator=None) -> torch.Tensor:
    """U[0, 1) of shape (n,), from one generator or one per sample (as randn)."""
    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.rand((), generator=g) for g in generator])
    return torch.rand(n, generator=generator)


_MASK = (1 << 64) - 1


def mix_seed(*xs: int) -> int:
    """A 63-bit seed from integers (splitmix64 chain): different tuples give unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & _MASK)) & _MASK
        h = (h + 0x9E3779B97F4A7C15) & _MASK
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        h = z ^ (z >> 31)
    return h >> 1


def step_generator(seed: int, step: int) -> torch.Generator:
    """The per-step generator of the batch-level draws; identical on every rank."""
    return torch.Generator().manual_seed(mix_seed(seed, step, 0x57E9))


def sample_generators(seeds) -> list[torch.Generator]:
    """One generator per sample from its seed (a batch's "seed" entry, from GlobalBatches)."""
    return [torch.Generator().manual_seed(mix_seed(int(s), 0x5A3)) for s in seeds]
