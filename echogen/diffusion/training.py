"""One training step of one cascade stage: the stage's inputs from a real clip (echogen.diffusion.stage
.training_inputs), then EDM's loss.

Super-resolution / temporal stages get the low-res input made on the fly from the target clip,
exactly as the previous stage would have produced it (echogen.data.resample), noise-augmented at a random
level t ~ U[0, lowres_aug_max) per batch (the network is told t), optionally on a random crop that is
the same for target, low-res input and I_c. EF is dropped with p_drop_ef (classifier-free guidance);
with p_ignore_time a step trains the frames as independent images (temporal layers skipped).
"""
from __future__ import annotations

import copy

import torch

from echogen.config import CascadeConfig, StageConfig
from echogen.diffusion.edm import edm_loss
from echogen.diffusion.stage import training_inputs


def stage_loss(denoiser, cascade: CascadeConfig, stage: StageConfig, batch: dict, generator: torch.Generator,
               device) -> torch.Tensor:
    """Mean EDM loss of one batch from EchoNetDataset ({"video", "frame", "ef"})."""
    y, cond = training_inputs(cascade, stage, batch["video"], batch["frame"], batch["ef"], generator)
    ignore_time = bool(torch.rand((), generator=generator) < stage.p_ignore_time)
    cond = {k: v.to(device) for k, v in cond.items()}
    return edm_loss(denoiser, y.to(device), cascade.diffusion, generator=generator, ignore_time=ignore_time,
                    **cond).mean()


class EMA:
    """Exponential moving average of parameters, with the decay given as a half-life in samples
    (EDM's convention): beta = 0.5 ** (batch / half_life), ramped up early in training."""

    def __init__(self, model: torch.nn.Module, half_life: float = 50_000, ramp: float = 0.05):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.half_life, self.ramp = half_life, ramp

    @torch.no_grad()
    def update(self, model: torch.nn.Module, batch: int, seen: int) -> None:
        hl = min(self.half_life, seen * self.ramp) if self.ramp else self.half_life
        beta = 0.5 ** (batch / max(hl, 1e-8))
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p.detach(), 1 - beta)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
