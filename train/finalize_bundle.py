"""Turn the fp32 bundle written by training into the shipped one: fp16 weights, but only if fp16
changes nothing measurable. Measures, with the same seeds, fp32 vs fp16 for
  - the cascade: max / mean absolute pixel difference of whole generated videos and the EF the
    regressor reads from them;
  - the regressor: EF read from real videos.
and writes the fp16 bundle to --out only when every EF difference is below --max-ef-diff (%).

    python train/finalize_bundle.py --src runs/demo/bundle32 --data data/phantom3k --out assets/weights/demo

--set STAGE.FIELD=VALUE changes a sampling setting the bundle ships with (e.g. spatial.sigma_start=1.0);
settings that shape the network or its training cannot be changed here.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402

from echogen.diffusion.cascade import Cascade  # noqa: E402
from echogen.config import StageConfig  # noqa: E402
from echogen.data.echonet import load_video, read_filelist  # noqa: E402
from echogen.nets.regressor import load_regressor, predict_ef, save_regressor  # noqa: E402
from echogen.weights.bundle import read_manifest, read_metadata, update_manifest  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--src", required=True, help="fp32 bundle (all stages + regressor)")
p.add_argument("--data", default="data/phantom3k")
p.add_argument("--out", required=True)
p.add_argument("--videos", type=int, default=4, help="TEST videos to compare on")
p.add_argument("--max-ef-diff", type=float, default=0.5)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE",
               help="sampling setting to ship, e.g. spatial.sigma_start=1.0 (repeatable)")
args = p.parse_args()
SAMPLING = {"sampler": str, "steps": int, "guidance": float, "S_churn": float, "S_tmin": float, "S_tmax": float,
            "S_noise": float, "dynamic_threshold": float, "lowres_aug_sample": float, "sigma_start": float}
assert set(SAMPLING) <= {f for f in StageConfig.__dataclass_fields__}
if args.threads:
    torch.set_num_threads(args.threads)

src = Path(args.src)
man = read_manifest(src)
c32 = Cascade.load(src)
for item in args.set:
    key, _, val = item.partition("=")
    stage_name, _, field = key.partition(".")
    if field not in SAMPLING:
        sys.exit(f"--set {item}: '{field}' is not a sampling setting ({', '.join(SAMPLING)})")
    setattr(c32.config.stage(stage_name), field, SAMPLING[field](val))
    print(f"shipping {stage_name}.{field} = {val}")
reg32 = load_regressor(src)
tmp = Path(tempfile.mkdtemp(prefix="echogen-fp16-"))
# training writes "steps" into each file's metadata; files already finalized keep the manifest's record
known = man.get("provenance", {}).get("trained_steps", {})
steps = {name: read_metadata(src / f).get("steps") or known.get(name, "?") for name, f in man["stages"].items()}
steps["regressor"] = read_metadata(src / man["regressor"]).get("steps") or known.get("regressor", "?")
c32.save(tmp, fp16=True, **{**man.get("provenance", {}), "trained_steps": steps,
                            "data": f"phantom {args.data}", "finalized_by": "train/finalize_bundle.py (fp16)"})
model16 = copy.deepcopy(reg32[0]).half()
save_regressor(tmp / "regressor.safetensors", model16, reg32[1])
update_manifest(tmp, regressor="regressor.safetensors")
c16, reg16 = Cascade.load(tmp), load_regressor(tmp)   # loading casts fp16 tensors back to fp32 parameters

rows = [r for r in read_filelist(args.data) if r["Split"] == "TEST"][: args.videos]
report = {"videos": [], "regressor_real": []}
for i, row in enumerate(rows):
    video, fps = load_video(args.data, row["FileName"])
    fps = row.get("FPS") or fps or 50.0
    e32, e16 = predict_ef(*reg32, video, fps)[0], predict_ef(*reg16, video, fps)[0]
    report["regressor_real"].append(abs(e32 - e16))
    target = float(15 + 70 * i / max(1, len(rows) - 1))
    frame = video[0].astype(np.float32) / 255.0
    v32 = c32.sample(frame, target, seed=i)[-1]
    v16 = c16.sample(frame, target, seed=i)[-1]
    d = (v32.video - v16.video).abs()
    g32, g16 = predict_ef(*reg32, v32.video[0, 0], v32.fps)[0], predict_ef(*reg32, v16.video[0, 0], v16.fps)[0]
    report["videos"].append({"target": target, "max_abs": float(d.max()), "mean_abs": float(d.mean()),
                             "ef_fp32": g32, "ef_fp16": g16})
    print(f"{row['FileName']}: EF target {target:.0f}: pixels max |d| {d.max():.4f} mean |d| {d.mean():.5f}; "
          f"regressed EF fp32 {g32:.2f} fp16 {g16:.2f}; regressor on the real video fp32 {e32:.2f} fp16 {e16:.2f}")

worst = max([abs(v["ef_fp32"] - v["ef_fp16"]) for v in report["videos"]] + report["regressor_real"])
size = lambda d: sum(f.stat().st_size for f in Path(d).glob("*.safetensors")) / 1e6  # noqa: E731
print(f"worst EF difference fp32 vs fp16: {worst:.3f} % (limit {args.max_ef_diff}); "
      f"bundle {size(src):.1f} MB fp32 -> {size(tmp):.1f} MB fp16")
print(json.dumps(report))
if worst >= args.max_ef_diff:
    sys.exit(f"fp16 changes the EF by {worst:.2f} % >= {args.max_ef_diff}: not writing {args.out}; ship fp32")
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
for f in out.glob("*.safetensors"):
    f.unlink()
for f in tmp.iterdir():
    shutil.copy(f, out / f.name)
print(f"wrote fp16 bundle {out} ({size(out):.1f} MB)")
