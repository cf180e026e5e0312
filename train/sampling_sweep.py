"""Quick sweep of sampling settings: for the first N TEST frames, generate full loops at EF 20 / 35 /
50 / 65 / 80 under each variant and print the mean EF the regressor reads back and the R^2 against the
asked EF. A cheap screen (N x 5 loops per variant) before a 100-video `python -m echogen evaluate`.

    python train/sampling_sweep.py --videos 2 --variants '[["default", {}],
        ["sigma_start", {"sigma_start": {"spatial": 0.25, "temporal": 0.15}}]]'

Each variant is [label, keyword arguments of Cascade.sample] (steps / guidance / sampler / sigma_start).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


import numpy as np  # noqa: E402

from ef_probe import first_frame, load_probe, probe_parser, read_efs  # noqa: E402

p = probe_parser(__doc__, videos=2, efs=[20, 35, 50, 65, 80])
p.add_argument("--variants", default='[["default", {}]]', help="JSON list of [label, sample kwargs]")
args = p.parse_args()
cascade, regressor, rows = load_probe(args)
frames = [first_frame(args.data, r) for r in rows]
asked = np.tile(args.efs, (len(frames), 1))                       # (videos, EFs)
for label, kwargs in json.loads(args.variants):
    t0, read = time.time(), []
    for frame in frames:
        read.append(read_efs(cascade, regressor, frame, args.efs, args.seed, **kwargs))
    read = np.array(read)
    r2 = 1 - ((read - asked) ** 2).sum() / ((asked - asked.mean()) ** 2).sum()
    print(f"{label:<28} mean EF read {np.round(read.mean(0), 1)}  R^2 {r2:.3f}  ({time.time() - t0:.0f} s)",
          flush=True)
