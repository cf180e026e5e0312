"""Per-step cost of the DDP gradient-synchronisation modes, round-robin in the same processes (so the
machine's load hits every mode alike): forward + backward + synchronisation + Adam step of one stage on
fixed inputs, each mode on its own copy of the network. Run under torchrun, e.g.

  OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 bench/ddp_overhead.py --preset demo --stage base --batch 2

Video steps (every parameter but the unused ones in the graph) time all four modes (static is valid
there); image steps (temporal layers skipped) time find_unused / allreduce / zero_term. Rank 0 prints
the median seconds per step of each mode and the rank-0 single-process time of the same work without
any synchronisation ("none", the lower bound).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path


import torch  # noqa: E402

from echogen import distributed  # noqa: E402
from echogen.diffusion.cascade import build_denoiser  # noqa: E402
from echogen.config import get_preset  # noqa: E402
from echogen.diffusion.training import stage_loss  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--preset", default="demo")
p.add_argument("--stage", default="base")
p.add_argument("--batch", type=int, default=2)
p.add_argument("--reps", type=int, default=8)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
d = distributed.setup("cpu")
cascade = get_preset(a.preset)
stage = cascade.stage(a.stage)
modes = ["none", "find_unused", "allreduce", "zero_term", "static"]
runs = {}
for m in modes:
    torch.manual_seed(0)
    model = build_denoiser(stage, cascade.diffusion)
    sync = distributed.GradSync(model, distributed.Dist() if m == "none" else d, "allreduce" if m == "none" else m)
    runs[m] = (model, sync, torch.optim.Adam(model.parameters(), lr=1e-4))
g = torch.Generator().manual_seed(d.rank)
batch = {"video": torch.rand(a.batch, 1, stage.frames, stage.size, stage.size, generator=g),
         "frame": torch.rand(a.batch, 1, stage.size, stage.size, generator=g),
         "ef": torch.rand(a.batch, generator=g) * 60 + 20,
         "seed": torch.arange(a.batch) + 100 * d.rank}


def step(m, image):
    model, sync, opt = runs[m]
    # the step generator decides ignore_time: find a seed with the wanted decision
    s = 0
    while (torch.rand((), generator=torch.Generator().manual_seed(s)) < stage.p_ignore_time) != image:
        s += 1
    t = time.perf_counter()
    loss = stage_loss(sync.module, cascade, stage, batch, torch.Generator().manual_seed(s), "cpu")
    opt.zero_grad(set_to_none=True)
    sync.loss(loss).backward()
    sync.after_backward()
    opt.step()
    return time.perf_counter() - t


for image in ([False, True] if stage.p_ignore_time > 0 else [False]):
    ms = [m for m in modes if not (image and m == "static")]
    times = {m: [] for m in ms}
    for r in range(a.reps + 1):
        for m in ms:
            if m == "none":  # rank 0 alone does the work, the others wait (so they do not steal its cores)
                distributed.barrier(d)
                if d.main:
                    dt = step(m, image)
                distributed.barrier(d)
            else:
                dt = step(m, image)
            if r and (m != "none" or d.main):
                times[m].append(dt)
    if d.main:
        kind = "image steps" if image else "video steps"
        print(f"{a.preset}/{a.stage} batch {a.batch} x {d.world}, {kind}, median s of {a.reps}: " + ", ".join(
            f"{m} {statistics.median(v):.4f}" for m, v in times.items()), flush=True)
distributed.cleanup(d)
