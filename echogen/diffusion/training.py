"""One training step of one cascade stage: build the stage's inputs from a real clip, then EDM's loss.

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
from echogen.data.resample import augment_lowres, lowres_from_target, resize_frames, upsample_video


def previous_stage(cascade: CascadeConfig, stage: StageConfig) -> StageConfig | None:
    i = cascade.stage_names.index(stage.name)
    return cascade.stages[i - 1] if i > 0 else None


def stage_inputs(cascade: CascadeConfig, stage: StageConfig, video: torch.Tensor, frame: torch.Tensor,
                 ef: torch.Tensor, generator: torch.Generator, crop: int | None = None) -> tuple[torch.Tensor, dict]:
    """video (B,1,T,H,W) in [0,1] at the stage's frames and fps; frame (B,1,H,W) in [0,1]; ef in %.
    Returns (y, cond): y the clean target in [-1, 1], cond the keyword inputs of the network."""
    b = video.shape[0]
    video = resize_frames(video, stage.size)
    cond = {"frame": resize_frames(frame, stage.size, stage.frame_resize), "ef": ef.float() / 100}
    prev = previous_stage(cascade, stage)
    if prev is not None:
        low = lowres_from_target(video, stage.fps, prev.frames, prev.fps, prev.size)
        cond["lowres"] = upsample_video(low, prev.fps, stage.frames, stage.fps, stage.size, stage.lowres_resize) * 2 - 1
        t = torch.rand((), generator=generator) * stage.lowres_aug_max        # one level per batch
        cond["aug"] = t.expand(b).clone()
        cond["lowres"] = augment_lowres(cond["lowres"], cond["aug"], generator)
    y = video * 2 - 1
    crop = stage.crop if crop is None else crop
    if crop and crop < stage.size:
        i, j = (int(torch.randint(0, stage.size - crop + 1, (1,), generator=generator)) for _ in range(2))
        y = y[..., i:i + crop, j:j + crop]
        cond["frame"] = cond["frame"][..., i:i + crop, j:j + crop]
        if "lowres" in cond:
            cond["lowres"] = cond["lowres"][..., i:i + crop, j:j + crop]
    cond["ef_keep"] = torch.rand(b, generator=generator) >= stage.p_drop_ef
    if stage.p_drop_frame > 0:
        cond["frame_keep"] = torch.rand(b, generator=generator) >= stage.p_drop_frame
    return y, cond


def stage_loss(denoiser, cascade: CascadeConfig, stage: StageConfig, batch: dict, generator: torch.Generator,
               device) -> torch.Tensor:
    """Mean EDM loss of one batch from EchoNetDataset ({"video", "frame", "ef"})."""
    y, cond = stage_inputs(cascade, stage, batch["video"], batch["frame"], batch["ef"], generator)
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
