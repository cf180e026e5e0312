"""Train the EF regressor on an EchoNet-format dataset (EchoNet-Dynamic or the phantom).

  python train/train_regressor.py --data DIR --preset small --out runs/regressor
  torchrun --nproc_per_node=4 train/train_regressor.py ... (same flags; DDP, only rank 0 writes)

Random clips of cfg.frames frames at cfg.fps from TRAIN videos, domain randomisation (echogen.data.augment; --augment
wide|mild|off), MSE on EF (%),
Adam (lr 1e-4 as the paper). Every --eval-every steps: MAE / RMSE / R^2 on one clip per VAL video; the
best model (by VAL MAE) is exported to RUN/regressor.safetensors (and into --bundle DIR). At the end:
TEST MAE / RMSE / R^2 of that best model, each video scored as the mean over all its clips (EchoNet).
Resumes from RUN/ckpt.safetensors + RUN/state.json. Writes RUN/config.json, RUN/log.txt, RUN/val.csv.

Under torchrun (one or several nodes) N processes at --batch B train as one process at --batch N*B:
the same clips, the same augmentation (per-sample seeds, echogen.data.batches.GlobalBatches), gradients
averaged by DDP, so the same loss curve up to float rounding (BatchNorm presets: per-rank batch
statistics unless SyncBatchNorm, used on CUDA). Only rank 0 reads the checkpoint and writes files; the
other ranks get its state by broadcast.
"""
import argparse
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
from torch.utils.data import DataLoader
from tqdm import tqdm

from echogen import distributed
from echogen.data.augment import augment_clips, get_augment_preset
from echogen.data.echonet import EchoNetDataset, load_video
from echogen.eval.metrics import regression_metrics
from echogen.eval.readout import describe_dataset
from echogen.nets.regressor import (EFRegressor, RegressorConfig, get_regressor_preset, load_regressor, num_params,
                                    predict_ef, save_regressor)
from echogen.data.batches import GlobalBatches, SeededItems
from echogen.diffusion.training import EMA
from echogen.rng import mix_seed, sample_generators
from echogen.weights.bundle import load_state_strict, load_tensors, save_tensors, update_manifest

# per preset: (batch per process, total steps)
DEFAULTS = {"small": (8, 4000), "full": (20, 40000), "tiny": (2, 20)}

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", required=True, help="EchoNet-format dataset root (FileList.csv, Videos/)")
p.add_argument("--preset", default="small", help="small | full (| tiny, for tests)")
p.add_argument("--out", required=True, help="run folder (resumed if it holds a checkpoint)")
p.add_argument("--steps", type=int, default=0, help="total optimiser steps (default: the preset's)")
p.add_argument("--batch", type=int, default=0, help="batch per process (default: the preset's)")
p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (paper: 1e-4)")
p.add_argument("--ema-half-life", type=float, default=2000, help="EMA half-life in samples (0 = no EMA)")
p.add_argument("--eval-every", type=int, default=500, help="VAL evaluation (and best-model export) period")
p.add_argument("--ckpt-every", type=int, default=500)
p.add_argument("--log-every", type=int, default=50)
p.add_argument("--minutes", type=float, default=0, help="stop (with a checkpoint) after this many minutes")
p.add_argument("--max-videos", type=int, default=None, help="use only the first N TRAIN videos")
p.add_argument("--val-videos", type=int, default=None, help="use only the first N VAL videos")
p.add_argument("--test-videos", type=int, default=None, help="use only the first N TEST videos (0 = skip TEST)")
p.add_argument("--augment", default="wide",
               help="domain randomisation (echogen.data.augment): wide (default: appearance, geometry, frame rate, clip "
                    "length, palette / JPEG exports) | mild (the old gain / shift / noise) | off")
p.add_argument("--init-from", default=None, help="a weights bundle (or regressor .safetensors): a fresh run "
               "fine-tunes its regressor (same preset and pixel statistics); ignored on resume")
p.add_argument("--commit-moments", default=None, choices=["bf16", "fp16"], help="store Adam's moments in this "
               "precision in the checkpoint (for a checkpoint that is committed: half the size)")
p.add_argument("--no-augment", action="store_true", help="same as --augment off")
p.add_argument("--trained-on", default=None, help="what the data is, for the readouts (default: from the dataset)")
p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
p.add_argument("--bundle", default=None, help="also copy the best model into this weights bundle")
p.add_argument("--device", default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
p.add_argument("--debug-checksum", action="store_true",
               help="every rank writes RUN/checksum_rank{R}.json (parameter hash) at the end (tests DDP)")
args = p.parse_args()

# ---- setup -----------------------------------------------------------------------------------
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
if args.no_augment:
    args.augment = "off"
aug_cfg = get_augment_preset(args.augment)
trained_on = args.trained_on or describe_dataset(args.data)


# The config comes from the checkpoint when resuming (its normalisation was measured on the data).
# Rank 0 alone reads the run folder; the others get its config, counters and tensors by broadcast.
ckpt_path, state_path = run / "ckpt.safetensors", run / "state.json"
resume = distributed.broadcast_object(dist.main and ckpt_path.is_file() and state_path.is_file(), dist)
if resume and dist.main:
    ck_tensors, cfg_dict, ck_meta = load_tensors(ckpt_path, "regressor_checkpoint")
    cfg = RegressorConfig.from_dict(cfg_dict)
    state = json.loads(ck_meta["train_state"])      # the counters saved with these very tensors
    if ck_meta.get("preset") != args.preset:
        raise SystemExit(f"error: {run} holds a '{ck_meta.get('preset')}' run; --preset {args.preset} differs "
                         "(use another --out)")
elif not resume and args.init_from:   # fine-tune a bundle's regressor: its config (and pixel statistics) too
    init_model, cfg = load_regressor(args.init_from)
    state = {"step": 0, "seen": 0, "best_val_mae": None, "best_step": None}
elif not resume:
    cfg = get_regressor_preset(args.preset)
    state = {"step": 0, "seen": 0, "best_val_mae": None, "best_step": None}
else:
    cfg, state = None, None
batch = args.batch or DEFAULTS.get(args.preset, (8, 4000))[0]
steps = args.steps or DEFAULTS.get(args.preset, (8, 4000))[1]

if not resume and dist.main and not args.init_from:
    # Pixel mean / std of (up to) 32 TRAIN videos: the network normalises its input with them (EchoNet).
    rows = [r for r in EchoNetDataset(args.data, "TRAIN", max_videos=args.max_videos).videos()][:32]
    acc = np.zeros(3)
    for r in rows:
        v = load_video(args.data, r["FileName"])[0].astype(np.float64) / 255.0
        acc += [v.size, v.sum(), (v * v).sum()]
    mean = acc[1] / acc[0]
    cfg.mean, cfg.std = float(mean), float(math.sqrt(max(acc[2] / acc[0] - mean ** 2, 1e-8)))
cfg, state = distributed.broadcast_object((cfg, state), dist)

if dist.main:
    (run / "config.json").write_text(json.dumps({
        "regressor": cfg.to_dict(), "preset": args.preset, "augment": aug_cfg.to_dict(), "trained_on": trained_on,
        "train": {**vars(args), "batch": batch, "steps": steps, "world": dist.world}}, indent=2))

torch.manual_seed(args.seed)  # same initial weights on every rank
model = EFRegressor(cfg).to(dist.device)
ema = EMA(model, half_life=args.ema_half_life) if args.ema_half_life > 0 else None
opt = torch.optim.Adam(model.parameters(), lr=args.lr)
if not resume and args.init_from and dist.main:
    model.load_state_dict(init_model.state_dict())
    if ema is not None:
        ema.model.load_state_dict(init_model.state_dict())
    log(f"initialised from the regressor of {args.init_from}")
if resume and dist.main:
    # ckpt.safetensors: model.*, ema.*, and Adam's state flattened as optim.p{index}.{exp_avg|exp_avg_sq|step}
    load_state_strict(model, {k[6:]: v for k, v in ck_tensors.items() if k.startswith("model.")}, str(ckpt_path))
    if ema is not None:
        ema_t = {k[4:]: v for k, v in ck_tensors.items() if k.startswith("ema.")}
        load_state_strict(ema.model, ema_t or model.state_dict(), str(ckpt_path))
    params = list(model.parameters())
    for i, prm in enumerate(params):
        st = {k.split(".")[-1]: v.to(dist.device, prm.dtype) if v.ndim else v
              for k, v in ck_tensors.items() if k.startswith(f"optim.p{i}.")}
        if st:
            st["step"] = st["step"].cpu()
            opt.state[prm] = st
state = distributed.broadcast_training_state(dist, model, ema.model if ema is not None else None, opt, state)
torch.manual_seed(mix_seed(args.seed, dist.rank, state["step"]))  # dropout: its own masks on each rank
if resume:
    log(f"resumed from {ckpt_path} at step {state['step']}")
eval_model = ema.model if ema is not None else model  # the weights that are evaluated and exported
log(f"EF regressor '{args.preset}': {num_params(model) / 1e6:.2f} M params, clips {cfg.frames} frames @ "
    f"{cfg.fps:g} fps, pixel mean/std {cfg.mean:.3f}/{cfg.std:.3f}, batch {batch} x {dist.world}, lr {args.lr}, "
    f"device {dist.device}")
if dist.enabled and cfg.norm == "batch" and dist.device.type == "cuda":
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # batch statistics over all ranks
    log("BatchNorm -> SyncBatchNorm (statistics over the global batch)")
ddp = DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None) if dist.enabled else model

# Global batch s: positions s*G .. s*G+G-1 (G = batch x world) of per-epoch permutations of TRAIN; rank r
# loads slots r*batch .. (r+1)*batch - 1, each with its own seed (clip start, augmentation).
data = SeededItems(EchoNetDataset(args.data, "TRAIN", frames=cfg.frames, fps=cfg.fps, size=cfg.size,
                                  random_start=True, cond_frame="first", max_videos=args.max_videos, seed=args.seed))
sampler = GlobalBatches(len(data), batch, dist.world, dist.rank, args.seed, start_step=state["step"])
loader = DataLoader(data, batch_size=batch, sampler=sampler, num_workers=args.workers,
                    persistent_workers=args.workers > 0)
try:
    val = EchoNetDataset(args.data, "VAL", frames=cfg.frames, fps=cfg.fps, size=cfg.size, random_start=False,
                         cond_frame="first", max_videos=args.val_videos)
except ValueError:
    val = None
    log("no VAL videos: the last model is exported instead of the best")


def gather(values, n):
    """Each rank scored items rank, rank + world, ...; returns all n values in item order on every rank."""
    if not dist.enabled:
        return np.asarray(values, dtype=np.float64)
    per = math.ceil(n / dist.world)
    t = torch.full((per,), float("nan"), dtype=torch.float64, device=dist.device)
    t[:len(values)] = torch.tensor(values, dtype=torch.float64)
    parts = [torch.empty_like(t) for _ in range(dist.world)]
    tdist.all_gather(parts, t)
    out = torch.stack(parts, 1).reshape(-1)[:n]                    # (per, world) -> item order
    return out.cpu().numpy()


@torch.no_grad()
def evaluate_val():
    """One clip (from the first frame) per VAL video -> metrics dict, on every rank."""
    eval_model.eval()
    idx = list(range(dist.rank, len(val), dist.world))
    preds, targets = [], []
    for k in range(0, len(idx), batch):
        items = [val[i] for i in idx[k:k + batch]]
        x = torch.stack([it["video"] for it in items]).to(dist.device)           # (B, 1, T, H, W)
        preds += eval_model(x).float().cpu().tolist()
        targets += [float(it["ef"]) for it in items]
    return regression_metrics(gather(targets, len(val)), gather(preds, len(val)))


def export(extra):
    extra = {"trained_on": trained_on, "augment": args.augment, **extra}
    save_regressor(run / "regressor.safetensors", eval_model, cfg, preset=args.preset, **extra)
    if args.bundle:
        save_regressor(Path(args.bundle) / "regressor.safetensors", eval_model, cfg, preset=args.preset, **extra)
        update_manifest(args.bundle, regressor="regressor.safetensors")


def save_checkpoint():
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.model.state_dict().items()})
    for i, prm in enumerate(model.parameters()):
        for k, v in opt.state.get(prm, {}).items():
            v = v if torch.is_tensor(v) else torch.tensor(v)
            half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.commit_moments)
            tensors[f"optim.p{i}.{k}"] = v.to(half) if half is not None and v.is_floating_point() and v.ndim else v
    save_tensors(ckpt_path, tensors, "regressor_checkpoint", cfg.to_dict(), preset=args.preset,
                 train_state=json.dumps(state))
    tmp = state_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_path)


# ---- training loop ---------------------------------------------------------------------------
if dist.main and val is not None and not (run / "val.csv").exists():
    (run / "val.csv").write_text("step,mae,rmse,r2\n")
t_start, losses = time.time(), []
bar = tqdm(total=steps, initial=state["step"], disable=not dist.main, desc="regressor", dynamic_ncols=True)
it = iter(loader)
while state["step"] < steps:
    b = next(it)  # GlobalBatches is endless
    model.train()
    # (B, 1, T, H, W); each clip augmented with its own generator (per-sample seeds: N ranks == 1 process)
    x = b["video"] if args.augment == "off" else torch.cat(
        [augment_clips(b["video"][i:i + 1], g, aug_cfg, fps=cfg.fps) for i, g in enumerate(sample_generators(b["seed"]))])
    ef = b["ef"].to(dist.device)                                                  # (B,) EF in %
    loss = F.mse_loss(ddp(x.to(dist.device)), ef)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    state["step"] += 1
    state["seen"] += x.shape[0] * dist.world
    if ema is not None:
        ema.update(model, x.shape[0] * dist.world, state["seen"])
    losses.append(loss.item())
    bar.update(1)
    step = state["step"]
    if step % args.log_every == 0 or step == steps:
        mse = distributed.all_mean(sum(losses) / len(losses), dist)
        losses = []
        bar.set_postfix(rmse=f"{math.sqrt(mse):.2f}")
        log(f"step {step} train RMSE {math.sqrt(mse):.3f} ({(time.time() - t_start) / 60:.1f} min)")
    out_of_time = bool(args.minutes) and distributed.all_mean(float((time.time() - t_start) / 60 > args.minutes), dist) > 0
    last = step == steps or out_of_time
    if val is not None and (step % args.eval_every == 0 or last):
        m = evaluate_val()
        bar.set_postfix(val_mae=f"{m['mae']:.2f}", val_r2=f"{m['r2']:.3f}")
        log(f"step {step} VAL MAE {m['mae']:.3f} RMSE {m['rmse']:.3f} R^2 {m['r2']:.4f} ({len(val)} videos, 1 clip each)")
        if dist.main:
            with open(run / "val.csv", "a") as f:
                f.write(f"{step},{m['mae']:.6f},{m['rmse']:.6f},{m['r2']:.6f}\n")
            if state["best_val_mae"] is None or m["mae"] < state["best_val_mae"]:
                state["best_val_mae"], state["best_step"] = m["mae"], step
                export({"steps": step, "val_mae": f"{m['mae']:.4f}", "val_r2": f"{m['r2']:.4f}"})
                log(f"new best VAL MAE: exported {run / 'regressor.safetensors'}")
    if dist.main and (step % args.ckpt_every == 0 or last):
        if val is None:
            state["best_step"] = step
            export({"steps": step})
        save_checkpoint()
    if out_of_time:
        log(f"time limit of {args.minutes} min reached at step {step}")
        break
bar.close()
distributed.barrier(dist)

if args.debug_checksum:
    flat = torch.cat([q.detach().cpu().double().reshape(-1) for q in model.parameters()])
    (run / f"checksum_rank{dist.rank}.json").write_text(json.dumps({
        "step": state["step"], "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
        "sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest()}))

# ---- final TEST evaluation of the best model: mean EF over all clips of each whole video ----------
if args.test_videos != 0 and (run / "regressor.safetensors").is_file():
    best, _ = load_regressor(run / "regressor.safetensors", dist.device)
    try:
        test_rows = EchoNetDataset(args.data, "TEST", max_videos=args.test_videos).videos()
    except ValueError:
        test_rows = []
    mine = list(range(dist.rank, len(test_rows), dist.world))
    preds, targets = [], []
    for i in tqdm(mine, desc="TEST", disable=not dist.main, dynamic_ncols=True):
        r = test_rows[i]
        v, avi_fps = load_video(args.data, r["FileName"])
        fps = r.get("FPS") if r.get("FPS") and np.isfinite(r.get("FPS")) else avi_fps
        preds.append(predict_ef(best, cfg, v, fps)[0])
        targets.append(float(r["EF"]))
    if test_rows:
        m = regression_metrics(gather(targets, len(test_rows)), gather(preds, len(test_rows)))
        log(f"TEST MAE {m['mae']:.3f} RMSE {m['rmse']:.3f} R^2 {m['r2']:.4f} ({len(test_rows)} videos, mean over "
            f"clips; best model from step {state['best_step']})")
    else:
        log("no TEST videos: final evaluation skipped")
distributed.barrier(dist)   # every rank tears gloo down together (an early teardown aborted a rank: train_tracer.py)
del ddp   # before the group goes: a live DDP reducer holds it (distributed.cleanup)
distributed.cleanup(dist)
