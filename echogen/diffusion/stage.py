"""The stage contract: what one cascade stage is given and how it is sampled. Training, the cascade,
training previews and benchmarks all build a stage's inputs here, so they cannot drift apart.

A stage's network input `cond`:
  frame   (B, 1, S, S)      I_c in [0, 1], resized to the stage (StageConfig.frame_resize)
  ef      (B,)              EF / 100 (echogen.ef.to_network)
  lowres  (B, C, T, S, S)   SR/temporal stages: the previous stage's output on this stage's grid,
                            in [-1, 1], noise-augmented at level aug (the paper's low-res conditioning)
  aug     (B,)              that level (the network is told it)
"""
from __future__ import annotations

import torch

from echogen.config import CascadeConfig, DiffusionConfig, StageConfig
from echogen.data.resample import augment_lowres, lowres_from_target, resize_frames, upsample_video
from echogen.diffusion.guidance import GuidedDenoiser
from echogen.diffusion.samplers import get_sampler, get_sigmas_karras
from echogen.ef import to_network
from echogen.rng import rand


def previous_stage(cascade: CascadeConfig, stage: StageConfig) -> StageConfig | None:
    i = cascade.stage_names.index(stage.name)
    return cascade.stages[i - 1] if i > 0 else None


def lowres_input(stage: StageConfig, prev_video: torch.Tensor, prev_fps: float) -> torch.Tensor:
    """The previous stage's output (B, C, t, h, w) in [0, 1] at prev_fps -> this stage's grid, in [-1, 1]."""
    return upsample_video(prev_video, prev_fps, stage.frames, stage.fps, stage.size, stage.lowres_resize) * 2 - 1


def stage_condition(stage: StageConfig, frame: torch.Tensor, ef: torch.Tensor, lowres: torch.Tensor | None = None,
                    aug: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict:
    """The network's conditioning: frame (B, 1, H, W) in [0, 1]; ef (B,) in %; lowres from lowres_input
    (stages after the base), noised at level aug (B,) with `generator`."""
    cond = {"frame": resize_frames(frame, stage.size, stage.frame_resize), "ef": to_network(ef)}
    if not stage.is_base:
        if lowres is None or aug is None:
            raise ValueError(f"stage '{stage.name}' needs its low-res input and an augmentation level")
        cond["lowres"] = augment_lowres(lowres, aug, generator)
        cond["aug"] = aug
    return cond


def training_inputs(cascade: CascadeConfig, stage: StageConfig, video: torch.Tensor, frame: torch.Tensor,
                    ef: torch.Tensor, generator: torch.Generator, crop: int | None = None,
                    sample_gens: list | None = None) -> tuple[torch.Tensor, dict]:
    """A training batch: video (B,1,T,H,W) in [0,1] at the stage's frames and fps; frame (B,1,H,W); ef in %.
    The low-res input is made from the target as the previous stage would have produced it, noised at
    t ~ U[0, lowres_aug_max) (one level per batch); an optional random crop is shared by target, low-res
    input and I_c; EF (and I_c) are dropped for classifier-free guidance. Returns (y in [-1, 1], cond).
    Batch-level draws (augmentation level, crop) come from `generator`; per-sample draws (low-res noise,
    EF / frame dropout) from sample_gens (one generator per sample, data-parallel training) when given."""
    per = sample_gens if sample_gens is not None else generator
    b = video.shape[0]
    video = resize_frames(video, stage.size)
    prev = previous_stage(cascade, stage)
    low = aug = None
    if prev is not None:
        low = lowres_input(stage, lowres_from_target(video, stage.fps, prev.frames, prev.fps, prev.size), prev.fps)
        aug = (torch.rand((), generator=generator) * stage.lowres_aug_max).expand(b).clone()
    cond = stage_condition(stage, frame, ef, low, aug, per)
    y = video * 2 - 1
    crop = stage.crop if crop is None else crop
    if crop and crop < stage.size:
        i, j = (int(torch.randint(0, stage.size - crop + 1, (1,), generator=generator)) for _ in range(2))
        y = y[..., i:i + crop, j:j + crop]
        cond["frame"] = cond["frame"][..., i:i + crop, j:j + crop]
        if "lowres" in cond:
            cond["lowres"] = cond["lowres"][..., i:i + crop, j:j + crop]
    cond["ef_keep"] = rand(b, per) >= stage.p_drop_ef
    if stage.p_drop_frame > 0:
        cond["frame_keep"] = rand(b, per) >= stage.p_drop_frame
    return y, cond


def parse_per_stage(text: str | None, names: list, cast, what: str) -> dict:
    """A per-stage setting as typed by a user: '8' -> every stage; 'base=12,spatial=6' -> those stages."""
    if not text:
        return {}
    def value(v):
        try:
            return cast(v.strip())
        except ValueError:
            raise ValueError(f"--{what}: '{v.strip()}' is not a valid {cast.__name__}") from None

    if "=" not in text:
        return {n: value(text) for n in names}
    out = {}
    for part in text.split(","):
        name, _, val = part.partition("=")
        if name.strip() not in names:
            raise ValueError(f"--{what}: unknown stage '{name.strip()}' (stages: {', '.join(names)})")
        out[name.strip()] = value(val)
    return out


def sampling_settings(stage: StageConfig, steps=None, guidance=None, sampler=None, sigma_start=None) -> dict:
    """The stage's sampling settings, each overridable: {sampler, steps, guidance, sigma_start}."""
    name = sampler or stage.sampler
    get_sampler(name)
    s0 = 0.0 if stage.is_base else float(stage.sigma_start if sigma_start is None else sigma_start)
    return {"sampler": name, "steps": int(stage.steps if steps is None else steps),
            "guidance": float(stage.guidance if guidance is None else guidance), "sigma_start": s0,
            "sigma_min": float(stage.sample_sigma_min)}


def stage_sigmas(settings: dict, diffusion: DiffusionConfig, device="cpu") -> torch.Tensor:
    """The noise levels a stage is sampled at (steps + 1 values ending in 0): Karras' schedule from sigma_max
    (or the SR stages' sigma_start) down to sigma_min (the stage's own when set: distilled stages)."""
    s0, lo = settings["sigma_start"], settings.get("sigma_min") or diffusion.sigma_min
    return get_sigmas_karras(settings["steps"], lo, s0 if s0 > 0 else diffusion.sigma_max, diffusion.rho, device)


def sample_stage(denoiser, stage: StageConfig, diffusion: DiffusionConfig, cond: dict, settings: dict,
                 generator: torch.Generator, lowres: torch.Tensor | None = None, callback=None) -> torch.Tensor:
    """Sample one stage: x (B, C, T, S, S) in [-1, 1]. settings from sampling_settings. With sigma_start > 0
    (SR stages) sampling starts from the un-noised low-res input `lowres` noised to sigma_start (SDEdit);
    otherwise from pure noise at sigma_max. callback(step, total) after each sampler step."""
    spec = get_sampler(settings["sampler"])
    n, s0 = settings["steps"], settings["sigma_start"]
    dev = cond["frame"].device
    b = cond["frame"].shape[0]
    sigmas = stage_sigmas(settings, diffusion, dev)
    x = torch.randn((b, stage.unet.channels, stage.frames, stage.size, stage.size), generator=generator).to(dev) * sigmas[0]
    if s0 > 0:
        if lowres is None:
            raise ValueError(f"stage '{stage.name}': sigma_start > 0 needs the low-res input")
        x = x + lowres.to(dev)
    model = GuidedDenoiser(denoiser, cond, settings["guidance"], stage.dynamic_threshold)
    cb = (lambda d: callback(d["i"] + 1, n)) if callback else None
    return spec.fn(model, x, sigmas, callback=cb, generator=generator, **spec.settings(stage))


def describe(settings: dict) -> str:
    n = settings["steps"]
    s = f"{settings['sampler']}, {n} step{'' if n == 1 else 's'}, guidance {settings['guidance']:g}"
    return s + (f", from its input at sigma {settings['sigma_start']:g}" if settings["sigma_start"] > 0 else "")


def stage_nfe(settings: dict) -> int:
    return get_sampler(settings["sampler"]).nfe(settings["steps"])


def cascade_nfe(cascade: CascadeConfig, stages=None, steps: dict | None = None) -> int:
    """Network evaluations per video of a cascade at its own sampling settings (steps: per-stage overrides);
    stages: the names of the stages run (default: all; the base always runs). A CFG pair counts once."""
    steps = steps or {}
    run = [s for s in cascade.stages if s.is_base or stages is None or s.name in stages]
    return sum(stage_nfe(sampling_settings(s, steps=steps.get(s.name))) for s in run)
