"""Frame strip for the docs: real phantom TEST loops at EF ~20 / 50 / 80 beside loops generated from
their own conditioning frame at the same EF, with the EF regressor's reading of each.

    python train/frame_strip.py --data data/phantom3k --weights assets/weights/demo --out docs/strip.png

Rows: for each target EF, the real TEST video whose EF is nearest, then the generated loop. Columns:
`--columns` frames evenly spread over the final stage's clip (same times for real and generated).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from echogen.diffusion.cascade import Cascade  # noqa: E402
from echogen.data.echonet import cut_clip, load_video, read_filelist  # noqa: E402
from echogen.nets.regressor import load_regressor, predict_ef  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", default="data/phantom3k")
p.add_argument("--weights", default="assets/weights/demo")
p.add_argument("--split", default="TEST")
p.add_argument("--efs", type=float, nargs="+", default=[20, 50, 80])
p.add_argument("--columns", type=int, default=8)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--out", default="docs/strip.png")
args = p.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

cascade = Cascade.load(args.weights)
model, rcfg = load_regressor(args.weights)
final = cascade.config.stages[-1]
rows = [r for r in read_filelist(args.data) if r["Split"] == args.split.upper()]
cols = np.linspace(0, final.frames - 1, args.columns).round().astype(int)

fig, axes = plt.subplots(2 * len(args.efs), args.columns, figsize=(1.2 * args.columns, 2 * 1.45 * len(args.efs)),
                         gridspec_kw=dict(wspace=0.04, hspace=0.3))
for i, target in enumerate(args.efs):
    row = min(rows, key=lambda r: abs(float(r["EF"]) - target))
    video, fps = load_video(args.data, row["FileName"])
    native = row.get("FPS") or fps or 50.0
    real = cut_clip(video, 0, final.frames, native, final.fps)                                # (T, H, W)
    ef_real = predict_ef(model, rcfg, video, native)[0]
    out = cascade.sample(video[0].astype(np.float32) / 255.0, float(row["EF"]), seed=args.seed)[-1]
    gen = out.video[0, 0].numpy()                                                            # (T, H, W)
    ef_gen = predict_ef(model, rcfg, out.video[0, 0], out.fps)[0]
    for j, (clip, label) in enumerate(((real / 255.0, f"real {row['FileName']}: EF {float(row['EF']):.0f} "
                                        f"(regressor {ef_real:.0f})"),
                                       (gen, f"generated at EF {float(row['EF']):.0f} from its frame 0 "
                                        f"(regressor {ef_gen:.0f})"))):
        for c, t in enumerate(cols):
            ax = axes[2 * i + j, c]
            ax.imshow(clip[t], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if 2 * i + j == len(axes) - 1 or j == 1 and i == len(args.efs) - 1:
                ax.set_xlabel(f"{t / final.fps:.2f} s", fontsize=7)
        axes[2 * i + j, 0].set_title(label, fontsize=8, loc="left", pad=3)
    print(f"EF {target:g}: {row['FileName']} true {float(row['EF']):.1f}, regressor real {ef_real:.1f}, "
          f"generated {ef_gen:.1f}")
fig.suptitle(f"{cascade.config.name} cascade ({cascade.source}) vs real phantom {args.split} loops", fontsize=9)
fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.04)
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
fig.savefig(args.out, dpi=110)
print(f"wrote {args.out}")
