"""Where in the cascade is EF control lost? For a few TEST frames, generate at several EFs with the
cascade cut after each stage (later stages replaced by plain upsampling) and print the EF the
regressor reads from each final-size loop.

    python train/ef_by_stage.py --data data/phantom3k --weights assets/weights/demo --videos 3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from echogen.cascade import Cascade  # noqa: E402
from echogen.echonet import load_video, read_filelist  # noqa: E402
from echogen.regressor import load_regressor, predict_ef  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", default="data/phantom3k")
p.add_argument("--weights", default="assets/weights/demo")
p.add_argument("--videos", type=int, default=3, help="first N TEST videos (their frame 0)")
p.add_argument("--efs", type=float, nargs="+", default=[20, 50, 80])
p.add_argument("--seed", type=int, default=1)
p.add_argument("--threads", type=int, default=0)
args = p.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

cascade = Cascade.load(args.weights)
model, rcfg = load_regressor(args.weights)
names = cascade.config.stage_names
cuts = [names[: k + 1] for k in range(len(names))]
rows = [r for r in read_filelist(args.data) if r["Split"] == "TEST"][: args.videos]
read = {tuple(c): [] for c in cuts}
print("| video (true EF) | stages run | " + " | ".join(f"asked {e:g}" for e in args.efs) + " |")
print("|---|---|" + "---|" * len(args.efs))
for row in rows:
    video, _ = load_video(args.data, row["FileName"])
    for cut in cuts:
        out = cascade.sample(video[0].astype(np.float32) / 255.0, list(args.efs), seed=args.seed, stages=cut)[-1]
        efs = [predict_ef(model, rcfg, out.video[i, 0], out.fps)[0] for i in range(len(args.efs))]
        read[tuple(cut)].append(efs)
        print(f"| {row['FileName']} ({float(row['EF']):.0f}) | {'+'.join(cut)} | "
              + " | ".join(f"{e:.1f}" for e in efs) + " |", flush=True)
print("\nmean EF read, per stage cut:")
for cut, v in read.items():
    m = np.mean(v, axis=0)
    print(f"  {'+'.join(cut):<24} " + "  ".join(f"asked {e:g} -> {x:.1f}" for e, x in zip(args.efs, m)))
