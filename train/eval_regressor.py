"""Score EF regressors on an EchoNet-format split, each video read as the mean over all its clips (EchoNet).

  python train/eval_regressor.py --data data/sim2_1k --regressor assets/weights/demo runs/reg/regressor.safetensors
      [--split TEST] [--n N] [--threads 1] [--ensemble]

Prints one row per regressor: R^2, MAE, RMSE, Pearson r and the MAE per EF bin, on the same videos.
"""
import argparse
import sys

import numpy as np
import torch

from echogen.data.echonet import load_video, read_filelist
from echogen.ef import EF_BIN_EDGES
from echogen.eval.metrics import mae_by_bin, regression_metrics
from echogen.nets.regressor import load_regressor, predict_ef

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", required=True)
p.add_argument("--regressor", nargs="+", required=True, help="regressor .safetensors files or bundles")
p.add_argument("--split", default="TEST")
p.add_argument("--n", type=int, default=0, help="first N videos of the split (0 = all)")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--csv", default=None, help="write every video's true EF and readings here")
p.add_argument("--ensemble", action="store_true", help="also score the mean of all the regressors' readings")
args = p.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
rows = [r for r in read_filelist(args.data) if r["Split"] == args.split.upper()]
rows = rows[:args.n] if args.n else rows
if not rows:
    sys.exit(f"error: {args.data}: no {args.split} videos")
models = [load_regressor(w) for w in args.regressor]
truth, preds = [], [[] for _ in models]
for r in rows:
    video, fps = load_video(args.data, r["FileName"])
    truth.append(float(r["EF"]))
    for k, (model, cfg) in enumerate(models):
        preds[k].append(predict_ef(model, cfg, video, fps)[0])
t = np.array(truth)
if args.csv:
    with open(args.csv, "w") as f:
        f.write(",".join(["FileName", "EF"] + args.regressor) + "\n")
        for i, r in enumerate(rows):
            f.write(",".join([r["FileName"], f"{truth[i]:.3f}"] + [f"{pr[i]:.3f}" for pr in preds]) + "\n")
print(f"{args.data} {args.split}: {len(rows)} videos; MAE per EF bin "
      f"{', '.join(f'{a}-{b}' for a, b in zip(EF_BIN_EDGES, EF_BIN_EDGES[1:]))}")
names = list(args.regressor)
if args.ensemble and len(preds) > 1:
    names.append("mean of " + " + ".join(args.regressor))
    preds.append(list(np.mean(np.array(preds), axis=0)))
for w, pr in zip(names, preds):
    m = regression_metrics(t, np.array(pr))
    per = " / ".join("-" if e is None else f"{e:.2f}" for *_, e in mae_by_bin(t, pr))
    print(f"{w}: R^2 {m['r2']:.3f}  MAE {m['mae']:.2f}  RMSE {m['rmse']:.2f}  r {np.corrcoef(pr, t)[0, 1]:.3f}  "
          f"bins {per}")
