"""FLOPs of EchoGen's network and the matched imagen Unet3D for one stage (torch FlopCounterMode), by
module, to explain a time ratio. Run in the side venv:

    PYTHONPATH=/work/main .ref-venv/bin/python bench/flops.py --preset 2SCM --stage base --frames 4
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from reference import build_pair, calls  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--preset", default="2SCM")
ap.add_argument("--stage", default="base")
ap.add_argument("--frames", type=int, default=4)
ap.add_argument("--match", default="layers")
a = ap.parse_args()
from echogen.config import get_preset  # noqa: E402
cfg = get_preset(a.preset)
st = cfg.stage(a.stage)
ours, theirs, _ = build_pair(st, cfg.diffusion, a.match)
o, t, tb = calls(st, ours, theirs, 1, a.frames)
for name, fn in [("ours (batch 2B)", o), ("theirs (batch 2B)", tb)]:
    fc = FlopCounterMode(display=False, depth=2)
    with torch.no_grad(), fc:
        fn()
    tot = fc.get_total_flops()
    print(f"{name}: {tot / 1e9:.1f} GFLOP")
    by_op = fc.get_flop_counts().get("Global", {})
    print("   " + ", ".join(f"{str(k).split('.')[-1]} {v / 1e9:.1f}" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])))
    mods = {k: sum(v.values()) for k, v in fc.get_flop_counts().items() if k != "Global" and k.count(".") == 1}
    top = sorted(mods.items(), key=lambda kv: -kv[1])[:8]
    print("   " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in top))
