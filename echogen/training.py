"""One training step of one cascade stage: build the stage's inputs from a real clip, then EDM's loss.

Super-resolution / temporal stages get the low-res input made on the fly from the target clip,
exactly as the previous stage would have produced it (echogen.resample), noise-augmented at a random
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
from echogen.edm import edm_loss
from echogen.resample import aug_alpha_sigma, augment_lowres, lowres_from_target, resize_frames, upsample_video

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


class GlobalBatches(torch.utils.data.Sampler):
    """An endless stream of this rank's share of each global batch, from `start_step` on.

    Global batch s holds positions s*G .. s*G + G - 1 (G = batch * world) of the sequence of per-epoch
    permutations of the dataset (epoch e's permutation seeded by (seed, e)); rank r gets the slots
    r*batch .. (r+1)*batch - 1. Each index is (item index, item seed), the item seed a function of
    (seed, step, slot) only: N ranks at batch B see and draw exactly what one process at batch N*B does,
    and a run resumed at step s continues the very same stream. Use with SeededItems."""

    def __init__(self, n: int, batch: int, world: int = 1, rank: int = 0, seed: int = 0, start_step: int = 0):
        if n < 1:
            raise ValueError("empty dataset")
        self.n, self.batch, self.world, self.rank = int(n), int(batch), int(world), int(rank)
        self.seed, self.start_step = int(seed), int(start_step)
        self._perm = (-1, None)

    def _index(self, pos: int) -> int:
        e, j = divmod(pos, self.n)
        if self._perm[0] != e:
            self._perm = (e, torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, e))))
        return int(self._perm[1][j])

    def step_items(self, step: int) -> list[tuple[int, int]]:
        """This rank's (item index, item seed) pairs of global batch `step`."""
        g = self.batch * self.world
        slots = range(self.rank * self.batch, (self.rank + 1) * self.batch)
        return [(self._index(step * g + k), mix_seed(self.seed, step, k)) for k in slots]

    def __iter__(self):
        step = self.start_step
        while True:
            yield from self.step_items(step)
            step += 1


class SeededItems(torch.utils.data.Dataset):
    """Wraps an EchoNetDataset for GlobalBatches: item (i, seed) re-seeds the dataset's generator (its
    random clip start and conditioning frame) with `seed` first, and carries the seed along as "seed"."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        i, seed = key
        self.base.gen.manual_seed(int(seed))
        item = dict(self.base[int(i)])
        item["seed"] = torch.tensor(int(seed), dtype=torch.int64)
        return item


def previous_stage(cascade: CascadeConfig, stage: StageConfig) -> StageConfig | None:
    i = cascade.stage_names.index(stage.name)
    return cascade.stages[i - 1] if i > 0 else None


def stage_inputs(cascade: CascadeConfig, stage: StageConfig, video: torch.Tensor, frame: torch.Tensor,
                 ef: torch.Tensor, generator: torch.Generator, crop: int | None = None,
                 sample_gens: list | None = None) -> tuple[torch.Tensor, dict]:
    """video (B,1,T,H,W) in [0,1] at the stage's frames and fps; frame (B,1,H,W) in [0,1]; ef in %.
    Returns (y, cond): y the clean target in [-1, 1], cond the keyword inputs of the network.
    Batch-level draws (augmentation level, crop) come from `generator`; per-sample draws (low-res noise,
    EF / frame dropout) from sample_gens[i] when given (one generator per sample), else from `generator`."""
    b = video.shape[0]
    video = resize_frames(video, stage.size)
    cond = {"frame": resize_frames(frame, stage.size, stage.frame_resize), "ef": ef.float() / 100}
    prev = previous_stage(cascade, stage)
    if prev is not None:
        low = lowres_from_target(video, stage.fps, prev.frames, prev.fps, prev.size)
        cond["lowres"] = upsample_video(low, prev.fps, stage.frames, stage.fps, stage.size, stage.lowres_resize) * 2 - 1
        t = torch.rand((), generator=generator) * stage.lowres_aug_max        # one level per batch
        cond["aug"] = t.expand(b).clone()
        if sample_gens is None:
            cond["lowres"] = augment_lowres(cond["lowres"], cond["aug"], generator)
        else:
            low = cond["lowres"]
            noise = torch.stack([torch.randn(low.shape[1:], generator=g, dtype=low.dtype) for g in sample_gens])
            alpha, sig = aug_alpha_sigma(cond["aug"])
            shape = (-1,) + (1,) * (low.ndim - 1)
            cond["lowres"] = alpha.reshape(shape) * low + sig.reshape(shape) * noise
    y = video * 2 - 1
    crop = stage.crop if crop is None else crop
    if crop and crop < stage.size:
        i, j = (int(torch.randint(0, stage.size - crop + 1, (1,), generator=generator)) for _ in range(2))
        y = y[..., i:i + crop, j:j + crop]
        cond["frame"] = cond["frame"][..., i:i + crop, j:j + crop]
        if "lowres" in cond:
            cond["lowres"] = cond["lowres"][..., i:i + crop, j:j + crop]
    if sample_gens is None:
        cond["ef_keep"] = torch.rand(b, generator=generator) >= stage.p_drop_ef
        if stage.p_drop_frame > 0:
            cond["frame_keep"] = torch.rand(b, generator=generator) >= stage.p_drop_frame
    else:
        cond["ef_keep"] = torch.stack([torch.rand((), generator=g) >= stage.p_drop_ef for g in sample_gens])
        if stage.p_drop_frame > 0:
            cond["frame_keep"] = torch.stack([torch.rand((), generator=g) >= stage.p_drop_frame for g in sample_gens])
    return y, cond


def stage_loss(denoiser, cascade: CascadeConfig, stage: StageConfig, batch: dict, generator: torch.Generator,
               device) -> torch.Tensor:
    """Mean EDM loss of one batch from EchoNetDataset ({"video", "frame", "ef"}).

    With a "seed" entry (per-sample seeds, GlobalBatches + SeededItems), `generator` must be the step's
    generator shared by all ranks (step_generator): it draws the image/video decision, the augmentation
    level and the crop; every per-sample draw comes from the sample's own seed. Without "seed", every
    draw comes from `generator` (single process, tests)."""
    gens = sample_generators(batch["seed"]) if "seed" in batch else None
    if gens is not None:  # the image/video decision first: the same on every rank for this step
        ignore_time = bool(torch.rand((), generator=generator) < stage.p_ignore_time)
    y, cond = stage_inputs(cascade, stage, batch["video"], batch["frame"], batch["ef"], generator, sample_gens=gens)
    cond = {k: v.to(device) for k, v in cond.items()}
    if gens is None:
        ignore_time = bool(torch.rand((), generator=generator) < stage.p_ignore_time)
        return edm_loss(denoiser, y.to(device), cascade.diffusion, generator=generator, ignore_time=ignore_time,
                        **cond).mean()
    d = cascade.diffusion
    sigma = torch.stack([(torch.randn((), generator=g) * d.P_std + d.P_mean).exp() for g in gens]).to(device)
    n = torch.stack([torch.randn(y.shape[1:], generator=g) for g in gens]).to(device)
    y = y.to(device)
    weight = (sigma ** 2 + d.sigma_data ** 2) / (sigma * d.sigma_data) ** 2   # EDM's lambda (echogen.edm)
    D_yn = denoiser(y + n * sigma.reshape((-1,) + (1,) * (y.ndim - 1)), sigma, ignore_time=ignore_time, **cond)
    return (weight * ((D_yn - y) ** 2).flatten(1).mean(1)).mean()


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
