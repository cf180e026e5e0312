"""Train the orientation network (echogen.nets.orient): is this apical-4-chamber view shown mirrored (LV on the left)?

  python train/train_orient.py --data DIR [DIR ...] --out runs/orient [--bundle assets/weights/demo]

The frames are the traced ED / ES frames of each EchoNet-format dataset (plus --mask-frames more per video where the
data has per-frame masks), all in the standard orientation (the LV on the right), so the labels cost nothing:
each training frame is domain-randomised (echogen.data.augment, never mirrored by it) and then shown as it is
(label 0) or mirrored (label 1), a coin toss per frame. BCE loss, Adam with a cosine schedule, an EMA of the
weights (exported). Every --eval-every steps: accuracy and mean P(correct) on every VAL frame both ways round,
as written and degraded as exported clips are (JPEG q50); the best EMA model (VAL log-loss) is written to
RUN/orientation.safetensors (and into --bundle DIR). Resumes from RUN/ckpt/. One process: the network has
~77 k parameters and trains in minutes on a CPU (under torchrun it stops with a message).
"""
import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from echogen.data.augment import augment_clips, get_augment_preset
from echogen.eval import tracer_eval
from echogen.eval.readout import describe_dataset
from echogen.nets.orient import OrientNet, get_orient_preset, num_params, save_orient
from echogen.rng import sample_generators
from echogen.weights.bundle import update_manifest
from echogen.weights.checkpoint import load_checkpoint, save_checkpoint

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", nargs="+", required=True, help="EchoNet-format dataset roots (VolumeTracings.csv)")
p.add_argument("--preset", default="small", help="small | coarse (| tiny, for tests)")
p.add_argument("--out", required=True, help="run folder (resumed if it holds a checkpoint)")
p.add_argument("--steps", type=int, default=3000)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--ema", type=float, default=0.995, help="EMA decay per step")
p.add_argument("--augment", default="wide", help="domain randomisation preset: wide | mild | off")
p.add_argument("--mask-frames", type=int, default=4, help="N more frames per video from per-frame masks")
p.add_argument("--max-videos", type=int, default=None, help="first N TRAIN videos of each dataset")
p.add_argument("--val-videos", type=int, default=None, help="first N VAL videos of each dataset")
p.add_argument("--eval-every", type=int, default=250)
p.add_argument("--ckpt-every", type=int, default=250)
p.add_argument("--log-every", type=int, default=50)
p.add_argument("--minutes", type=float, default=0, help="stop (with a checkpoint) after this many minutes")
p.add_argument("--bundle", default=None, help="also copy the best model into this weights bundle")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=0)
args = p.parse_args()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    raise SystemExit("error: train_orient.py runs in one process (a ~77 k-parameter network); run it with python")
if args.threads:
    torch.set_num_threads(args.threads)
run = Path(args.out)
run.mkdir(parents=True, exist_ok=True)
aug = get_augment_preset(args.augment)
if aug.p_flip:
    raise SystemExit("error: the augmentation preset mirrors frames, which would flip the labels")
cfg = get_orient_preset(args.preset)


def log(msg: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(run / "log.txt", "a") as f:
        f.write(line + "\n")


def frames_of(split: str, limit, mask_frames: int = 0) -> np.ndarray:
    """uint8 (N, S, S): the traced frames of every dataset's split."""
    parts = []
    for root in args.data:
        got = tracer_eval.traced_frames(root, split, cfg.size, limit, mask_frames)
        if got is not None:
            parts.append(got[0])
    if not parts:
        raise SystemExit(f"error: no traced {split} frames in {args.data} (VolumeTracings.csv)")
    return np.concatenate(parts)


t0 = time.time()
train = frames_of("TRAIN", args.max_videos, args.mask_frames)
val = frames_of("VAL", args.val_videos)
trained_on = "; ".join(describe_dataset(r) for r in args.data)
log(f"data: {len(train)} TRAIN frames, {len(val)} VAL frames ({time.time() - t0:.1f} s to load); {trained_on}")

torch.manual_seed(args.seed)
model = OrientNet(cfg)
ema = copy.deepcopy(model).requires_grad_(False)
opt = torch.optim.Adam(model.parameters(), lr=args.lr)
state = load_checkpoint(run, model, ema, opt) or {"step": 0, "best_val_loss": None, "best_step": None}
if state["step"]:
    log(f"resumed from {run / 'ckpt'} at step {state['step']}")
(run / "config.json").write_text(json.dumps({"orientation": cfg.to_dict(), "preset": args.preset,
                                             "augment": aug.to_dict(), "trained_on": trained_on,
                                             "train": vars(args)}, indent=2))
log(f"orientation '{args.preset}': {num_params(model) / 1e3:.1f} k params, batch {args.batch}, lr {args.lr}, "
    f"augment {args.augment}, {args.steps} steps")


def lr_at(step: int) -> float:
    warm = min(1.0, (step + 1) / 50)
    return args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / max(args.steps, 1), 1.0))))


def batch_at(step: int):
    """Batch `step` is a function of (seed, step) only, so a resumed run draws what an uninterrupted one would:
    frames (B, 1, S, S) augmented, half of them (a coin toss each) mirrored; labels (B,) 1 = mirrored."""
    rng = np.random.default_rng([args.seed, step])
    idx = rng.integers(0, len(train), args.batch)
    x = torch.from_numpy(train[idx]).float().div_(255.0)[:, None]                       # (B, 1, S, S)
    gens = sample_generators(rng.integers(0, 2 ** 62, args.batch).tolist())
    if args.augment != "off":
        x = torch.cat([augment_clips(x[k:k + 1], g, aug, temporal=False) for k, g in enumerate(gens)])
    y = torch.from_numpy(rng.random(args.batch) < 0.5)
    x = torch.where(y[:, None, None, None], x.flip(-1), x)
    return x.reshape(-1, 1, cfg.size, cfg.size), y.float()


def _jpeg(frames: np.ndarray, q: int) -> np.ndarray:
    import cv2
    return np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_GRAYSCALE)
                     for f in frames])


@torch.no_grad()
def evaluate(net) -> dict:
    """Every VAL frame as it is and mirrored, as written and JPEG q50: log-loss, accuracy, min P(correct)."""
    out = {}
    for name, v in (("as_written", val), ("jpeg50", _jpeg(val, 50))):
        x = torch.from_numpy(v).float().div_(255.0)[:, None]
        x = torch.cat([x, x.flip(-1)])
        y = torch.cat([torch.zeros(len(v)), torch.ones(len(v))])
        logits = torch.cat([net(x[i:i + 256]) for i in range(0, len(x), 256)])
        p_right = torch.where(y > 0, torch.sigmoid(logits), 1 - torch.sigmoid(logits))
        out[name] = {"loss": float(F.binary_cross_entropy_with_logits(logits, y)),
                     "accuracy": float((p_right > 0.5).float().mean()), "min_p_correct": float(p_right.min())}
    return out


t_start, step = time.time(), state["step"]
start_step = step
model.train()
while step < args.steps:
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    x, y = batch_at(step)
    loss = F.binary_cross_entropy_with_logits(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - args.ema)
    step += 1
    if step % args.log_every == 0:
        rate = (time.time() - t_start) / max(step - start_step, 1)
        log(f"step {step} loss {loss.item():.4f} lr {lr_at(step):.2e} ({rate:.2f} s/step)")
    last = step >= args.steps or (args.minutes and time.time() - t_start > 60 * args.minutes)
    if step % args.eval_every == 0 or last:
        ev = evaluate(ema.eval())
        log(f"VAL step {step}: " + "; ".join(f"{k} loss {v['loss']:.4f} acc {v['accuracy']:.4f} min p "
                                              f"{v['min_p_correct']:.3f}" for k, v in ev.items()))
        with open(run / "val.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **ev}) + "\n")
        score = ev["as_written"]["loss"] + ev["jpeg50"]["loss"]
        if state["best_val_loss"] is None or score < state["best_val_loss"]:
            state.update(best_val_loss=score, best_step=step)
            extra = {"trained_on": trained_on, "steps": str(step), "preset": args.preset, "augment": args.augment,
                     "val": json.dumps(ev)}
            save_orient(run / "orientation.safetensors", ema, cfg, **extra)
            if args.bundle:
                save_orient(Path(args.bundle) / "orientation.safetensors", ema, cfg, **extra)
                update_manifest(args.bundle, orientation="orientation.safetensors")
            log(f"best so far: exported step {step}")
    if step % args.ckpt_every == 0 or last:
        state["step"] = step
        save_checkpoint(run, model, ema, opt, state, cfg.to_dict())
    if last:
        break
log(f"done at step {step}; best VAL step {state['best_step']} (loss {state['best_val_loss']:.4f})")
