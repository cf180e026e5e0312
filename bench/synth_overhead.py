"""Synth's per-video cost against the cascade's own sampling (issue 25: "within 10 % of the cascade's speed").

    python bench/synth_overhead.py --weights assets/weights/demo-fast --frames assets/examples --n 8 \
        [--device cuda] [--json out.json]

Per video: (a) `cascade.sample` alone, (b) `synth.make_item` = the same sample + EF read + privacy check + AVI write,
both with the settings `echogen synth` uses; one untimed warm-up video first; CUDA synchronised around each timing.
(c) `synth.make_items(..., overlap=True)`, what `echogen synth` runs on a GPU: the EF read, privacy check and AVI write
of one video in a worker thread while the next samples; the whole run's time over its videos (after the warm-up).
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from echogen.cli.commands.generate import load_cascade
from echogen.data import synth
from echogen.device import pick_device
from echogen.nets.regressor import load_regressor


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="assets/weights/demo-fast")
    p.add_argument("--frames", default="assets/examples")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    cascade = load_cascade(a.weights, None, device, False).set_speed("auto", None)   # as synth's defaults
    regressor = load_regressor(a.weights, device)
    sources = synth.list_sources(a.frames, "TRAIN")
    plan = synth.make_plan(sources, a.n + 1, "uniform:10,90", 0, 1, "SY")
    index = synth.build_privacy_index(sources, regressor)
    settings = synth.SynthSettings(tolerance=5.0, drop_near_copies=False, ssim_threshold=0.9, feat_threshold=0.0,
                                   split_out="TRAIN", steps=None, guidance=None, sampler=None)
    sample_s, item_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, it in enumerate(plan):
            frame = synth.load_source_frame(it.source, 112)
            _sync(device)
            t0 = time.perf_counter()
            cascade.sample(frame, it.target_ef, seed=it.seed)
            _sync(device)
            t1 = time.perf_counter()
            synth.make_item(cascade, it, frame, regressor, settings, Path(tmp), index)
            _sync(device)
            t2 = time.perf_counter()
            if k:                                                  # the first one warms up
                sample_s.append(t1 - t0)
                item_s.append(t2 - t1)
        frames = {it.name: synth.load_source_frame(it.source, 112) for it in plan[1:]}
        _sync(device)
        t0 = time.perf_counter()
        for _ in synth.make_items(cascade, plan[1:], lambda it: frames[it.name], regressor, settings,
                                  Path(tmp) / "overlap", index, overlap=True):
            pass
        _sync(device)
        overlapped = (time.perf_counter() - t0) / len(plan[1:])
    s, m = statistics.median(sample_s), statistics.median(item_s)
    res = {"device": str(device), "weights": a.weights, "videos": len(sample_s), "reference_videos": len(sources),
           "cascade_s_per_video": round(s, 4), "synth_item_s_per_video": round(m, 4),
           "overhead_pct": round(100 * (m - s) / s, 1), "synth_videos_per_min": round(60 / m, 1),
           "overlapped_s_per_video": round(overlapped, 4), "overlapped_overhead_pct": round(100 * (overlapped - s) / s, 1),
           "overlapped_videos_per_min": round(60 / overlapped, 1),
           "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name() if str(device).startswith("cuda") else None}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
