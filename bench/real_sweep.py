"""EF control from a REAL frame: the teacher's sweep of issue 19 ("asked 20/35/50/65/80 read back
24.9/25.1/30.1/34.6/59.9"), run through the CLI as a user runs it, for one or more weights bundles.

    python bench/real_sweep.py --files .venv/lib/python3.11/site-packages/pydicom/data/test_files/examples_ybr_color.dcm \
        --frames 0 15 --efs 20 35 50 65 80 --seeds 0 1 \
        --variants demo=assets/weights/demo demo-raw=assets/weights/demo:raw mild=runs/base_mild/bundle:raw

A variant is NAME=BUNDLE[:raw]; ":raw" conditions the networks on the asked EF as given (`generate
--no-calibration`). Every loop is written by `echogen generate` (input check on, orientation auto) and read by
`echogen ef --method both --json` with one reader bundle (--reader, default the shipped demo bundle): the number
is the mean of the regressor and LV tracing (the app's "EF read from the loop"), or the one that read it.
Per variant: mean read EF per asked EF, Pearson r and least-squares slope of read on asked, MAE. There is no true
EF for these loops: a real frame gives no ground truth, so this measures control (monotone, spread), not accuracy.
Real EchoNet clips must not be used here (their licence; see the brief).
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from echogen.eval.readout import loop_ef

from cli_run import run  # bench/cli_run.py


p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--files", nargs="+", required=True, help="real frames or clips (DICOM, PNG, video)")
p.add_argument("--frames", type=int, nargs="+", default=[0], help="frame indices of multi-frame files")
p.add_argument("--efs", type=float, nargs="+", default=[20, 35, 50, 65, 80])
p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
p.add_argument("--variants", nargs="+", default=["demo=assets/weights/demo"])
p.add_argument("--reader", default="assets/weights/demo", help="bundle whose regressor and tracer read every loop")
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
torch.set_num_threads(args.threads)


def reading(js: dict) -> float | None:
    """The loop's EF by the app's rule for a generated loop (echogen.eval.readout.loop_ef: the mean of both
    readers, or the one that read it)."""
    got = loop_ef(*((js.get(k) or {}).get("ef") for k in ("regressor", "tracing")))
    return None if got is None else got[0]


variants = []
for v in args.variants:
    name, spec = v.split("=", 1)
    bundle, _, raw = spec.partition(":")
    variants.append((name, bundle, raw == "raw"))
table = {name: {ef: [] for ef in args.efs} for name, _, _ in variants}
t0 = time.time()
with tempfile.TemporaryDirectory() as tmp:
    for f in args.files:
        for fr in args.frames:
            for seed in args.seeds:
                for ef in args.efs:
                    for name, bundle, raw in variants:
                        out = f"{tmp}/loop.mp4"
                        run(["generate", "--image", f, "--frame", str(fr), "--ef", f"{ef:g}", "--weights", bundle,
                             "--seed", str(seed), "--out", out, "--no-read"] + (["--no-calibration"] if raw else []))
                        js = json.loads(run(["ef", "--video", out, "--weights", args.reader, "--json",
                                             "--method", "both"]))
                        r = reading(js)
                        table[name][ef].append(r)
                        print(f"{Path(f).name} frame {fr} seed {seed} asked {ef:g} {name}: "
                              f"regressor {(js.get('regressor') or {}).get('ef')} tracing "
                              f"{(js.get('tracing') or {}).get('ef')} -> {r} ({time.time() - t0:.0f} s)", flush=True)

print(f"\nasked EF: {' '.join(f'{e:>6g}' for e in args.efs)} | r, slope, MAE (read vs asked), unread")
for name, _, raw in variants:
    means = [np.mean([x for x in table[name][e] if x is not None]) if any(x is not None for x in table[name][e])
             else float("nan") for e in args.efs]
    pairs = [(e, x) for e in args.efs for x in table[name][e] if x is not None]
    a, b = np.array(pairs).T if pairs else (np.zeros(0), np.zeros(0))
    r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 else float("nan")
    slope = float(np.polyfit(a, b, 1)[0]) if len(a) > 2 else float("nan")
    unread = sum(x is None for e in args.efs for x in table[name][e])
    print(f"{name:>9}: {' '.join(f'{m:6.1f}' for m in means)} | r {r:.3f}, slope {slope:.2f}, "
          f"MAE {np.abs(b - a).mean():.1f}, {unread} unread")
