"""Distil one stage of a weights bundle into a few-step student (issue 24; method: echogen/diffusion/distill.py).

  python train/distill.py --teacher assets/weights/demo --stage base --data DIR --out runs/distill/base \
      --bundle runs/demo-fast --steps-student 4 --substeps 3
  torchrun --nproc_per_node=4 train/distill.py ... (same flags; DDP, only rank 0 writes)

The student starts as the teacher's stage and learns to reproduce the GUIDED teacher (its cond/uncond pair,
guidance and thresholding) in --steps-student Euler steps of one network evaluation each (guidance folded
into the weights). Conditioning frames and EFs come from an EchoNet-format dataset's TRAIN split (half the
EFs of each batch are drawn uniformly in [10, 90]: counterfactual requests), so the same command distils a
converted published bundle on a GPU. SR stages see their clip's own low-res input, as in training.

N processes at --batch B draw what one process at --batch N*B draws (echogen.data.batches.GlobalBatches,
per-sample generators). Resumes from RUN/ckpt. Writes RUN/config.json, log.txt, loss.csv, loss.png,
samples/*.gif (teacher preview once, then the student's), RUN/<stage>.safetensors (the EMA student, its
config saying euler / N steps / guidance 1, its metadata naming the teacher) and, with --bundle, a bundle
whose other files are the teacher bundle's, referenced by relative path (never copied).
"""
import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from echogen import distributed
from echogen.data.batches import GlobalBatches, SeededItems
from echogen.data.echonet import EchoNetDataset
from echogen.device import tune_cpu_malloc
from echogen.diffusion.cascade import Cascade
from echogen.diffusion.distill import (DistillConfig, distill_loss, ef_targets, start_state, states_loss, student_sigmas,
                                       student_stage, teacher_trajectory)
from echogen.diffusion.preview import plot_loss_csv, write_stage_preview
from echogen.diffusion.stage import lowres_input, previous_stage, sampling_settings, stage_condition
from echogen.diffusion.training import EMA, LossCurve, optimizer_step
from echogen.data.resample import lowres_from_target, resize_frames
from echogen.rng import mix_seed, sample_generators, step_generator
from echogen.weights.bundle import (link_bundle, load_state_strict, load_tensors, read_manifest, save_tensors,
                                   update_manifest)
from echogen.weights.checkpoint import load_checkpoint, save_checkpoint

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--teacher", required=True, help="the weights bundle to distil (e.g. assets/weights/demo)")
p.add_argument("--stage", required=True, help="stage name, e.g. base | spatial | temporal")
p.add_argument("--data", required=True, help="EchoNet-format dataset root: conditioning frames, EFs, low-res inputs")
p.add_argument("--out", required=True, help="run folder (resumed if it holds a checkpoint)")
p.add_argument("--bundle", default=None, help="write the student into this bundle (created from --teacher by "
               "reference when absent)")
p.add_argument("--steps-student", type=int, default=4, help="student sampling steps = network evaluations")
p.add_argument("--substeps", type=int, default=3, help="teacher sampler steps per student step")
p.add_argument("--sigma-min", type=float, default=0.0, help="the student schedule's last sigma before 0 "
               "(0: the teacher's); a few-step schedule spends fewer steps on near-clean levels with e.g. 0.05")
p.add_argument("--teacher-forcing", type=float, default=0.5, help="probability that a batch trains on the "
               "teacher's trajectory (else on the student's own states)")
p.add_argument("--teacher-sampler", default="", help="sampler for the teacher's targets (default: the stage's, "
               "without churn)")
p.add_argument("--trajectories", type=int, default=0, help="> 0: first solve this many guided teacher trajectories "
               "(kept in RUN/trajectories.safetensors) and train on them with teacher forcing only: the teacher's "
               "cost is paid once instead of every step (the CPU recipe); 0: teacher targets on the fly")
p.add_argument("--init-student", default=None, help="start a new run from this student stage file (e.g. a "
               "bundle's distilled base.safetensors, to continue on other data) instead of from the teacher; its "
               "config must equal the student's")
p.add_argument("--p-random-ef", type=float, default=0.5, help="share of EFs drawn uniformly in [10, 90]")
p.add_argument("--iters", type=int, default=1000, help="total optimiser steps")
p.add_argument("--minutes", type=float, default=0, help="stop (with a checkpoint) after this many minutes")
p.add_argument("--batch", type=int, default=0, help="batch per process (default: the stage config's)")
p.add_argument("--lr", type=float, default=5e-5)
p.add_argument("--ema-half-life", type=float, default=500, help="EMA half-life in samples")
p.add_argument("--crop", type=int, default=-1, help="SR stages: train on random crops of this size (-1: the "
               "stage config's crop; 0: full frames)")
p.add_argument("--max-videos", type=int, default=None)
p.add_argument("--ckpt-every", type=int, default=100)
p.add_argument("--sample-every", type=int, default=500)
p.add_argument("--log-every", type=int, default=10)
p.add_argument("--commit-moments", default=None, choices=["bf16", "fp16"])
p.add_argument("--device", default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
args = p.parse_args()

# ---- setup -----------------------------------------------------------------------------------
if args.threads:
    torch.set_num_threads(args.threads)
tune_cpu_malloc()
dist = distributed.setup(args.device)
teacher_cascade = Cascade.load(args.teacher)
cascade = teacher_cascade.config
stage = cascade.stage(args.stage)
dcfg = DistillConfig(steps=args.steps_student, substeps=args.substeps, sigma_min=args.sigma_min,
                     teacher_forcing=1.0 if args.trajectories else args.teacher_forcing,   # a cache: teacher states only
                     teacher_sampler=args.teacher_sampler)
student_cfg = student_stage(stage, dcfg)
if not stage.is_base and student_cfg.sample_sigma_min and student_cfg.sample_sigma_min >= stage.sigma_start > 0:
    raise SystemExit(f"error: --sigma-min {args.sigma_min} must be below the stage's sigma_start {stage.sigma_start}")
batch = args.batch or stage.batch_size
crop = stage.crop if args.crop < 0 else args.crop
run = Path(args.out)
_mine = run / "ckpt" / "state.json"
distributed.check_resume(dist, json.loads(_mine.read_text())["step"] if _mine.is_file() else 0, run)
if dist.main:
    (run / "samples").mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"teacher": str(args.teacher), "stage": stage.name,
                                                 "distill": dataclasses.asdict(dcfg),
                                                 "student": dataclasses.asdict(student_cfg),
                                                 "train": {**vars(args), "batch": batch, "world": dist.world}},
                                                indent=2))
log = distributed.run_logger(run / "log.txt", dist)

teacher = teacher_cascade.denoisers[stage.name].to(dist.device).eval().requires_grad_(False)
model = copy.deepcopy(teacher).train().requires_grad_(True)
if args.init_student:   # a warm start; a resumed run's checkpoint (below) overrides it
    _t, _cfg, _ = load_tensors(args.init_student, "stage")
    if _cfg != json.loads(json.dumps(dataclasses.asdict(student_cfg))):
        raise SystemExit(f"error: --init-student {args.init_student}: its stage config differs from the student's "
                         f"(steps {_cfg.get('steps')}, sample_sigma_min {_cfg.get('sample_sigma_min')} vs "
                         f"{student_cfg.steps}, {student_cfg.sample_sigma_min})")
    load_state_strict(model.net, _t, str(args.init_student))
ema = EMA(model, half_life=args.ema_half_life)
opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
state = (load_checkpoint(run, model, ema.model, opt) if dist.main else None) or {"step": 0, "seen": 0}
state = distributed.broadcast_training_state(dist, model, ema.model, opt, state)
torch.manual_seed(mix_seed(args.seed, dist.rank, state["step"]))
if state["step"]:
    log(f"resumed from {run / 'ckpt'} at step {state['step']}")
log(f"distilling stage {stage.name} of {args.teacher} ({stage.sampler}, {stage.steps} steps, guidance "
    f"{stage.guidance:g}) into {dcfg.steps} Euler steps at guidance 1; {dcfg.substeps} teacher sub-steps per step; "
    f"batch {batch} x {dist.world}, lr {args.lr}, crop {crop or 'none'}, device {dist.device}")
sync = distributed.GradSync(model, dist, "find_unused")
ddp = sync.module

data = SeededItems(EchoNetDataset(args.data, "TRAIN", frames=stage.frames, fps=stage.fps, size=stage.size,
                                  max_videos=args.max_videos, seed=args.seed))
sampler = GlobalBatches(len(data), batch, dist.world, dist.rank, args.seed, start_step=state["step"])
loader = DataLoader(data, batch_size=batch, sampler=sampler)
val = EchoNetDataset(args.data, "VAL", frames=stage.frames, fps=stage.fps, size=stage.size, random_start=False,
                     cond_frame="first", max_videos=1)
prev = previous_stage(cascade, stage)
settings = sampling_settings(student_cfg)


def batch_inputs(b, gen):
    """(cond, x_start) of one batch: per-sample draws from the sample's seed, the crop from the step's generator."""
    gens = sample_generators(b["seed"])
    n = b["frame"].shape[0]
    ef = b["ef"].float()
    if stage.is_base:   # SR stages keep the clip's own EF: their low-res input is that clip
        ef = torch.cat([ef_targets(ef[i:i + 1], g, args.p_random_ef) for i, g in enumerate(gens)])
    low = aug = None
    if prev is not None:
        video = resize_frames(b["video"], stage.size)
        low = lowres_input(stage, lowres_from_target(video, stage.fps, prev.frames, prev.fps, prev.size), prev.fps)
        aug = torch.full((n,), stage.lowres_aug_sample)
    cond = stage_condition(stage, b["frame"], ef, low, aug, gens)
    shape = (n, stage.unet.channels, stage.frames, stage.size, stage.size)
    x = torch.stack([start_state(stage, settings, cascade.diffusion, (1,) + shape[1:], g,
                                 None if low is None else low[i:i + 1])[0] for i, g in enumerate(gens)])
    if crop and crop < stage.size:   # one crop per batch: target states, I_c and low-res input alike
        i, j = (int(torch.randint(0, stage.size - crop + 1, (1,), generator=gen)) for _ in range(2))
        x = x[..., i:i + crop, j:j + crop]
        cond["frame"] = cond["frame"][..., i:i + crop, j:j + crop]
        if "lowres" in cond:
            cond["lowres"] = cond["lowres"][..., i:i + crop, j:j + crop]
    return {k: v.to(dist.device) for k, v in cond.items()}, x.to(dist.device)


def export():
    cfg = dataclasses.asdict(student_cfg)
    meta = dict(preset=cascade.name, steps=str(state["step"]),
                distilled_from=json.dumps({"teacher": str(args.teacher), "stage": stage.name, "sampler": stage.sampler,
                                           "steps": stage.steps, "guidance": stage.guidance,
                                           "distill": dataclasses.asdict(dcfg), "iters": state["step"],
                                           "batch": batch * dist.world, "lr": args.lr, "trajectories": args.trajectories,
                                           "data": str(args.data), "init_student": str(args.init_student or "")}))
    save_tensors(run / f"{stage.name}.safetensors", ema.model.net.state_dict(), "stage", cfg, **meta)
    if args.bundle:
        out = Path(args.bundle)
        if not (out / "manifest.json").is_file():
            link_bundle(Path(args.teacher), out)
        save_tensors(out / f"{stage.name}.safetensors", ema.model.net.state_dict(), "stage", cfg, **meta)
        man = read_manifest(out)
        casc = man["cascade"]
        casc["stages"] = [cfg if s["name"] == stage.name else s for s in casc["stages"]]
        update_manifest(out, cascade=casc, stages={stage.name: f"{stage.name}.safetensors"}, variant="fast",
                        provenance={"distilled": {**(man.get("provenance", {}).get("distilled") or {}),
                                                  stage.name: json.loads(meta["distilled_from"])}})
    log(f"exported the EMA student at step {state['step']}")


def build_trajectories(n: int) -> dict:
    """n guided teacher trajectories from TRAIN batches (their own stream: seed + 1), at the student's noise
    levels: {"states": (steps + 1, n, ...), cond keys: (n, ...)}. Every rank builds the same set."""
    path = run / "trajectories.safetensors"
    if path.is_file():
        t, meta, _ = load_tensors(path, "trajectories")
        if meta == {"distill": dataclasses.asdict(dcfg), "n": n, "seed": args.seed, "crop": crop}:
            log(f"trajectories: {n} read from {path}")
            return t
    chunk = 8    # a fixed build batch: the set does not depend on --batch or the number of ranks
    feed = GlobalBatches(len(data), chunk, 1, 0, args.seed + 1)
    loader1 = iter(DataLoader(data, batch_size=chunk, sampler=feed))
    parts, done = [], 0
    for k in tqdm(range((n + chunk - 1) // chunk), desc="teacher trajectories", disable=not dist.main):
        cond, x = batch_inputs(next(loader1), step_generator(args.seed + 1, k))
        states = teacher_trajectory(teacher, stage, cascade.diffusion, dcfg, cond, x)
        parts.append({"states": states.cpu(), **{k2: v.cpu() for k2, v in cond.items()}})
        done += x.shape[0]
    t = {"states": torch.cat([q["states"] for q in parts], dim=1)[:, :n]}
    t.update({k: torch.cat([q[k] for q in parts])[:n] for k in parts[0] if k != "states"})
    if dist.main:
        save_tensors(path, t, "trajectories", {"distill": dataclasses.asdict(dcfg), "n": n, "seed": args.seed,
                                               "crop": crop})
    log(f"trajectories: {n} solved by the guided teacher ({dcfg.steps} x {dcfg.substeps} teacher steps each)")
    return t


# ---- training loop ---------------------------------------------------------------------------
cache = build_trajectories(args.trajectories) if args.trajectories else None
if cache is not None:   # training draws batches of trajectories (global-batch slots, as the data stream)
    cache_feed = GlobalBatches(args.trajectories, batch, dist.world, dist.rank, args.seed)
    sigmas = student_sigmas(stage, dcfg, cascade.diffusion)
if dist.main and not (run / "loss.csv").exists():
    write_stage_preview(teacher, cascade, stage, val[0], run / "samples" / "teacher.gif", dist.device)
t_start, step_times = time.time(), []
curve = LossCurve(run / "loss.csv", dist)
bar = tqdm(total=args.iters, initial=state["step"], disable=not dist.main, desc=f"distil {stage.name}",
           dynamic_ncols=True)
it = iter(loader) if cache is None else None
while state["step"] < args.iters:
    t_step = time.perf_counter()
    gen = step_generator(args.seed, state["step"])
    model.train()
    if cache is not None:
        idx = torch.tensor([i for i, _ in cache_feed.step_items(state["step"])])
        cond = {k: v[idx].to(dist.device) for k, v in cache.items() if k != "states"}
        loss, per_step = states_loss(ddp, cache["states"][:, idx].to(dist.device), sigmas, cond, cascade.diffusion)
    else:
        forcing = bool(torch.rand((), generator=gen) < dcfg.teacher_forcing)   # the same on every rank
        cond, x = batch_inputs(next(it), gen)
        loss, per_step = distill_loss(ddp, teacher, stage, cascade.diffusion, dcfg, cond, x, forcing)
    optimizer_step(sync, opt, loss, ema, model, state, batch * dist.world)
    curve.add(loss.item())
    step_times.append(time.perf_counter() - t_step)
    bar.update(1)
    step = state["step"]
    if step % args.log_every == 0 or step == args.iters:
        mean = curve.flush(step)
        bar.set_postfix(loss=f"{mean:.4f}")
        if dist.main:
            log(f"step {step} loss {mean:.4f} (last batch per student step: "
                f"{', '.join(f'{v:.3g}' for v in per_step)}; {(time.time() - t_start) / 60:.1f} min)")
    out_of_time = bool(args.minutes) and distributed.all_mean(float((time.time() - t_start) / 60 > args.minutes), dist) > 0
    if dist.main and (step % args.ckpt_every == 0 or step == args.iters or out_of_time):
        save_checkpoint(run, model, ema.model, opt, state, {"student": dataclasses.asdict(student_cfg)},
                        moments_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.commit_moments))
        plot_loss_csv(run / "loss.csv", run / "loss.png", f"distil {cascade.name} / {stage.name}", "distillation loss")
        export()
    if dist.main and args.sample_every and (step % args.sample_every == 0 or step == args.iters):
        write_stage_preview(ema.model, cascade, student_cfg, val[0], run / "samples" / f"step{step:07d}.gif",
                            dist.device)
    if out_of_time:
        log(f"time limit of {args.minutes} min reached at step {step}")
        break
bar.close()
if len(step_times) > 2:
    log(f"mean step time {sum(step_times[2:]) / len(step_times[2:]):.3f} s over {len(step_times) - 2} steps "
        f"(rank 0, world {dist.world})")
distributed.barrier(dist)
del sync   # before the group goes: a live DDP reducer holds it (distributed.cleanup)
distributed.cleanup(dist)
