"""Assemble a shipped variant bundle (e.g. the distilled assets/weights/demo-fast) from distillation outputs.

    python train/ship_variant.py --teacher assets/weights/demo --students runs/demo-fast runs/demo-fast-sr \
        --out assets/weights/demo-fast

--out references the teacher bundle's files by relative path (echogen.weights.bundle.link_bundle: nothing the
teacher ships is copied); each stage a --students bundle holds itself (its own file, not a reference) is written
into --out in fp16 with its config and provenance, and the manifest takes that stage's sampling settings. The
fp16 weights are checked against the fp32 ones: same seeds, the EF the teacher's regressor reads from the final
loop, on --videos frames at EF 30 and 70; nothing is written unless every difference is below --max-ef-diff.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from echogen.diffusion.cascade import Cascade
from echogen.diffusion.stage import cascade_nfe
from echogen.eval.reading import video_ef
from echogen.nets.regressor import load_regressor
from echogen.weights.bundle import link_bundle, load_tensors, read_manifest, save_tensors, update_manifest

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--teacher", required=True)
p.add_argument("--students", nargs="+", required=True, help="bundles written by train/distill.py --bundle")
p.add_argument("--out", required=True)
p.add_argument("--data", default="data/phantom3k", help="frames for the fp16 check (TEST split)")
p.add_argument("--videos", type=int, default=2)
p.add_argument("--max-ef-diff", type=float, default=0.5)
args = p.parse_args()


def own_stages(bundle: Path) -> dict:
    """The stages a bundle holds itself (files inside it, not references to another bundle)."""
    man = read_manifest(bundle)
    return {k: bundle / v for k, v in man["stages"].items() if not Path(v).is_absolute() and ".." not in Path(v).parts}


def assemble(out: Path, fp16: bool) -> None:
    link_bundle(args.teacher, out)
    distilled = {}
    for sb in map(Path, args.students):
        man = read_manifest(sb)
        for name, f in own_stages(sb).items():
            t, cfg, meta = load_tensors(f, "stage")
            if fp16:
                t = {k: v.half() if v.is_floating_point() else v for k, v in t.items()}
            extra = {k: v for k, v in meta.items() if k not in ("echogen_kind", "echogen_config")}
            save_tensors(out / f"{name}.safetensors", t, "stage", cfg, **extra)
            casc = read_manifest(out)["cascade"]
            casc["stages"] = [cfg if s["name"] == name else s for s in casc["stages"]]
            update_manifest(out, cascade=casc, stages={name: f"{name}.safetensors"})
            distilled[name] = json.loads(extra.get("distilled_from", "{}")) or (man.get("provenance", {})
                                                                             .get("distilled", {}).get(name))
    update_manifest(out, variant="fast", provenance={"distilled": distilled, "finalized_by": "train/ship_variant.py"
                                                     + (" (fp16)" if fp16 else "")})


def read_efs(bundle: Path) -> list[float]:
    from echogen.data.echonet import EchoNetDataset
    c = Cascade.load(bundle)
    reg = load_regressor(args.teacher)
    ds = EchoNetDataset(args.data, "TEST", frames=32, fps=25.0, size=112, random_start=False, cond_frame="first",
                        max_videos=args.videos)
    out = []
    for i in range(args.videos):
        for ef in (30.0, 70.0):
            r = c.sample(ds[i]["frame"][0], ef, seed=i)[-1]
            out.append(video_ef(reg, r.video[0], r.fps)[0])
    return out


torch.set_num_threads(max(1, torch.get_num_threads()))
with tempfile.TemporaryDirectory(dir=Path(args.out).parent) as tmp:
    full, half = Path(tmp) / "fp32", Path(tmp) / "fp16"
    assemble(full, False)
    assemble(half, True)
    a, b = read_efs(full), read_efs(half)
    worst = max(abs(x - y) for x, y in zip(a, b))
    print(f"fp32 vs fp16 EF read back: {[round(x, 2) for x in a]} vs {[round(y, 2) for y in b]}; worst {worst:.3f}")
    if worst > args.max_ef_diff:
        raise SystemExit(f"fp16 changes the EF by {worst:.3f} > {args.max_ef_diff}: nothing written")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    assemble(out, True)
man = read_manifest(out)
print(f"wrote {out}: stages {man['stages']}; {cascade_nfe(Cascade.load(out).config)} network evaluations per video")
