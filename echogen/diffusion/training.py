"""One training step of one cascade stage: the stage's inputs from a real clip (echogen.diffusion.stage
.training_inputs), then EDM's loss.

Super-resolution / temporal stages get the low-res input made on the fly from the target clip,
exactly as the previous stage would have produced it (echogen.data.resample), noise-augmented at a random
level t ~ U[0, lowres_aug_max) per batch (the network is told t), optionally on a random crop that is
the same for target, low-res input and I_c. EF is dropped with p_drop_ef (classifier-free guidance);
with p_ignore_time a step trains the frames as independent images (temporal layers skipped).

Randomness under data parallelism (train/train_stage.py, torchrun): the draws the paper makes per
*batch* (the image/video decision, the low-res augmentation level, the crop) come from one generator
seeded by (seed, step), the same on every rank, so a step is an image step on all ranks or on none
(PAPER.md: 25 % of training *steps*). The draws made per *sample* (EF / frame dropout, sigma, the noise,
the low-res noise) come from a generator seeded by that sample's seed (GlobalBatches: a function of
seed, step and the sample's slot in the global batch). N ranks at batch B therefore draw exactly what
one process at batch N * B draws, and a resumed run continues the same streams.
"""
from __future__ import annotations

import copy

import torch

from echogen.config import CascadeConfig, StageConfig
from echogen.diffusion.edm import edm_loss
from echogen.diffusion.stage import training_inputs
from echogen.rng import sample_generators


def stage_loss(denoiser, cascade: CascadeConfig, stage: StageConfig, batch: dict, generator: torch.Generator,
               device) -> torch.Tensor:
    """Mean EDM loss of one batch from EchoNetDataset ({"video", "frame", "ef"}).

    With a "seed" entry (per-sample seeds: echogen.data.batches), `generator` must be the step's generator
    shared by all ranks (echogen.rng.step_generator): it draws the image/video decision, the augmentation
    level and the crop; every per-sample draw comes from the sample's own seed. Without "seed", every
    draw comes from `generator` (single process, tests)."""
    gens = sample_generators(batch["seed"]) if "seed" in batch else None
    if gens is not None:  # the image/video decision first: the same on every rank for this step
        ignore_time = bool(torch.rand((), generator=generator) < stage.p_ignore_time)
    y, cond = training_inputs(cascade, stage, batch["video"], batch["frame"], batch["ef"], generator, sample_gens=gens)
    if gens is None:
        ignore_time = bool(torch.rand((), generator=generator) < stage.p_ignore_time)
    cond = {k: v.to(device) for k, v in cond.items()}
    return edm_loss(denoiser, y.to(device), cascade.diffusion, generator=gens if gens is not None else generator,
                    ignore_time=ignore_time, **cond).mean()


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


def optimizer_step(sync, opt: torch.optim.Optimizer, loss: torch.Tensor, ema: EMA, model: torch.nn.Module,
                   state: dict, global_batch: int) -> None:
    """Backward (through echogen.distributed.GradSync), Adam step, counters (state["step"], state["seen"]) and
    the EMA update: one optimiser step of the training scripts (train_stage.py, distill.py)."""
    opt.zero_grad(set_to_none=True)
    sync.loss(loss).backward()
    sync.after_backward()
    opt.step()
    state["step"] += 1
    state["seen"] += global_batch
    ema.update(model, global_batch, state["seen"])


class LossCurve:
    """RUN/loss.csv ("step,loss"): losses averaged over the steps since the last flush and over the ranks."""

    def __init__(self, path, dist):
        from pathlib import Path
        self.path, self.dist, self.values = Path(path), dist, []
        if dist.main and not self.path.exists():
            self.path.write_text("step,loss\n")

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def flush(self, step: int) -> float:
        from echogen import distributed
        mean = distributed.all_mean(sum(self.values) / max(len(self.values), 1), self.dist)
        self.values = []
        if self.dist.main:
            with open(self.path, "a") as f:
                f.write(f"{step},{mean:.6f}\n")
        return mean
