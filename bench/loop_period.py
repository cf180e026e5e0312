"""Heart period of generated loops against the requested EF and the seed (the new-user report: "the heart rate
changes with the EF").

    python bench/loop_period.py --weights assets/weights/demo-fast [--efs 25 45 65] [--seeds 4]

For each example frame (assets/examples/*.png), EF and seed: one cascade sample, the loop cut the app makes
(echogen.data.loops.stage_loops with the bundle's LV tracer), the period = median spacing of the end-diastoles
found (or the loop's length when only one cycle is whole; '-' when none is). Seconds.
"""
import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from echogen.data.loops import stage_loops
from echogen.diffusion.cascade import Cascade
from echogen.teaching.gate import tracer_reader

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--weights", default="assets/weights/demo-fast")
p.add_argument("--tracer", default="assets/weights/demo", help="bundle with the LV tracer that cuts the loops")
p.add_argument("--frames", default="assets/examples")
p.add_argument("--efs", type=float, nargs="+", default=[25, 45, 65])
p.add_argument("--seeds", type=int, default=4)
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
torch.set_num_threads(args.threads)
cascade = Cascade.load(args.weights)
tracer = tracer_reader(args.tracer).area            # the LV-area function `generate` cuts loops with
for f in sorted(Path(args.frames).glob("*.png")):
    img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    cells = []
    for ef in args.efs:
        per = []
        for seed in range(args.seeds):
            _, cut = stage_loops(cascade.sample(img, ef, seed=seed), frame=img, tracer=tracer)
            if len(cut.ed) >= 2:
                per.append(f"{np.median(np.diff(cut.ed)) / cut.fps:.2f}")
            else:
                per.append(f"{cut.frames / cut.fps:.2f}" if cut.complete else "-")
        cells.append(f"EF {ef:g}: {' '.join(per)}")
    print(f"{f.name}: " + " | ".join(cells), flush=True)
