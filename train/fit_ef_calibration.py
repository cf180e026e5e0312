"""Fit, write and measure a bundle's EF calibration (echogen.ef.EFCalibration).

A trained cascade does not reproduce the EF it is conditioned on exactly: the demo cascades over-express low EF
on phantom-v1 frames (asked 25 read ~15). The fix is measured, not guessed: generate from many frames at a grid
of conditioning EFs, read every loop back, and invert the mean response.

  probe   generate from a random frame of the first N videos of a split of each dataset, one batch per frame at
          every grid EF; read each loop with the regressor and by LV tracing; append to OUT/readings.csv
          (resumable: frames already there are skipped). --calibrated: through the bundle's calibration.
  fit     the VAL readings (uncalibrated, one reader) -> the mean read EF per grid EF -> the bundle's manifest
          "ef_calibration", with the sha256 of the stage files it holds for.
  report  slope / intercept of read vs asked EF, mean error per EF bin, R^2, per dataset and per reader.

The fit inverts, by default, the mean of the two readers: on the demo cascades' loops the regressor saturates near
78 % (asked 90: regressor 78, LV tracing 87) and reads low EFs higher than tracing (asked 10: 14-17 vs 10-11), so
either reader alone would fold its own bias into the calibration.

  python train/fit_ef_calibration.py probe --weights assets/weights/demo-fast --data data/cal_v1 data/cal_v2 \\
      --split VAL --n 60 --out runs/cal/demo-fast_val
  python train/fit_ef_calibration.py fit --weights assets/weights/demo-fast --readings runs/cal/demo-fast_val/readings.csv
  python train/fit_ef_calibration.py probe ... --split TEST --calibrated --out runs/cal/demo-fast_test
  python train/fit_ef_calibration.py report --readings runs/cal/demo-fast_test/readings.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from echogen.data.echonet import load_video, read_filelist
from echogen.diffusion.cascade import Cascade
from echogen.ef import EF_BIN_EDGES, fit_calibration
from echogen.eval.metrics import regression_metrics
from echogen.eval.reading import tracing_ef, video_ef
from echogen.eval.readout import LOOP_READER, loop_ef
from echogen.weights.bundle import file_sha256, read_manifest, update_manifest

GRID = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
FIELDS = ["data", "file", "cond_frame", "calibrated", "asked", "conditioned", "ef_regressor", "ef_tracing"]


def probe(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    from echogen.nets.regressor import load_regressor
    from echogen.nets.tracer import load_tracer
    cascade = Cascade.load(args.weights)
    if args.calibrated and cascade.ef_calibration is None:
        raise SystemExit(f"{args.weights}: no valid EF calibration to probe ({cascade.calibration_note or 'none'})")
    regressor = load_regressor(args.regressor)
    tracer = load_tracer(args.tracer)[0] if not args.no_tracing else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "readings.csv"
    done = set()
    if path.is_file():
        with open(path) as f:
            done = {(r["data"], r["file"], r["calibrated"]) for r in csv.DictReader(f)}
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        cond = cascade.conditioning_ef(args.efs, args.calibrated)       # the EFs the networks get: the same per frame
        for data in args.data:
            rows = [r for r in read_filelist(data) if r["Split"] == args.split.upper()][: args.n]
            rng = np.random.default_rng(args.seed)
            for i, row in enumerate(rows):
                video, fps = load_video(data, row["FileName"])
                c = int(rng.integers(len(video)))       # drawn for every row, so skipping keeps the frames
                key = (str(data), row["FileName"], str(int(args.calibrated)))
                if key in done:
                    continue
                t0 = time.perf_counter()
                frame = torch.from_numpy(video[c].astype(np.float32) / 255.0)
                res = cascade.sample(frame, args.efs, seed=args.seed * 100003 + i, calibrate=args.calibrated)[-1]
                for k, asked in enumerate(args.efs):
                    v = res.video[k, 0]
                    w.writerow({"data": data, "file": row["FileName"], "cond_frame": c,
                                "calibrated": int(args.calibrated), "asked": asked,
                                "conditioned": round(float(cond[k]), 3),
                                "ef_regressor": round(video_ef(regressor, v, res.fps)[0], 3),
                                "ef_tracing": round(tracing_ef(tracer, v, res.fps), 3) if tracer else float("nan")})
                f.flush()
                print(f"{data} {i + 1}/{len(rows)} {row['FileName']} frame {c}: {time.perf_counter() - t0:.1f} s",
                      flush=True)


def load_readings(*paths) -> list[dict]:
    """Rows of one or more readings.csv files (e.g. probes of the same frames at different EF grids)."""
    rows = []
    for path in paths:
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def reading(row: dict, reader: str) -> float:
    """One video's EF by `reader`: regressor, tracing, or mean (echogen.eval.readout.loop_ef: the mean of the
    two, the one that read it when the other failed; NaN when none read it)."""
    if reader != "mean":
        return float(row[f"ef_{reader}"])
    r = loop_ef(float(row["ef_regressor"]), float(row["ef_tracing"]))
    return float("nan") if r is None else r[0]


def fit(args) -> None:
    rows = [r for r in load_readings(*args.readings) if r["calibrated"] == "0"]
    if not rows:
        raise SystemExit(f"{args.readings}: no uncalibrated readings to fit")
    asked = np.array([float(r["asked"]) for r in rows])
    read = np.array([reading(r, args.reader) for r in rows])
    datasets = sorted({r["data"] for r in rows})
    n_frames = len({(r["data"], r["file"]) for r in rows})
    man = read_manifest(args.weights)
    shas = {s: file_sha256(Path(args.weights) / f) for s, f in man["stages"].items()}
    cal = fit_calibration(asked, read, reader=f"read by the {LOOP_READER[args.reader]} of {args.reader_name}",
                          fit_on=f"{n_frames} frames of {args.note or ', '.join(datasets)}, "
                                 f"conditioned on {', '.join(f'{g:g}' for g in sorted(set(asked)))} %",
                          stages_sha256=shas)
    for a, r in zip(cal.asked, cal.read):
        print(f"conditioned on {a:5.1f} % -> read {r:5.1f} %")
    for e in (15, 25, 45, 65, 85):
        print(f"asked {e} % -> conditioned on {float(cal.condition(torch.tensor([float(e)]))[0]):.1f} %")
    update_manifest(args.weights, ef_calibration=cal.to_dict())
    Cascade.load(args.weights)                     # the written calibration loads and holds for these weights
    print(f"wrote ef_calibration into {args.weights}/manifest.json")


def summarise(rows: list[dict], reader: str) -> dict:
    asked = np.array([float(r["asked"]) for r in rows])
    read = np.array([reading(r, reader) for r in rows])
    ok = np.isfinite(read)
    asked, read = asked[ok], read[ok]
    slope, intercept = np.polyfit(asked, read, 1)
    err = read - asked
    bins = {f"{lo}-{hi}": round(float(err[(asked >= lo) & (asked < hi)].mean()), 2)
            for lo, hi in zip(EF_BIN_EDGES[:-1], EF_BIN_EDGES[1:]) if ((asked >= lo) & (asked < hi)).any()}
    m = regression_metrics(asked, read)
    return {"n": int(ok.sum()), "failed": int((~ok).sum()), "slope": round(float(slope), 3),
            "intercept": round(float(intercept), 2), "r2": round(m["r2"], 3), "mae": round(m["mae"], 2),
            "mean_error_by_asked_bin": bins,
            "mean_read_by_asked": {f"{g:g}": round(float(read[asked == g].mean()), 2) for g in np.unique(asked)}}


def report(args) -> None:
    rows = load_readings(*args.readings)
    out = {}
    for data in sorted({r["data"] for r in rows}):
        for cal in sorted({r["calibrated"] for r in rows}):
            sel = [r for r in rows if r["data"] == data and r["calibrated"] == cal]
            for reader in ("regressor", "tracing", "mean"):
                if sel and any(np.isfinite(reading(r, reader)) for r in sel):
                    s = summarise(sel, reader)
                    out[f"{data} | {'calibrated' if cal == '1' else 'raw'} | {reader}"] = s
                    print(f"{data:>16} {'calibrated' if cal == '1' else 'raw':>10} {reader:>9}: n {s['n']} "
                          f"(failed {s['failed']}) slope {s['slope']:.3f} intercept {s['intercept']:+.2f} "
                          f"R^2 {s['r2']:.3f} MAE {s['mae']:.2f} error by asked bin {s['mean_error_by_asked_bin']}\n"
                          f"{'':>38}mean read by asked EF {s['mean_read_by_asked']}")
    Path(args.readings[0]).with_name("report.json").write_text(json.dumps(out, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("probe")
    a.add_argument("--weights", required=True)
    a.add_argument("--data", nargs="+", required=True)
    a.add_argument("--split", default="VAL")
    a.add_argument("--n", type=int, default=60, help="first N videos of the split of each dataset")
    a.add_argument("--efs", type=float, nargs="+", default=GRID)
    a.add_argument("--calibrated", action="store_true", help="sample through the bundle's calibration")
    a.add_argument("--regressor", default="assets/weights/demo", help="the reader (default: the shipped demo bundle's)")
    a.add_argument("--tracer", default="assets/weights/demo")
    a.add_argument("--no-tracing", action="store_true")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--threads", type=int, default=0)
    a.add_argument("--out", required=True)
    b = sub.add_parser("fit")
    b.add_argument("--weights", required=True)
    b.add_argument("--readings", nargs="+", required=True)
    b.add_argument("--reader", choices=["regressor", "tracing", "mean"], default="mean",
                   help="whose readings the fit inverts (default: the mean of the regressor's and LV tracing's)")
    b.add_argument("--reader-name", default="the demo bundle", help="where the readers came from (provenance)")
    b.add_argument("--note", default="", help="what the frames were (provenance; default: the dataset paths)")
    c = sub.add_parser("report")
    c.add_argument("--readings", nargs="+", required=True)
    args = p.parse_args()
    {"probe": probe, "fit": fit, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
