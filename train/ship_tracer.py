"""Ship a trained LV tracer into a weights bundle in fp16, only when fp16 changes nothing that matters.

  python train/ship_tracer.py --tracer runs/tracer_mix/tracer.safetensors --data data/tracer_mix \
      --bundle assets/weights/demo [--max-prob-change 0.01]

Measures, on the VAL traced frames of --data (VolumeTracings.csv), the largest change of the LV probability
and the share of mask pixels that flip between the fp32 run output and its fp16 copy; writes
BUNDLE/tracer.safetensors (fp16, the run's metadata, `trained_on` named from --data by
echogen.eval.readout.describe_dataset unless --trained-on is given) and names it in the manifest only when the
largest probability change is below --max-prob-change. Loading casts the fp16 tensors back to fp32.
"""
import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

from echogen.eval import tracer_eval
from echogen.eval.readout import shipped_metadata
from echogen.nets.tracer import load_tracer, predict_probs, save_tracer
from echogen.weights.bundle import name_shipped

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--tracer", required=True, help="the training run's fp32 tracer .safetensors")
p.add_argument("--data", required=True, help="the EchoNet-format dataset it was trained on (VAL frames checked)")
p.add_argument("--bundle", required=True, help="weights bundle folder to write tracer.safetensors into")
p.add_argument("--trained-on", default=None, help="what the data is (default: described from --data)")
p.add_argument("--steps", default=None, help="the steps label (default: the run's; e.g. a fine-tune's whole history)")
p.add_argument("--frames", type=int, default=40, help="VAL traced frames compared")
p.add_argument("--max-prob-change", type=float, default=0.01)
args = p.parse_args()

model32, cfg = load_tracer(args.tracer)
val = tracer_eval.traced_frames(args.data, "VAL", cfg.size, None)
if val is None:
    sys.exit(f"error: {args.data}: no traced VAL frames (VolumeTracings.csv)")
frames = val[0][:args.frames]
model16 = copy.deepcopy(model32).half().float()          # what loading the fp16 file gives
p32, p16 = predict_probs(model32, frames).numpy(), predict_probs(model16, frames).numpy()
change = float(np.abs(p32 - p16).max())
flipped = float(((p32 >= cfg.threshold) != (p16 >= cfg.threshold)).mean())
print(f"fp16 vs fp32 on {len(frames)} VAL frames: largest probability change {change:.4f}, "
      f"{100 * flipped:.4f} % of mask pixels flipped")
if change >= args.max_prob_change:
    sys.exit(f"error: fp16 changes a probability by {change:.4f} (>= {args.max_prob_change}); not shipped")
meta = shipped_metadata(args.tracer, args.data, args.trained_on, steps=args.steps, stored_as=(
    f"fp16 (from the fp32 run output {Path(args.tracer).name}; largest probability change {change:.4f})"))
out = Path(args.bundle) / "tracer.safetensors"
save_tracer(out, copy.deepcopy(model32).half(), cfg, **meta)
name_shipped(args.bundle, "tracer", "tracer.safetensors", meta.get("steps"))
back, _ = load_tracer(args.bundle)
assert all(t.dtype == torch.float32 for t in back.parameters())
print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): trained on {meta['trained_on']}")
