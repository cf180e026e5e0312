"""EF read back from what `echogen generate` writes: the one-cycle loop (read by `echogen ef`, which repeats a short
seamless loop to fill the regressor's window) against the zero-padded loop (how `ef` read it before) and the whole
generated clip (`generate --full-clip`).

    python bench/loop_reading.py --data data/cal_v2 --n 10 --efs 25 45 65 [--weights assets/weights/demo-fast]

Frames: a random frame of each of the first N TEST videos. Every file goes through the CLI as a user runs it
(echogen.cli.main: generate -> MP4 -> ef --json --method regressor). Prints one row per file and the error summary.
"""
import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from echogen.data.clips import ef_frames, read_frames
from echogen.data.echonet import load_video, read_filelist
from echogen.nets.regressor import at_regressor_rate, load_regressor, predict_ef_batch

from cli_run import run  # bench/cli_run.py

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", required=True)
p.add_argument("--weights", default="assets/weights/demo-fast")
p.add_argument("--reader", default="assets/weights/demo", help="bundle whose EF regressor reads the files")
p.add_argument("--n", type=int, default=10)
p.add_argument("--efs", type=float, nargs="+", default=[25, 45, 65])
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
torch.set_num_threads(args.threads)
model, cfg = load_regressor(args.reader)


def zero_padded(path) -> float:
    raw, fps = read_frames(Path(path))
    v = torch.from_numpy(ef_frames(raw, cfg.size).astype(np.float32) / 255.0)
    return float(predict_ef_batch(model, at_regressor_rate(v, fps, cfg)[: cfg.frames][None, None])[0])


rows = [r for r in read_filelist(args.data) if r["Split"] == "TEST"][: args.n]
rng = np.random.default_rng(args.seed)
err = {"loop, repeated (ef now)": [], "loop, zero-padded (ef before)": [], "whole clip (--full-clip)": []}
with tempfile.TemporaryDirectory() as tmp:
    for i, row in enumerate(rows):
        video, _ = load_video(args.data, row["FileName"])
        img = Path(tmp) / "frame.png"
        cv2.imwrite(str(img), video[int(rng.integers(len(video)))])
        for ef in args.efs:
            common = ["--image", str(img), "--ef", f"{ef:g}", "--weights", args.weights, "--seed", str(i), "--no-check"]
            run(["generate", *common, "--out", f"{tmp}/loop.mp4"])
            run(["generate", *common, "--out", f"{tmp}/full.mp4", "--full-clip"])
            read = {k: json.loads(run(["ef", "--video", f"{tmp}/{f}.mp4", "--weights", args.reader, "--json",
                                       "--method", "regressor", "--no-check"]))
                    for k, f in (("loop", "loop"), ("full", "full"))}
            vals = [read["loop"]["regressor"]["ef"], zero_padded(f"{tmp}/loop.mp4"), read["full"]["regressor"]["ef"]]
            for k, v in zip(err, vals):
                err[k].append(v - ef)
            print(f"{row['FileName']} asked {ef:g}: loop {read['loop']['frames']} frames "
                  f"(repeated {read['loop']['regressor']['repeated_loop']}) {vals[0]:.1f} | zero-padded {vals[1]:.1f} | "
                  f"whole clip {vals[2]:.1f}", flush=True)
for k, e in err.items():
    e = np.asarray(e)
    print(f"{k:>32}: mean error {e.mean():+.2f}, mean |error| {np.abs(e).mean():.2f} (n {len(e)})")
