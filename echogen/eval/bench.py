"""Timing and memory of the cascade's stages: the reusable half of `python -m echogen bench`.

One "forward" is one call of the guided denoiser as a sampler makes it: classifier-free guidance runs
cond and uncond in ONE batch, so a stage with guidance != 1 is timed at twice the video batch. The
estimate of a whole video is sum over stages of (forward time x NFE at the stage's default sampler);
small presets also get a measured end-to-end `Cascade.sample`.

Peak memory: on CUDA, torch.cuda.max_memory_allocated over one forward; on the CPU, the rise of the
process's resident set over one forward, sampled from /proc/self/statm by a thread (falling back to
the rise of getrusage's ru_maxrss, which only sees new process-wide peaks).
"""
from __future__ import annotations

import dataclasses

import os
import platform
import resource
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field

import torch

from echogen.config import CascadeConfig, StageConfig
from echogen.device import autocast, resolve_precision
from echogen.diffusion.guidance import GuidedDenoiser
from echogen.diffusion.samplers import nfe
from echogen.diffusion.stage import stage_condition


@dataclass
class StageBench:
    stage: str
    params: int              # parameters of the stage's network
    batch: int               # forward batch (videos x 2 when CFG runs cond/uncond together)
    frames: int
    size: int
    sampler: str
    steps: int
    nfe: int                 # network evaluations per video at the default sampler
    forward_s: float         # median seconds per forward
    forward_all_s: list = field(default_factory=list)  # every timed repeat
    est_video_s: float = 0.0  # forward_s x nfe
    peak_mem_mb: float = 0.0
    mem_kind: str = ""       # cuda_max_allocated | cpu_rss_delta | cpu_maxrss_delta
    note: str = ""           # what was changed from the preset (frames, batch)
    precision: str = "fp32"  # what the forwards ran in (echogen.device.resolve_precision)
    compiled: str = ""       # torch.compile backend/mode, "" when eager
    warmup_s: float = 0.0    # seconds of the untimed warm-up forwards (holds the compilation when compiled)


def machine_info(device: torch.device) -> dict:
    """Where a number was measured: device, threads, load, torch version, date."""
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    try:
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int = 5, warmup: int = 1, warmup_s: list | None = None) -> list:
    """Seconds of each of `repeats` calls of fn(), after `warmup` untimed calls (their total seconds are
    appended to warmup_s when given)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    if warmup_s is not None:
        warmup_s.append(time.perf_counter() - t0)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_memory(fn, device: torch.device, interval: float = 0.002) -> tuple:
    """Run fn() once; return (peak MB above the level before the call, how it was measured)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda_max_allocated"
    base = _rss_bytes()
    if base is None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "cpu_maxrss_delta"
    peak, done = [base], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes() or 0)
            time.sleep(interval)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    peak[0] = max(peak[0], _rss_bytes() or 0)
    return (peak[0] - base) / 2**20, "cpu_rss_delta"


def stage_inputs(stage: StageConfig, batch: int = 1, frames: int | None = None, size: int | None = None,
                 device="cpu", seed: int = 0) -> dict:
    """Random inputs of the shapes a stage samples: x (B,C,T,H,W) and its conditioning dict, built by the
    stage contract (echogen.diffusion.stage.stage_condition) from a random frame, EF and low-res video;
    frames / size override the stage's (timing at other shapes)."""
    g = torch.Generator().manual_seed(seed)
    t, s = frames or stage.frames, size or stage.size
    st = dataclasses.replace(stage, frames=t, size=s)
    x = torch.randn((batch, stage.unet.channels, t, s, s), generator=g)
    frame = torch.rand((batch, 1, s, s), generator=g)
    ef = torch.rand(batch, generator=g) * 70 + 15
    low = aug = None
    if not stage.is_base:
        low = torch.rand((batch, stage.unet.lowres_channels, t, s, s), generator=g) * 2 - 1
        aug = torch.full((batch,), stage.lowres_aug_sample)
    cond = stage_condition(st, frame, ef, low, aug, g)
    return {"x": x.to(device), "cond": {k: v.to(device) for k, v in cond.items()}}


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def bench_stage(stage: StageConfig, denoiser, device, batch: int = 1, frames: int | None = None,
                repeats: int = 5, warmup: int = 1, memory: bool = True, sigma: float = 1.0,
                precision: str = "auto", compiled: str = "") -> StageBench:
    """Time one guided-denoiser call of `stage` (what each of its NFE costs), under the precision
    Cascade.sample uses (echogen.device.autocast). compiled: label of a torch.compile already applied."""
    device = torch.device(device)
    denoiser = denoiser.to(device).eval()
    inp = stage_inputs(stage, batch, frames, device=device)
    model = GuidedDenoiser(denoiser, inp["cond"], stage.guidance, stage.dynamic_threshold)
    x = inp["x"] * sigma

    def call():
        with autocast(device, precision):
            return model(x, sigma)
    warm = []
    times = time_call(call, device, repeats, warmup, warm)
    mem, kind = peak_memory(call, device) if memory else (float("nan"), "")
    n = nfe(stage.sampler, stage.steps)
    fwd = statistics.median(times)
    t = frames or stage.frames
    note = [] if t == stage.frames else [f"frames {t} (preset {stage.frames})"]
    if batch != 1:
        note.append(f"{batch} videos")
    return StageBench(stage=stage.name, params=count_params(denoiser), batch=batch * (1 if stage.guidance == 1 else 2),
                      frames=t, size=stage.size, sampler=stage.sampler, steps=stage.steps, nfe=n,
                      forward_s=fwd, forward_all_s=[round(v, 5) for v in times], est_video_s=fwd * n,
                      peak_mem_mb=mem, mem_kind=kind, note="; ".join(note),
                      precision=resolve_precision(device, precision),
                      compiled=compiled, warmup_s=round(warm[0], 3))


@torch.no_grad()
def bench_cascade(config: CascadeConfig, device="cpu", stages=None, batch: int = 1, frames: int | None = None,
                  repeats: int = 5, warmup: int = 1, memory: bool = True, seed: int = 0, precision: str = "auto",
                  compile_mode: str | None = None) -> list:
    """bench_stage for the named stages (default all) of a cascade with freshly initialised weights.
    compile_mode: torch.compile each network first ("default", "reduce-overhead", "max-autotune")."""
    from echogen.diffusion.cascade import build_denoiser, compile_network

    names = config.stage_names if stages is None else list(stages)
    rows = []
    for st in config.stages:
        if st.name not in names:
            continue
        torch.manual_seed(seed)
        den = build_denoiser(st, config.diffusion)
        if compile_mode:
            compile_network(den.net, compile_mode)
        rows.append(bench_stage(st, den, device, batch, frames, repeats, warmup, memory, precision=precision,
                                compiled=compile_mode or ""))
        del den
    return rows


@torch.no_grad()
def bench_end_to_end(config: CascadeConfig, device="cpu", batch: int = 1, repeats: int = 1, warmup: int = 1,
                     seed: int = 0, precision: str = "auto", compile_mode: str | None = None) -> dict:
    """Measured seconds of `Cascade.sample` for `batch` videos (all stages, default samplers)."""
    from echogen.diffusion.cascade import Cascade

    casc = Cascade.random(config, device=device, seed=seed).set_speed(precision, compile_mode)
    base = config.stages[0]
    frame = torch.rand((batch, 1, 112, 112), generator=torch.Generator().manual_seed(seed))
    ef = [55.0] * batch
    per_stage = []

    def run():
        res = casc.sample(frame, ef, seed=seed)
        per_stage.append({r.name: round(r.seconds, 4) for r in res})

    times = time_call(run, torch.device(device), repeats, warmup)
    return {"preset": config.name, "batch": batch, "precision": resolve_precision(device, precision),
            "compiled": compile_mode or "",
            "seconds": statistics.median(times),
            "seconds_all": [round(t, 4) for t in times], "per_stage_s": per_stage[-1],
            "base_frames": base.frames}


def rows_as_dicts(rows) -> list:
    return [asdict(r) for r in rows]


def markdown_table(rows) -> str:
    head = ("| stage | params | forward batch | T x H x W | sampler, steps | NFE | forward s (median) "
            "| est. s/video | peak MB | warm-up s | note |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r.stage} | {r.params / 1e6:.2f} M | {r.batch} | {r.frames}x{r.size}x{r.size} "
                     f"| {r.sampler}, {r.steps} | {r.nfe} | {r.forward_s:.4f} | {r.est_video_s:.2f} "
                     f"| {'-' if r.peak_mem_mb != r.peak_mem_mb else f'{r.peak_mem_mb:.0f}'} | {r.warmup_s:.2f} "
                     f"| {r.note} |")
    total = sum(r.est_video_s for r in rows)
    lines.append(f"| **total** | {sum(r.params for r in rows) / 1e6:.2f} M | | | | {sum(r.nfe for r in rows)} "
                 f"| | **{total:.2f}** | | | |")
    return "\n".join(lines)
