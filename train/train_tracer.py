"""Train the LV tracer (echogen.nets.tracer) on an EchoNet-format dataset's VolumeTracings.csv.

  python train/train_tracer.py --data DIR --out runs/tracer [--bundle assets/weights/demo]
  torchrun --nproc_per_node=2 train/train_tracer.py ... (same flags; DDP: N ranks at --batch B train on the
  frames and augmentations one process at batch N*B does (GlobalBatches); only rank 0 reads and writes the run
  folder, the other ranks (nodes) get its state by broadcast, as in train_regressor.py)

The labels are the LV cavity masks of the traced frames (ED and ES of one beat per video), rasterised from
EchoNet's long axis + 20 chords (echogen.eval.lv_volume.tracing_mask), so the same script trains on the phantom,
simulator v2 or real EchoNet-Dynamic. Random traced frames, domain randomisation (echogen.data.augment, the
masks follow the geometry; --augment off to switch it off), BCE + soft-Dice loss, Adam with a cosine
schedule. Every --eval-every steps: Dice on every VAL traced frame; the best model (VAL Dice) is exported to
RUN/tracer.safetensors (and into --bundle DIR). At the end, on TEST: Dice on the traced frames and the
tracing EF of each whole video (area curve -> ED / ES -> method of disks) against FileList's EF, written to
RUN/test.json and RUN/test_videos.csv. Resumes from RUN/ckpt.safetensors + RUN/state.json.
"""
import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path


import numpy as np
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from echogen import distributed
from echogen.data.augment import get_augment_preset, augment_clips
from echogen.data.batches import GlobalBatches
from echogen.eval import tracer_eval
from echogen.eval.readout import describe_dataset
from echogen.nets.tracer import (LVTracer, TracerConfig, dice, get_tracer_preset, load_tracer, num_params,
                            predict_probs, save_tracer)
from echogen.rng import sample_generators
from echogen.weights.bundle import load_state_strict, load_tensors, save_tensors, update_manifest

DEFAULTS = {"small": (16, 3000), "full": (32, 20000), "tiny": (2, 20)}   # batch per process, steps

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", required=True, help="EchoNet-format dataset root (FileList.csv, VolumeTracings.csv, Videos/)")
p.add_argument("--preset", default="small", help="small | full (| tiny, for tests)")
p.add_argument("--out", required=True, help="run folder (resumed if it holds a checkpoint)")
p.add_argument("--steps", type=int, default=0, help="total optimiser steps (default: the preset's)")
p.add_argument("--batch", type=int, default=0, help="traced frames per step and process (default: the preset's)")
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--augment", default="wide", help="domain randomisation preset: wide | mild | off (echogen.data.augment)")
p.add_argument("--eval-every", type=int, default=250)
p.add_argument("--ckpt-every", type=int, default=250)
p.add_argument("--log-every", type=int, default=25)
p.add_argument("--minutes", type=float, default=0, help="stop (with a checkpoint) after this many minutes")
p.add_argument("--max-videos", type=int, default=None, help="use only the first N TRAIN videos")
p.add_argument("--mask-frames", type=int, default=0, help="also train on N more frames of each TRAIN video that "
               "has per-frame masks (DATA/Masks/NAME.npz, `python -m echogen phantom --masks`): frames no EchoNet "
               "tracing labels (mid-systole, diastole with open mitral leaflets)")
p.add_argument("--val-videos", type=int, default=None)
p.add_argument("--test-videos", type=int, default=None, help="first N TEST videos (0 = skip TEST)")
p.add_argument("--trained-on", default=None, help="what the data is, for the readouts (default: from the dataset)")
p.add_argument("--bundle", default=None, help="also copy the best model into this weights bundle")
p.add_argument("--init-from", default=None, help="a weights bundle (or tracer .safetensors): a fresh run starts "
               "from its tracer, config and pixel statistics (fine-tuning on more data); a resumed run ignores it")
p.add_argument("--device", default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
p.add_argument("--debug-checksum", action="store_true",
               help="every rank writes RUN/checksum_rank{R}.json (parameter hash) at the end (tests DDP)")
args = p.parse_args()

if args.threads:
    torch.set_num_threads(args.threads)
dist = distributed.setup(args.device)
run = Path(args.out)
_mine = run / "state.json"   # before anything is written: does another rank see a newer checkpoint?
distributed.check_resume(dist, json.loads(_mine.read_text())["step"] if _mine.is_file() else 0, run)
if dist.main:
    run.mkdir(parents=True, exist_ok=True)
distributed.barrier(dist)
log = distributed.run_logger(run / "log.txt", dist)
aug_cfg = get_augment_preset(args.augment)


def _n_traced(keys) -> int:
    """How many of these (name, frame) keys are VolumeTracings.csv's traced frames."""
    from echogen.data.echonet import read_tracings
    tr = read_tracings(args.data)
    return sum(1 for name, fr in keys if fr in tr.get(name, {}))


def traced_frames(split: str, limit=None, mask_frames: int = 0):
    return tracer_eval.traced_frames(args.data, split, cfg.size, limit, mask_frames)


# ---- config / resume --------------------------------------------------------------------------
# Rank 0 alone reads the run folder (the other nodes may not see it); the others get its config, counters and
# tensors by broadcast, as in train_regressor.py.
ckpt_path, state_path = run / "ckpt.safetensors", run / "state.json"
resume = distributed.broadcast_object(dist.main and ckpt_path.is_file() and state_path.is_file(), dist)
if resume and dist.main:
    ck_tensors, cfg_dict, ck_meta = load_tensors(ckpt_path, "tracer_checkpoint")
    cfg = TracerConfig.from_dict(cfg_dict)
    state = json.loads(ck_meta["train_state"])
    if ck_meta.get("preset") != args.preset:
        raise SystemExit(f"error: {run} holds a '{ck_meta.get('preset')}' run; --preset {args.preset} differs")
elif not resume:   # a fresh run; --init-from fine-tunes a bundle's tracer: its config (and pixel statistics) too
    init_model, cfg = load_tracer(args.init_from) if args.init_from else (None, get_tracer_preset(args.preset))
    state = {"step": 0, "seen": 0, "best_val_dice": None, "best_step": None}
else:
    cfg, state = None, None
cfg, state = distributed.broadcast_object((cfg, state), dist)
batch = args.batch or DEFAULTS.get(args.preset, (16, 3000))[0]
steps = args.steps or DEFAULTS.get(args.preset, (16, 3000))[1]

t_load = time.time()
train = traced_frames("TRAIN", args.max_videos, args.mask_frames)
if train is None:
    raise SystemExit(f"error: {args.data}: no traced TRAIN frames (VolumeTracings.csv)")
val = traced_frames("VAL", args.val_videos)
if not resume and not args.init_from:
    f = train[0].astype(np.float64) / 255.0
    cfg.mean, cfg.std = float(f.mean()), float(max(f.std(), 1e-4))
trained_on = args.trained_on or describe_dataset(args.data)
if args.mask_frames:
    trained_on += f", + {args.mask_frames} frames per video from per-frame masks where the data has them"
log(f"data: {len(train[0])} TRAIN frames ({len(train[0]) - _n_traced(train[2])} of them from per-frame masks), {0 if val is None else len(val[0])} VAL "
    f"({time.time() - t_load:.1f} s to load); trained_on: {trained_on}")
if dist.main:
    (run / "config.json").write_text(json.dumps({
        "tracer": cfg.to_dict(), "preset": args.preset, "augment": aug_cfg.to_dict(), "trained_on": trained_on,
        "train": {**vars(args), "batch": batch, "steps": steps, "world": dist.world}}, indent=2))

torch.manual_seed(args.seed)
model = LVTracer(cfg).to(dist.device)
opt = torch.optim.Adam(model.parameters(), lr=args.lr)
if not resume and args.init_from and dist.main:
    model.load_state_dict(init_model.state_dict())
    log(f"initialised from the tracer of {args.init_from}")
if resume and dist.main:
    load_state_strict(model, {k[6:]: v for k, v in ck_tensors.items() if k.startswith("model.")}, str(ckpt_path))
    for i, prm in enumerate(model.parameters()):
        st = {k.split(".")[-1]: v.to(dist.device) for k, v in ck_tensors.items() if k.startswith(f"optim.p{i}.")}
        if st:
            st["step"] = st["step"].cpu()
            opt.state[prm] = st
state = distributed.broadcast_training_state(dist, model, None, opt, state)
if resume:
    log(f"resumed from {ckpt_path} at step {state['step']}")
log(f"LV tracer '{args.preset}': {num_params(model) / 1e6:.3f} M params, widths {cfg.widths}, input mean/std "
    f"{cfg.mean:.3f}/{cfg.std:.3f}, batch {batch} x {dist.world}, lr {args.lr}, augment {args.augment}, "
    f"device {dist.device}")
ddp = DDP(model) if dist.enabled else model


def lr_at(step: int) -> float:
    warm = min(1.0, (step + 1) / 50)
    return args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0))))


sampler = GlobalBatches(len(train[0]), batch, dist.world, dist.rank, args.seed)


def batch_at(step: int):
    """This rank's share of global batch `step` (echogen.data.batches.GlobalBatches: a function of (seed, step)
    only, so N ranks at batch B train on what one process at batch N*B does, and a resumed run draws what an
    uninterrupted one would have); each frame augmented with its own generator (per-sample seed)."""
    idx, seeds = zip(*sampler.step_items(step))
    idx = list(idx)
    x = torch.from_numpy(train[0][idx]).float().div_(255.0)[:, None]                   # (B, 1, S, S)
    m = torch.from_numpy(train[1][idx])[:, None]
    if args.augment != "off":
        pairs = [augment_clips(x[k:k + 1], g, aug_cfg, masks=m[k:k + 1], temporal=False)
                 for k, g in enumerate(sample_generators(seeds))]
        x, m = torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs])       # (B, T=1, S, S)
    return x, (m >= 0.5).float()


def loss_fn(logits, target):
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    soft_dice = (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + (1 - soft_dice).mean()


def sum_all(values: list) -> list:
    if not dist.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    tdist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate_val() -> float:
    mine = range(dist.rank, len(val[0]), dist.world)
    probs = predict_probs(model, torch.from_numpy(val[0][list(mine)])) if len(mine) else []
    dices = [dice(pr.numpy() >= cfg.threshold, val[1][i] >= 0.5) for pr, i in zip(probs, mine)]
    total, n = sum_all([float(sum(dices)), float(len(dices))])
    return total / max(n, 1)


def export(extra):
    meta = {"preset": args.preset, "trained_on": trained_on, "augment": args.augment, **extra}
    save_tracer(run / "tracer.safetensors", model, cfg, **meta)
    if args.bundle:
        save_tracer(Path(args.bundle) / "tracer.safetensors", model, cfg, **meta)
        update_manifest(args.bundle, tracer="tracer.safetensors")


def save_checkpoint():
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, prm in enumerate(model.parameters()):
        for k, v in opt.state.get(prm, {}).items():
            tensors[f"optim.p{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_tensors(ckpt_path, tensors, "tracer_checkpoint", cfg.to_dict(), preset=args.preset,
                 train_state=json.dumps(state))
    tmp = state_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_path)


# ---- training loop ------------------------------------------------------------------------------
if dist.main and val is not None and not (run / "val.csv").exists():
    (run / "val.csv").write_text("step,dice\n")
t_start, losses = time.time(), []
while state["step"] < steps:
    step = state["step"]
    x, m = batch_at(step)
    for grp in opt.param_groups:
        grp["lr"] = lr_at(step)
    model.train()
    loss = loss_fn(ddp(x.to(dist.device)), m.to(dist.device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    state["step"] += 1
    state["seen"] += x.shape[0] * dist.world
    losses.append(loss.item())
    step = state["step"]
    if step % args.log_every == 0 or step == steps:
        mean_loss = distributed.all_mean(sum(losses) / len(losses), dist)
        losses = []
        log(f"step {step} loss {mean_loss:.4f} lr {lr_at(step - 1):.2e} ({(time.time() - t_start) / 60:.1f} min)")
    out_of_time = bool(args.minutes) and distributed.all_mean(float((time.time() - t_start) / 60 > args.minutes), dist) > 0
    last = step == steps or out_of_time
    if val is not None and (step % args.eval_every == 0 or last):
        d = evaluate_val()
        log(f"step {step} VAL Dice {d:.4f} ({len(val[0])} traced frames)")
        if dist.main:
            with open(run / "val.csv", "a") as f:
                f.write(f"{step},{d:.6f}\n")
            if state["best_val_dice"] is None or d > state["best_val_dice"]:
                state["best_val_dice"], state["best_step"] = d, step
                export({"steps": step, "val_dice": f"{d:.4f}"})
                log(f"new best VAL Dice: exported {run / 'tracer.safetensors'}")
    if dist.main and (step % args.ckpt_every == 0 or last):
        if val is None:
            state["best_step"] = step
            export({"steps": step})
        save_checkpoint()
    if out_of_time:
        log(f"time limit of {args.minutes} min reached at step {step}")
        break
distributed.barrier(dist)

if args.debug_checksum:
    flat = torch.cat([q.detach().cpu().double().reshape(-1) for q in model.parameters()])
    (run / f"checksum_rank{dist.rank}.json").write_text(json.dumps({
        "step": state["step"], "sum": float(flat.sum()), "sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest()}))

# ---- TEST: Dice on traced frames, tracing EF of whole videos (rank 0) -----------------------------
if dist.main and args.test_videos != 0 and (run / "tracer.safetensors").is_file():
    best, _ = load_tracer(run / "tracer.safetensors", dist.device)
    try:
        summary, per_video = tracer_eval.evaluate_tracer(best, args.data, "TEST", args.test_videos)
    except ValueError as e:
        log(f"TEST skipped: {e}")
    else:
        summary.update(step=state["best_step"], trained_on=trained_on)
        (run / "test.json").write_text(json.dumps(summary, indent=2))
        with open(run / "test_videos.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in per_video for k in r)))
            w.writeheader()
            w.writerows(per_video)
        te = summary["tracing_ef"] or {}
        log(f"TEST (best model, step {state['best_step']}): Dice {summary['dice_mean']:.4f} on "
            f"{summary['traced_frames']} traced frames; tracing EF R^2 {te.get('r2', float('nan')):.4f} "
            f"MAE {te.get('mae', float('nan')):.2f} on {summary['videos'] - summary['tracing_failed']} of "
            f"{summary['videos']} videos")
distributed.barrier(dist)   # the other ranks wait for rank 0's TEST pass: tearing gloo down early aborted rank 1
del ddp   # before the group goes: a live DDP reducer holds it (distributed.cleanup)
distributed.cleanup(dist)
