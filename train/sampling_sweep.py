"""Quick sweep of sampling settings: for the first N TEST frames, generate full loops at EF 20 / 35 /
50 / 65 / 80 under each variant and print the mean EF the regressor reads back and the R^2 against the
asked EF. A cheap screen (N x 5 loops per variant) before a 100-video `python -m echogen evaluate`.

    python train/sampling_sweep.py --videos 2 --variants '[["default", {}],
        ["sigma_start", {"sigma_start": {"spatial": 0.25, "temporal": 0.15}}]]'

Each variant is [label, keyword arguments of Cascade.sample] (steps / guidance / sampler / sigma_start).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
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
p.add_argument("--videos", type=int, default=2, help="first N TEST videos (their frame 0)")
p.add_argument("--variants", default='[["default", {}]]', help="JSON list of [label, sample kwargs]")
p.add_argument("--efs", type=float, nargs="+", default=[20, 35, 50, 65, 80])
p.add_argument("--seed", type=int, default=1)
p.add_argument("--threads", type=int, default=0)
args = p.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

cascade = Cascade.load(args.weights)
model, rcfg = load_regressor(args.weights)
rows = [r for r in read_filelist(args.data) if r["Split"] == "TEST"][: args.videos]
frames = [load_video(args.data, r["FileName"])[0][0].astype(np.float32) / 255.0 for r in rows]
asked = np.tile(args.efs, (len(frames), 1))                       # (videos, EFs)
for label, kwargs in json.loads(args.variants):
    t0, read = time.time(), []
    for frame in frames:
        out = cascade.sample(frame, list(args.efs), seed=args.seed, **kwargs)[-1]
        read.append([predict_ef(model, rcfg, out.video[i, 0], out.fps)[0] for i in range(len(args.efs))])
    read = np.array(read)
    r2 = 1 - ((read - asked) ** 2).sum() / ((asked - asked.mean()) ** 2).sum()
    print(f"{label:<28} mean EF read {np.round(read.mean(0), 1)}  R^2 {r2:.3f}  ({time.time() - t0:.0f} s)",
          flush=True)
