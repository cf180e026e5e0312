"""Score an LV tracer (and optionally an EF regressor) on an EchoNet-format split, as written and degraded as
real exports are.

  python train/eval_tracer.py --data DIR --tracer runs/tracer/tracer.safetensors [--split TEST] [--n N]
      [--degrade 8fps,16frames,32levels,jpeg50,mirror,upsidedown ...] [--regressor BUNDLE] [--orientation BUNDLE] [--out DIR]

Prints one table row per condition: Dice on the traced frames, EF by LV tracing (R^2, MAE, Pearson r, failed
videos), and the two controls (predicted masks at the labelled ED / ES frames; the reference masks' own
method-of-disks EF against FileList's EF). Writes OUT/summary.json and OUT/per_video_<k>.csv when --out is given.
"""
import argparse
import csv
import json
import re
import sys
from pathlib import Path


from echogen.nets.tracer import load_tracer  # noqa: E402
from echogen.eval.tracer_eval import Degrade, evaluate_tracer, traced_frames  # noqa: E402


def parse_degrade(text: str) -> Degrade:
    d = Degrade()
    for part in filter(None, (t.strip() for t in text.split(","))):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(fps|frames|levels)|jpeg(\d+)|mirror|upsidedown|none", part)
        if not m:
            raise SystemExit(f"error: --degrade: cannot read '{part}' (e.g. 8fps,16frames,32levels,jpeg50,mirror,"
                             "upsidedown)")
        if m.group(2) == "fps":
            d.fps = float(m.group(1))
        elif m.group(2) == "frames":
            d.frames = int(m.group(1))
        elif m.group(2) == "levels":
            d.levels = int(m.group(1))
        elif m.group(3):
            d.jpeg = int(m.group(3))
        elif part == "mirror":
            d.mirror = True
        elif part == "upsidedown":
            d.upside_down = True
    return d


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--tracer", required=True, help="tracer .safetensors or a bundle with one")
    p.add_argument("--regressor", default=None, help="also score this EF regressor (.safetensors or bundle) on the same clips")
    p.add_argument("--orientation", default=None, help="an orientation network (.safetensors or bundle): each clip "
                   "is put in the standard view before it is read, as `echogen ef` does")
    p.add_argument("--split", default="TEST")
    p.add_argument("--n", type=int, default=None, help="first N videos of the split")
    p.add_argument("--degrade", nargs="*", default=["none"], help="conditions, e.g. none 8fps,16frames")
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    model, cfg = load_tracer(args.tracer)
    data = traced_frames(args.data, args.split.upper(), cfg.size, args.n)
    if data is None:
        raise SystemExit(f"error: {args.data}: no traced {args.split} frames")
    reg = None
    if args.regressor:
        from echogen.nets.regressor import load_regressor
        reg = load_regressor(args.regressor)
    orient = None
    if args.orientation:
        from echogen.nets.orient import load_orient
        orient = load_orient(args.orientation)[0]
    results = []
    print("| clips | Dice (mean / p10) | tracing EF R^2 | MAE | Pearson r | failed | EF pred. masks at labelled ED/ES R^2 "
          "| EF reference masks R^2 |" + (" regressor EF R^2 | MAE | Pearson r |" if reg else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|---|---|" if reg else ""))
    for k, text in enumerate(args.degrade):
        s, rows = evaluate_tracer(model, args.data, args.split.upper(), args.n, parse_degrade(text), frames_data=data,
                                  regressor=reg, orient=orient)
        results.append(s)
        te = s["tracing_ef"] or {"r2": float("nan"), "mae": float("nan"), "pearson_r": float("nan")}
        c1 = (s.get("ef_pred_masks_labelled_frames") or {}).get("r2", float("nan"))
        c2 = (s.get("ef_reference_masks") or {}).get("r2", float("nan"))
        print(f"| {s['degrade']} | {s['dice_mean']:.3f} / {s['dice_p10']:.3f} | {te['r2']:.3f} | {te['mae']:.2f} | "
              f"{te['pearson_r']:.3f} | {s['tracing_failed']} of {s['videos']} | {c1:.3f} | {c2:.3f} |"
              + (f" {s['regressor_ef']['r2']:.3f} | {s['regressor_ef']['mae']:.2f} | {s['regressor_ef']['pearson_r']:.3f} |"
                 if reg else "")
              + (f" read mirrored back: {s['read_mirrored_back']} of {s['videos']}, turned apex-up: "
                 f"{s['read_turned']}" if orient else ""),
              flush=True)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            with open(out / f"per_video_{k}.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for r in rows for key in r)))
                w.writeheader()
                w.writerows(rows)
    meta = getattr(model, "meta", {})
    print(f"\ntracer {args.tracer}: trained on {meta.get('trained_on', 'unrecorded data')}, step {meta.get('steps', '?')}; "
          f"data {args.data} {args.split} ({results[0]['videos']} videos, {results[0]['traced_frames']} traced frames)")
    if args.out:
        (Path(args.out) / "summary.json").write_text(json.dumps({"tracer": args.tracer, "data": args.data,
                                                                 "results": results}, indent=2))


if __name__ == "__main__":
    main()
