"""Where in the cascade is EF control lost? For a few TEST frames, generate at several EFs with the
cascade cut after each stage (later stages replaced by plain upsampling) and print the EF the
regressor reads from each final-size loop.

    python train/ef_by_stage.py --data data/phantom3k --weights assets/weights/demo --videos 3
"""
from __future__ import annotations

import sys
from pathlib import Path


import numpy as np  # noqa: E402

from ef_probe import first_frame, load_probe, probe_parser, read_efs  # noqa: E402

args = probe_parser(__doc__, videos=3, efs=[20, 50, 80]).parse_args()
cascade, regressor, rows = load_probe(args)
names = cascade.config.stage_names
cuts = [names[: k + 1] for k in range(len(names))]
read = {tuple(c): [] for c in cuts}
print("| video (true EF) | stages run | " + " | ".join(f"asked {e:g}" for e in args.efs) + " |")
print("|---|---|" + "---|" * len(args.efs))
for row in rows:
    frame = first_frame(args.data, row)
    for cut in cuts:
        efs = read_efs(cascade, regressor, frame, args.efs, args.seed, stages=cut)
        read[tuple(cut)].append(efs)
        print(f"| {row['FileName']} ({float(row['EF']):.0f}) | {'+'.join(cut)} | "
              + " | ".join(f"{e:.1f}" for e in efs) + " |", flush=True)
print("\nmean EF read, per stage cut:")
for cut, v in read.items():
    m = np.mean(v, axis=0)
    print(f"  {'+'.join(cut):<24} " + "  ".join(f"asked {e:g} -> {x:.1f}" for e, x in zip(args.efs, m)))
