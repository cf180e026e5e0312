"""`python -m echogen phantom --out DIR --videos N`: synthetic EchoNet-format dataset with known EF."""
from __future__ import annotations

import os
import sys

from echogen.cli.main import UserError


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output folder (FileList.csv, VolumeTracings.csv, Videos/)")
    p.add_argument("--videos", type=int, default=200, help="number of videos (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="parallel processes (default: up to 4 CPU cores)")
    p.add_argument("--sim", choices=["v2", "v1"], default="v2",
                   help="simulator: v2 (default: shape model, regional wall motion, beam-domain image "
                        "formation, 30-80 fps) or v1 (the original phantom, 50 fps)")
    p.add_argument("--masks", action="store_true",
                   help="also write Masks/NAME.npz, the LV cavity mask of every frame and the LV "
                        "volume curve (echogen.data.phantom.load_masks reads them)")
    p.add_argument("--split", choices=["TRAIN", "VAL", "TEST"], default=None,
                   help="write only this split of the --videos set (the same videos and names as the whole set; "
                        "e.g. a held-out TEST set without rendering its TRAIN videos)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def main(args) -> int:
    from echogen.data.phantom import write_phantom

    if args.videos < 1:
        raise UserError(f"--videos must be at least 1, got {args.videos}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")

    def progress(k, n):
        if not args.quiet and (k == n or k % max(1, n // 20) == 0):
            print(f"\r{k}/{n} videos", end="\n" if k == n else "", file=sys.stderr, flush=True)

    s = write_phantom(args.out, args.videos, seed=args.seed, workers=args.workers, progress=progress,
                      sim=args.sim, masks=args.masks, only_split=args.split)
    part = f" ({args.split} of a {args.videos}-video set)" if args.split else ""
    print(f"wrote {s['videos']} {args.sim} videos{part} to {args.out} in {s['seconds']:.1f} s "
          f"(EF {s['ef_min']:.1f}-{s['ef_max']:.1f}, mean {s['ef_mean']:.1f}; "
          f"TRAIN/VAL/TEST {s['splits']['TRAIN']}/{s['splits']['VAL']}/{s['splits']['TEST']})")
    return 0
