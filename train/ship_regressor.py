"""Ship a trained EF regressor into a weights bundle in fp16, only when fp16 changes no EF that matters.

  python train/ship_regressor.py --regressor runs/reg_v2b/regressor.safetensors --data data/reg_mix \
      --bundle assets/weights/demo [--videos 20] [--max-ef-change 0.1]

Reads the EF of the first --videos VAL videos of --data with the fp32 run output and with its fp16 copy (what
loading the shipped file gives: fp16 tensors cast back to fp32); writes BUNDLE/regressor.safetensors (fp16, the
run's metadata, `trained_on` described from --data unless --trained-on is given) and names it in the manifest only
when the largest EF change is below --max-ef-change points. The sibling of train/ship_tracer.py.
"""
import argparse
import copy
import sys
from pathlib import Path

import torch

from echogen.data.echonet import load_video, read_filelist
from echogen.eval.readout import shipped_metadata
from echogen.nets.regressor import load_regressor, predict_ef, save_regressor
from echogen.weights.bundle import name_shipped

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--regressor", required=True, help="the training run's fp32 regressor .safetensors")
p.add_argument("--data", required=True, help="the EchoNet-format dataset it was trained on (VAL videos read)")
p.add_argument("--bundle", required=True, help="weights bundle folder to write regressor.safetensors into")
p.add_argument("--trained-on", default=None, help="what the data is (default: described from --data)")
p.add_argument("--steps", default=None, help="the steps label (default: the run's; e.g. a fine-tune's whole history)")
p.add_argument("--videos", type=int, default=20, help="VAL videos compared")
p.add_argument("--max-ef-change", type=float, default=0.1)
args = p.parse_args()

model32, cfg = load_regressor(args.regressor)
model16 = copy.deepcopy(model32).half().float()          # what loading the fp16 file gives
rows = [r for r in read_filelist(args.data) if r["Split"] == "VAL"][:args.videos]
if not rows:
    sys.exit(f"error: {args.data}: no VAL videos")
change = 0.0
for r in rows:
    video, fps = load_video(args.data, r["FileName"])
    e32, e16 = predict_ef(model32, cfg, video, fps)[0], predict_ef(model16, cfg, video, fps)[0]
    change = max(change, abs(e32 - e16))
print(f"fp16 vs fp32 on {len(rows)} VAL videos: largest EF change {change:.4f} points")
if change >= args.max_ef_change:
    sys.exit(f"error: fp16 changes an EF by {change:.4f} points (>= {args.max_ef_change}); not shipped")
meta = shipped_metadata(args.regressor, args.data, args.trained_on, steps=args.steps, stored_as=(
    f"fp16 (from the fp32 run output {Path(args.regressor).name}; largest EF change {change:.4f})"))
out = Path(args.bundle) / "regressor.safetensors"
save_regressor(out, copy.deepcopy(model32).half(), cfg, **meta)
name_shipped(args.bundle, "regressor", "regressor.safetensors", meta.get("steps"))
back, _ = load_regressor(args.bundle)
assert all(t.dtype == torch.float32 for t in back.parameters())
print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): trained on {meta['trained_on']}")
