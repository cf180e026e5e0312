"""Train one cascade stage on an EchoNet-format dataset (EchoNet-Dynamic or the phantom).

  python train/train_stage.py --data DIR --preset demo --stage base --out runs/base
  torchrun --nproc_per_node=4 train/train_stage.py ... (same flags; DDP, only rank 0 writes)
  torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train/train_stage.py ...

N processes at --batch B train exactly as one process at --batch N*B would (same data, same random
draws, same loss curve up to float rounding; echogen.data.batches.GlobalBatches), and a resumed run
continues the same stream. Only rank 0 reads the checkpoint and writes files; the other ranks get its
state by broadcast, so on several nodes only rank 0's node needs the run folder.

Resumes from RUN/ckpt when present. Writes RUN/config.json, RUN/log.txt, RUN/loss.csv, RUN/loss.png,
RUN/samples/*.gif, and the stage's EMA weights RUN/<stage>.safetensors (+ into --bundle DIR).
"""
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from echogen import distributed
from echogen.config import CascadeConfig, get_preset
from echogen.data.batches import GlobalBatches, SeededItems
from echogen.data.augment import augment_clips, get_augment_preset
from echogen.data.echonet import EchoNetDataset
from echogen.device import tune_cpu_malloc
from echogen.diffusion.cascade import build_denoiser
from echogen.diffusion.preview import plot_loss_csv, write_stage_preview
from echogen.diffusion.training import EMA, LossCurve, optimizer_step, stage_loss
from echogen.rng import mix_seed, step_generator
from echogen.weights.checkpoint import init_from_bundle, load_checkpoint, save_checkpoint

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", required=True, help="EchoNet-format dataset root (FileList.csv, Videos/)")
p.add_argument("--preset", default="demo", help="a preset name (echogen.config.PRESETS) or a cascade config "
               "JSON file (CascadeConfig.to_dict(), e.g. a run's config.json 'cascade')")
p.add_argument("--stage", required=True, help="stage name, e.g. base | spatial | temporal")
p.add_argument("--out", required=True, help="run folder (resumed if it holds a checkpoint)")
p.add_argument("--steps", type=int, default=20000, help="total optimiser steps")
p.add_argument("--minutes", type=float, default=0, help="stop (with a checkpoint) after this many minutes")
p.add_argument("--batch", type=int, default=0, help="batch per process (default: the stage config's)")
p.add_argument("--lr", type=float, default=0, help="Adam learning rate (default: the stage config's)")
p.add_argument("--ema-half-life", type=float, default=2000, help="EMA half-life in samples")
p.add_argument("--anneal-at", type=int, default=0, help="from this step on (also after a resume), train with "
               "--anneal-lr and --anneal-ema-half-life (0: never)")
p.add_argument("--anneal-lr", type=float, default=0, help="learning rate from --anneal-at on")
p.add_argument("--anneal-ema-half-life", type=float, default=0, help="EMA half-life (samples) from --anneal-at on "
               "(0: keep --ema-half-life)")
p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
p.add_argument("--max-videos", type=int, default=None)
p.add_argument("--ckpt-every", type=int, default=500)
p.add_argument("--sample-every", type=int, default=2000)
p.add_argument("--log-every", type=int, default=50)
p.add_argument("--bundle", default=None, help="also export the EMA weights into this weights bundle")
p.add_argument("--augment", default="wide", choices=["wide", "mild", "off"],
               help="domain randomisation of each target clip and its conditioning frame, one draw per sample "
               "(echogen.data.augment: appearance and geometry; no frame-rate or length changes, which would "
               "teach a stage stuttering motion)")
p.add_argument("--init-from", default=None, help="a weights bundle: a fresh run starts from its weights for this "
               "stage (fine-tuning, e.g. on new data); ignored when the run resumes from its own checkpoint")
p.add_argument("--commit-moments", default=None, choices=["bf16", "fp16"], help="store Adam's moments in this "
               "precision in the checkpoint (for a checkpoint that is committed: half the size)")
p.add_argument("--device", default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
p.add_argument("--ddp", default="find_unused", choices=distributed.MODES,
               help="gradient synchronisation under torchrun (echogen/distributed.py; docs/PERF.md change 15)")
args = p.parse_args()
if args.anneal_at and not args.anneal_lr:
    p.error("--anneal-at needs --anneal-lr")

# ---- setup -----------------------------------------------------------------------------------
if args.threads:
    torch.set_num_threads(args.threads)
tune_cpu_malloc()
dist = distributed.setup(args.device)
if args.preset.endswith(".json") and Path(args.preset).is_file():
    _c = json.loads(Path(args.preset).read_text())
    cascade = CascadeConfig.from_dict(_c.get("cascade", _c))
else:
    cascade = get_preset(args.preset)
stage = cascade.stage(args.stage)
if args.ddp == "static" and dist.enabled and stage.p_ignore_time > 0:
    raise SystemExit(f"error: --ddp static needs the same parameters in every step; stage {stage.name} skips its "
                     f"temporal layers in {stage.p_ignore_time:.0%} of the steps (use find_unused)")
batch = args.batch or stage.batch_size
aug_cfg = None if args.augment == "off" else get_augment_preset(args.augment)
lr = args.lr or stage.lr
run = Path(args.out)
_mine = run / "ckpt" / "state.json"   # before anything is written: does another rank see a newer checkpoint?
distributed.check_resume(dist, json.loads(_mine.read_text())["step"] if _mine.is_file() else 0, run)
if dist.main:
    run.mkdir(parents=True, exist_ok=True)
    (run / "samples").mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps({"cascade": cascade.to_dict(), "stage": stage.name,
                                                 "train": {**vars(args), "batch": batch, "lr": lr,
                                                           "world": dist.world}}, indent=2))
log = distributed.run_logger(run / "log.txt", dist)


torch.manual_seed(args.seed)  # same init on every rank
model = build_denoiser(stage, cascade.diffusion).to(dist.device)
ema = EMA(model, half_life=args.ema_half_life)
opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
state = (load_checkpoint(run, model, ema.model, opt) if dist.main else None) or {"step": 0, "seen": 0}
if args.init_from and dist.main and not state["step"]:
    log(f"initialised from {init_from_bundle(args.init_from, stage.name, model.net, ema.model.net)}")
state = distributed.broadcast_training_state(dist, model, ema.model, opt, state)  # rank 0's, on every rank
torch.manual_seed(mix_seed(args.seed, dist.rank, state["step"]))  # any dropout: its own masks on each rank
if state["step"]:
    log(f"resumed from {run / 'ckpt'} at step {state['step']}")
n_params = sum(q.numel() for q in model.parameters())
log(f"stage {stage.name} of {cascade.name}: {n_params / 1e6:.2f} M params, batch {batch} x {dist.world}, "
    f"lr {lr}, device {dist.device}")
sync = distributed.GradSync(model, dist, args.ddp)
ddp = sync.module

# Global batch s = the items of positions s*G .. s*G+G-1 (G = batch x world) of per-epoch permutations;
# rank r loads slots r*batch .. (r+1)*batch - 1, each with its own seed (echogen.data.batches.GlobalBatches).
data = SeededItems(EchoNetDataset(args.data, "TRAIN", frames=stage.frames, fps=stage.fps, size=stage.size,
                                  max_videos=args.max_videos, seed=args.seed))
sampler = GlobalBatches(len(data), batch, dist.world, dist.rank, args.seed, start_step=state["step"])
loader = DataLoader(data, batch_size=batch, sampler=sampler, num_workers=args.workers,
                    persistent_workers=args.workers > 0)
val = EchoNetDataset(args.data, "VAL", frames=stage.frames, fps=stage.fps, size=stage.size, random_start=False,
                     cond_frame="first", max_videos=4)


def sample_preview(step):
    write_stage_preview(ema.model, cascade, stage, val[0], run / "samples" / f"step{step:07d}.gif", dist.device)


def export():
    from echogen.weights.bundle import save_tensors, update_manifest
    cfg = dataclasses.asdict(stage)
    save_tensors(run / f"{stage.name}.safetensors", ema.model.net.state_dict(), "stage", cfg,
                 preset=cascade.name, steps=str(state["step"]))
    if args.bundle:
        save_tensors(Path(args.bundle) / f"{stage.name}.safetensors", ema.model.net.state_dict(), "stage", cfg,
                     preset=cascade.name, steps=str(state["step"]))
        update_manifest(args.bundle, preset=cascade.name, cascade=cascade.to_dict(),
                        stages={stage.name: f"{stage.name}.safetensors"})
    log(f"exported EMA weights at step {state['step']}")


def plot_loss():
    plot_loss_csv(run / "loss.csv", run / "loss.png", f"{cascade.name} / {stage.name}", "EDM loss")


# ---- training loop ---------------------------------------------------------------------------
t_start, step_times = time.time(), []
curve = LossCurve(run / "loss.csv", dist)
bar = tqdm(total=args.steps, initial=state["step"], disable=not dist.main, desc=f"{stage.name}", dynamic_ncols=True)
it = iter(loader)
while state["step"] < args.steps:
    t_step = time.perf_counter()
    b = next(it)  # GlobalBatches is endless
    if args.anneal_at and state["step"] >= args.anneal_at and opt.param_groups[0]["lr"] != args.anneal_lr:
        for group in opt.param_groups:
            group["lr"] = args.anneal_lr
        ema.half_life = args.anneal_ema_half_life or args.ema_half_life
        log(f"step {state['step']}: annealed to lr {args.anneal_lr}, EMA half-life {ema.half_life:g} samples")
    if aug_cfg is not None:  # each clip with its own generator (from its seed): rank-invariant
        pairs = [augment_clips(b["video"][i:i + 1], torch.Generator().manual_seed(mix_seed(int(s), 0xA06)), aug_cfg,
                               frames=b["frame"][i:i + 1], fps=stage.fps, temporal=False)
                 for i, s in enumerate(b["seed"])]
        b = {**b, "video": torch.cat([v for v, _ in pairs]), "frame": torch.cat([f for _, f in pairs])}
    model.train()
    # batch-level draws (image/video decision, augmentation level, crop): the same on every rank
    loss = stage_loss(ddp, cascade, stage, b, step_generator(args.seed, state["step"]), dist.device)
    optimizer_step(sync, opt, loss, ema, model, state, batch * dist.world)
    curve.add(loss.item())
    step_times.append(time.perf_counter() - t_step)
    bar.update(1)
    step = state["step"]
    if step % args.log_every == 0 or step == args.steps:
        mean = curve.flush(step)
        bar.set_postfix(loss=f"{mean:.4f}")
        if dist.main:
            log(f"step {step} loss {mean:.4f} ({(time.time() - t_start) / 60:.1f} min)")
    # all ranks must stop together: rank-average the flag
    out_of_time = bool(args.minutes) and distributed.all_mean(float((time.time() - t_start) / 60 > args.minutes), dist) > 0
    if dist.main and (step % args.ckpt_every == 0 or step == args.steps or out_of_time):
        save_checkpoint(run, model, ema.model, opt, state, cascade.to_dict(),
                        moments_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.commit_moments))
        plot_loss()
        export()
    if dist.main and args.sample_every and (step % args.sample_every == 0 or step == args.steps):
        sample_preview(step)
    if out_of_time:
        log(f"time limit of {args.minutes} min reached at step {step}")
        break
bar.close()
if len(step_times) > 2:  # the first two steps warm up (allocator, DDP's first-iteration bookkeeping)
    log(f"mean step time {sum(step_times[2:]) / len(step_times[2:]):.4f} s over {len(step_times) - 2} steps "
        f"(rank 0, data loading included; --ddp {args.ddp}, world {dist.world})")
distributed.barrier(dist)
del sync   # before the group goes: a live DDP reducer holds it (distributed.cleanup)
distributed.cleanup(dist)
