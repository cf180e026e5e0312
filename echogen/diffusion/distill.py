"""Guided few-step distillation of one cascade stage (issue 24; train/distill.py is the script).

The student starts as a copy of the teacher and learns to take, in ONE deterministic Euler (DDIM) step,
the path the GUIDED teacher takes over a whole interval of its schedule:

  student schedule  sigma_0 > sigma_1 > ... > sigma_N = 0   (stage_sigmas: Karras, N steps, the stage's
                                                           sigma_start for SR stages, sigma_min of the student)
  teacher target    y = x(sigma_{i+1}) solved from x(sigma_i) with K sub-steps of the teacher's own sampler,
                    with classifier-free guidance w (its cond/uncond pair) and its dynamic thresholding
  student target    the denoised value D* for which one Euler step x -> y is exact:
                    y = x + (sigma_{i+1} - sigma_i) (x - D*) / sigma_i   =>   D* = x - sigma_i (y - x) / (sigma_{i+1} - sigma_i)
                    (at sigma_{i+1} = 0: D* = y)

This is progressive distillation (Salimans & Ho 2022) with the guided teacher of Meng et al. (2023) folded
into the student (the student is called once per step, with guidance 1: no cond/uncond pair), done in one
round with K teacher sub-steps per student step instead of repeated halvings. The states x(sigma_i) the
student is trained on are, per batch, either the teacher's own trajectory (teacher forcing) or the student's
(on-policy: the states it will meet when it samples alone). The loss is EDM's weighted denoising MSE on D*.
"""
from __future__ import annotations

import dataclasses

import torch

from echogen.config import DiffusionConfig, StageConfig
from echogen.diffusion.guidance import GuidedDenoiser
from echogen.diffusion.samplers import get_sampler, get_sigmas_karras
from echogen.diffusion.stage import sampling_settings, stage_sigmas


@dataclasses.dataclass
class DistillConfig:
    """What the student becomes and how its targets are made."""
    steps: int = 4                  # student steps (= its network evaluations per sample)
    substeps: int = 3               # teacher sampler steps per student step
    sigma_min: float = 0.0          # the student schedule's last sigma before 0 (0: the teacher's)
    teacher_forcing: float = 0.5    # probability that a batch walks the teacher's states (else the student's)
    teacher_sampler: str = ""       # "" = the teacher stage's sampler (run deterministically: no churn)


def student_stage(teacher: StageConfig, cfg: DistillConfig) -> StageConfig:
    """The distilled stage's config: the teacher's network, sampled with Euler in cfg.steps steps at guidance 1
    (the teacher's guidance is in its weights), no churn, from cfg.sigma_min."""
    return dataclasses.replace(teacher, sampler="euler", steps=cfg.steps, guidance=1.0, S_churn=0.0,
                               sample_sigma_min=cfg.sigma_min or teacher.sample_sigma_min)


def interval_sigmas(sigma_from: float, sigma_to: float, substeps: int, diffusion: DiffusionConfig) -> torch.Tensor:
    """substeps + 1 noise levels from sigma_from to sigma_to, spaced like Karras' schedule (rho); when
    sigma_to is 0 the last level before it is the diffusion's sigma_min (as in the teacher's own schedule)."""
    if sigma_to > 0:
        return get_sigmas_karras(substeps + 1, sigma_to, sigma_from, diffusion.rho)[:-1]
    return get_sigmas_karras(substeps, min(diffusion.sigma_min, sigma_from), sigma_from, diffusion.rho)


@torch.no_grad()
def teacher_solve(model, x: torch.Tensor, sigma_from: float, sigma_to: float, substeps: int, sampler: str,
                  diffusion: DiffusionConfig, settings: dict | None = None) -> torch.Tensor:
    """x at sigma_to, solved from x at sigma_from by `sampler` in `substeps` steps of the (guided) denoiser
    `model(x, sigma)`. settings: the sampler's keyword settings (churn must be off: the target must be a
    function of x)."""
    spec = get_sampler(sampler)
    sig = interval_sigmas(sigma_from, sigma_to, substeps, diffusion).to(x.device)
    return spec.fn(model, x, sig, **(settings or {}))


def euler_target(x: torch.Tensor, y: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """D* such that one Euler step of the probability-flow ODE from (x, sigma) with denoised D* lands on y."""
    if sigma_next == 0:
        return y
    return x - sigma * (y - x) / (sigma_next - sigma)


def teacher_settings(stage: StageConfig, sampler: str) -> dict:
    """The teacher sampler's keyword settings with churn off (heun's S_churn; others have none)."""
    s = get_sampler(sampler).settings(stage)
    return {**s, "S_churn": 0.0} if "S_churn" in s else s


def student_sigmas(stage: StageConfig, cfg: DistillConfig, diffusion: DiffusionConfig) -> list[float]:
    """The student's noise levels (its sampling schedule, ending in 0)."""
    return stage_sigmas(sampling_settings(student_stage(stage, cfg)), diffusion).tolist()


def guided_teacher(teacher, stage: StageConfig, cond: dict) -> GuidedDenoiser:
    """The teacher as the app samples it: guidance stage.guidance (cond/uncond pair) and dynamic thresholding."""
    return GuidedDenoiser(teacher, cond, stage.guidance, stage.dynamic_threshold)


@torch.no_grad()
def teacher_trajectory(teacher, stage: StageConfig, diffusion: DiffusionConfig, cfg: DistillConfig, cond: dict,
                       x: torch.Tensor) -> torch.Tensor:
    """The guided teacher's states at the student's noise levels, from x at the first: (steps + 1, B, ...)."""
    sampler = cfg.teacher_sampler or stage.sampler
    settings = teacher_settings(stage, sampler)
    sigmas = student_sigmas(stage, cfg, diffusion)
    guided = guided_teacher(teacher, stage, cond)
    states = [x]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        states.append(teacher_solve(guided, states[-1], s, s_next, cfg.substeps, sampler, diffusion, settings))
    return torch.stack(states)


def _step_loss(student, x, target, s: float, cond: dict, diffusion: DiffusionConfig):
    D = student(x, torch.full((x.shape[0],), s, device=x.device), **cond)
    weight = (s ** 2 + diffusion.sigma_data ** 2) / (s * diffusion.sigma_data) ** 2   # EDM's lambda(sigma)
    return weight * ((D - target) ** 2).flatten(1).mean(1).mean(), D


def states_loss(student, states: torch.Tensor, sigmas: list[float], cond: dict,
                diffusion: DiffusionConfig) -> tuple[torch.Tensor, list[float]]:
    """Teacher forcing on given teacher states (teacher_trajectory): mean over the student's steps of the loss
    of its one-step prediction from state i against the Euler target that lands on state i + 1."""
    total, per_step = 0.0, []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        loss, _ = _step_loss(student, states[i], euler_target(states[i], states[i + 1], s, s_next), s, cond, diffusion)
        total = total + loss
        per_step.append(float(loss.detach()))
    return total / (len(sigmas) - 1), per_step


def distill_loss(student, teacher, stage: StageConfig, diffusion: DiffusionConfig, cfg: DistillConfig, cond: dict,
                 x: torch.Tensor, teacher_forcing: bool) -> tuple[torch.Tensor, list[float]]:
    """Mean weighted loss of one batch over all student steps, and the loss of each step.

    student / teacher: denoisers D(x, sigma, **cond); cond: the stage's conditioning (stage_condition, on the
    training crop); x: the starting state at the student's first sigma (start_state). teacher_forcing: train
    on the teacher's trajectory; else on the student's own states, each with the teacher's target from it."""
    sigmas = student_sigmas(stage, cfg, diffusion)
    if teacher_forcing:
        return states_loss(student, teacher_trajectory(teacher, stage, diffusion, cfg, cond, x), sigmas, cond,
                           diffusion)
    sampler = cfg.teacher_sampler or stage.sampler
    settings = teacher_settings(stage, sampler)
    guided = guided_teacher(teacher, stage, cond)
    total, per_step = 0.0, []
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        y = teacher_solve(guided, x, s, s_next, cfg.substeps, sampler, diffusion, settings)
        loss, D = _step_loss(student, x, euler_target(x, y, s, s_next), s, cond, diffusion)
        total = total + loss
        per_step.append(float(loss.detach()))
        with torch.no_grad():   # where the student's own Euler step lands
            x = x + (s_next - s) * (x - D.detach()) / s
    return total / (len(sigmas) - 1), per_step


def start_state(stage: StageConfig, settings: dict, diffusion: DiffusionConfig, shape, generator,
                lowres: torch.Tensor | None = None, device="cpu") -> torch.Tensor:
    """Where sampling starts (as echogen.diffusion.stage.sample_stage): noise at sigma_max, or the SR stage's
    un-noised low-res input plus noise at sigma_start."""
    s0 = float(stage_sigmas(settings, diffusion)[0])
    x = torch.randn(shape, generator=generator).to(device) * s0
    if settings["sigma_start"] > 0:
        if lowres is None:
            raise ValueError(f"stage '{stage.name}': sigma_start > 0 needs the low-res input")
        x = x + lowres.to(device)
    return x


def ef_targets(ef: torch.Tensor, generator: torch.Generator, p_random: float = 0.5, low: float = 10.0,
               high: float = 90.0) -> torch.Tensor:
    """The EFs a batch is distilled at: each sample's own EF, or (probability p_random) one drawn uniformly
    in [low, high] (the counterfactual requests where guidance matters most)."""
    u = torch.rand(ef.shape, generator=generator)
    draw = low + (high - low) * torch.rand(ef.shape, generator=generator)
    return torch.where(u < p_random, draw, ef.float())


__all__ = ["DistillConfig", "student_stage", "student_sigmas", "interval_sigmas", "teacher_solve", "euler_target",
           "teacher_trajectory", "states_loss", "distill_loss", "start_state", "ef_targets"]
