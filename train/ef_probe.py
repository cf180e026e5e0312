"""Shared by train/ef_by_stage.py and train/sampling_sweep.py: generate loops from the frame 0 of the
first TEST videos at several EFs and read their EF back with the bundle's regressor."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402

from echogen.diffusion.cascade import Cascade  # noqa: E402
from echogen.data.echonet import load_video, read_filelist  # noqa: E402
from echogen.nets.regressor import load_regressor, predict_ef  # noqa: E402


def probe_parser(doc: str, videos: int, efs: list) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/phantom3k")
    p.add_argument("--weights", default="assets/weights/demo")
    p.add_argument("--videos", type=int, default=videos, help="first N TEST videos (their frame 0)")
    p.add_argument("--efs", type=float, nargs="+", default=efs)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    return p


def load_probe(args):
    """-> (cascade, regressor, TEST rows) for the parsed probe_parser arguments."""
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for r in read_filelist(args.data) if r["Split"] == "TEST"][: args.videos]
    return Cascade.load(args.weights), load_regressor(args.weights), rows


def first_frame(data, row) -> np.ndarray:
    """Frame 0 of a dataset video, (H, W) in [0, 1]."""
    return load_video(data, row["FileName"])[0][0].astype(np.float32) / 255.0


def read_efs(cascade, regressor, frame, efs, seed: int, **sample_kwargs) -> list:
    """Generate one loop per EF in efs from frame; the EF the regressor reads from each."""
    out = cascade.sample(frame, list(efs), seed=seed, **sample_kwargs)[-1]
    return [predict_ef(*regressor, out.video[i, 0], out.fps)[0] for i in range(len(efs))]
