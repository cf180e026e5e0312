"""Does synthetic data help EF regression? Issue 25's experiment, on any EchoNet-format dataset.

  PYTHONPATH=. python train/synth_experiment.py --data DATA --out runs/synth_exp --weights assets/weights/demo \
      --real 200 --preset small --reg-steps 4000

Arms (the same regressor preset, steps and seed; VAL and TEST are always DATA's real VAL / TEST videos):
  a_real        a real subset: --real TRAIN videos (seeded choice)
  b_real_synth  (a) + synthetic videos made from (a)'s own frames (--synth-per-frame each, EFs --synth-ef)
  c_synth       (b)'s synthetic videos only
  d_imbalanced  --real TRAIN videos with EF >= --low-ef only (no low EF at all)
  d_plus_low    (d) + --n-low synthetic videos with target EF in [--low-min, --low-ef), from (d)'s frames
Each arm: DATA-format folder RUN/data_<arm> (symlinks), train/train_regressor.py into RUN/reg_<arm>, then TEST
MAE / R^2 overall and per EF bin (<35, 35-50, 50-65, >=65), written to RUN/results.csv and RUN/results.md.
Synthetic videos: `python -m echogen synth` (regressor filter --filter-tolerance, privacy columns), run through
--launcher (e.g. "torchrun --nproc_per_node=8") on a cluster. Every step resumes: rerun the same command.
--arms a_real,d_imbalanced,... runs a subset of the arms.
"""
import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from echogen.data import synth
from echogen.data.echonet import load_video, read_filelist
from echogen.ef import EF_BIN_EDGES

ROOT = Path(__file__).resolve().parent.parent

ARMS = ("a_real", "b_real_synth", "c_synth", "d_imbalanced", "d_plus_low")

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", required=True, help="EchoNet-format dataset (TRAIN / VAL / TEST)")
p.add_argument("--out", required=True, help="experiment folder (resumed)")
p.add_argument("--weights", default=str(ROOT / "assets" / "weights" / "demo"), help="cascade weights bundle")
p.add_argument("--real", type=int, default=200, help="real TRAIN videos in (a) and (d)")
p.add_argument("--synth-per-frame", type=int, default=1, help="synthetic videos per real frame in (b)/(c)")
p.add_argument("--synth-ef", default="balanced", help="target EFs of (b)/(c)'s synthetic videos")
p.add_argument("--low-ef", type=float, default=35.0, help="(d) drops TRAIN EFs below this")
p.add_argument("--low-min", type=float, default=10.0, help="lowest target EF of (d)'s synthetic videos")
p.add_argument("--n-low", type=int, default=100, help="synthetic low-EF videos added in (d)")
p.add_argument("--low-frames", type=float, default=1.0,
               help="condition (d)'s low-EF videos on this fraction of (d)'s TRAIN videos with the largest EDV "
                    "(1 = all of them). Low-EF hearts are usually dilated (phantom v1: mean EDV 199 below EF 20, "
                    "118 above EF 50); EchoNet-Dynamic's FileList carries EDV")
p.add_argument("--gen-steps", default=None, help="cascade sampler steps (synth --steps)")
p.add_argument("--filter-tolerance", type=float, default=5.0)
p.add_argument("--synth-args", default="", help="more `echogen synth` flags, e.g. '--privacy-max 500'")
p.add_argument("--launcher", default="", help="prefix for synth, e.g. 'torchrun --nproc_per_node=4'")
p.add_argument("--preset", default="small", help="regressor preset (train_regressor.py --preset)")
p.add_argument("--reg-steps", type=int, default=0, help="regressor steps (0 = the preset's)")
p.add_argument("--reg-args", default="", help="more train_regressor.py flags, e.g. '--augment mild'")
p.add_argument("--val-videos", type=int, default=None)
p.add_argument("--test-videos", type=int, default=0, help="TEST videos scored (0 = all)")
p.add_argument("--arms", default=",".join(ARMS))
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
arms = [a.strip() for a in args.arms.split(",") if a.strip()]
bad = set(arms) - set(ARMS)
if bad:
    sys.exit(f"unknown arms {sorted(bad)} (choose from {', '.join(ARMS)})")
rows = read_filelist(args.data)
train = [r for r in rows if r["Split"] == "TRAIN"]
evalrows = [r for r in rows if r["Split"] in ("VAL", "TEST")]
order = np.random.default_rng([args.seed, 25]).permutation(len(train))
subset_a = [train[i] for i in order][:args.real]
subset_d = [train[i] for i in order if train[i]["EF"] >= args.low_ef][:args.real]


def log(msg):
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(out / "log.txt", "a") as f:
        f.write(line + "\n")


def run(cmd):
    log("$ " + " ".join(shlex.quote(str(c)) for c in cmd))
    env = dict(__import__("os").environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {cmd}")


def folder(name, parts):
    d = out / f"data_{name}"
    n = synth.combine(d, parts)
    return d, n


def make_synth(name, frames_dir, n, ef):
    dest = out / f"synth_{name}"
    cmd = shlex.split(args.launcher) if args.launcher else [sys.executable]
    cmd += ["-m", "echogen"] + (["--"] if args.launcher else []) + ["synth", "--weights", args.weights,
                                                         "--frames", frames_dir, "--split", "TRAIN", "--n", n,
                                                         "--ef", ef, "--out", dest, "--seed", args.seed,
                                                         "--filter-tolerance", args.filter_tolerance]
    if args.gen_steps:
        cmd += ["--steps", args.gen_steps]
    cmd += shlex.split(args.synth_args)
    run(cmd)
    return dest, synth.read_rows(dest / "FileList.csv")


# real subsets (their frames condition the synthetic videos; VAL/TEST included so each folder trains as is)
real_a, _ = folder("a_real", [(args.data, subset_a + evalrows)])
real_d, _ = folder("d_imbalanced", [(args.data, subset_d + evalrows)])
log(f"(a) {len(subset_a)} real TRAIN videos; (d) {len(subset_d)} with EF >= {args.low_ef:g}; "
    f"{sum(r['Split'] == 'VAL' for r in evalrows)} VAL, {sum(r['Split'] == 'TEST' for r in evalrows)} TEST")
data_dirs = {"a_real": real_a, "d_imbalanced": real_d}
if {"b_real_synth", "c_synth"} & set(arms):
    sdir, srows = make_synth("b", real_a, len(subset_a) * args.synth_per_frame, args.synth_ef)
    data_dirs["b_real_synth"] = folder("b_real_synth", [(args.data, subset_a + evalrows), (sdir, srows)])[0]
    data_dirs["c_synth"] = folder("c_synth", [(args.data, evalrows), (sdir, srows)])[0]
if "d_plus_low" in arms:
    low_src, low_name = real_d, "d_low"
    if args.low_frames < 1.0:
        if not 0 < args.low_frames or not all(np.isfinite(r.get("EDV", np.nan)) for r in subset_d):
            sys.exit("--low-frames needs a fraction in (0, 1] and an EDV for every TRAIN video in FileList.csv")
        big = sorted(subset_d, key=lambda r: -r["EDV"])[:max(1, round(args.low_frames * len(subset_d)))]
        low_src = folder(f"d_lowsrc{args.low_frames:g}", [(args.data, big + evalrows)])[0]
        low_name = f"d_low_edv{args.low_frames:g}"
        log(f"(d) low-EF videos conditioned on the {len(big)} TRAIN videos of (d) with the largest EDV "
            f"({big[-1]['EDV']:.0f}-{big[0]['EDV']:.0f})")
        args.synth_args += f" --privacy-ref {shlex.quote(str(real_d))}"
    sdir, srows = make_synth(low_name, low_src, args.n_low, f"uniform:{args.low_min:g},{args.low_ef - 0.01:g}")
    data_dirs["d_plus_low"] = folder("d_plus_low", [(args.data, subset_d + evalrows), (sdir, srows)])[0]


def score(reg_dir, data_dir):
    from echogen.eval.metrics import mae_by_bin, regression_metrics
    from echogen.nets.regressor import load_regressor, predict_ef

    cache = reg_dir / "test_predictions.csv"
    if not cache.is_file():
        model, cfg = load_regressor(reg_dir / "regressor.safetensors")
        test = [r for r in read_filelist(data_dir) if r["Split"] == "TEST"]
        if args.test_videos:
            test = test[:args.test_videos]
        with open(cache, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["FileName", "EF", "Pred"])
            for r in test:
                v, fps = load_video(data_dir, r["FileName"])
                fps = r["FPS"] if r.get("FPS") and np.isfinite(r["FPS"]) else fps
                w.writerow([r["FileName"], r["EF"], f"{predict_ef(model, cfg, v, fps)[0]:.3f}"])
    with open(cache, newline="") as f:
        pr = list(csv.DictReader(f))
    y, yh = np.array([float(r["EF"]) for r in pr]), np.array([float(r["Pred"]) for r in pr])
    res = {"n_test": len(y), **{k: round(v, 3) for k, v in regression_metrics(y, yh).items()}}
    for lo, hi, n, err in mae_by_bin(y, yh):
        res[f"mae_{lo}_{hi}"] = None if err is None else round(err, 3)
        res[f"n_{lo}_{hi}"] = n
    return res


results = []
for arm in arms:
    d = data_dirs[arm]
    n_train = sum(r["Split"] == "TRAIN" for r in read_filelist(d))
    reg = out / f"reg_{arm}"
    cmd = [sys.executable, ROOT / "train" / "train_regressor.py", "--data", d, "--preset", args.preset, "--out", reg,
           "--seed", args.seed, "--test-videos", 0]
    if args.reg_steps:
        cmd += ["--steps", args.reg_steps]
    if args.val_videos is not None:
        cmd += ["--val-videos", args.val_videos]
    cmd += shlex.split(args.reg_args)
    run(cmd)
    res = {"arm": arm, "n_train": n_train, **score(reg, d)}
    log(json.dumps(res))
    results.append(res)

keys = list(results[0].keys()) if results else []
with open(out / "results.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(results)
lines = ["| arm | TRAIN videos | TEST R^2 | MAE | MAE EF<35 | MAE 35-50 | MAE 50-65 | MAE >=65 |",
         "|---|---|---|---|---|---|---|---|"]
for r in results:
    cell = [r.get(f"mae_{lo}_{hi}") for lo, hi in zip(EF_BIN_EDGES, EF_BIN_EDGES[1:])]
    lines.append(f"| {r['arm']} | {r['n_train']} | {r['r2']:.3f} | {r['mae']:.2f} | "
                 + " | ".join("-" if c is None else f"{c:.2f}" for c in cell) + " |")
(out / "results.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
