"""`python -m echogen pool`: build a case pool for the EF trainer (or, with --review, a blinded
real-vs-generated review set) ahead of a session. See docs/TEACHING.md."""
from __future__ import annotations

import argparse
from pathlib import Path

from echogen.cli.main import UserError, add_speed_arguments, apply_speed
from echogen.ef import parse_efs

FRAME_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ".dic", ".npy", ".avi",
              ".mp4", ".mov", ".mkv", ".webm", ".gif"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="weights bundle folder (default assets/weights/demo); its "
                   "regressor, if any, reads every case's EF")
    p.add_argument("--frames", nargs="+", default=[], help="source frames: files (image, DICOM, clip, .npy) or "
                   "folders of them; each gives one anatomy")
    p.add_argument("--efs", default="20,35,50,65,80",
                   help="EFs (%%) to generate per frame, comma-separated (default 20,35,50,65,80)")
    p.add_argument("--per-frame", type=int, default=1, help="repeats (different seeds) per frame and EF (default 1)")
    p.add_argument("--real", default=None, help="EchoNet-format dataset (e.g. EchoNet-Dynamic, or "
                   "`python -m echogen phantom`) whose clips with known EF join the pool")
    p.add_argument("--real-split", default="TEST", help="split of --real to draw from (TRAIN/VAL/TEST/ALL)")
    p.add_argument("--real-n", type=int, default=0, help="number of real clips (pool) or of real/generated "
                   "pairs (--review)")
    p.add_argument("--review", action="store_true", help="build a blinded review set from --real instead: each "
                   "real clip plus a generation from its own frame at its own EF")
    p.add_argument("--key", default=None, help="--review: where to write the key (default OUT.key.json, "
                   "beside OUT; never inside it)")
    p.add_argument("--real-clips", nargs="+", default=[], help="--review: real clips / DICOMs (files or folders) "
                   "instead of --real; their EF is what the bundle's regressor reads")
    p.add_argument("--tolerance", type=float, default=7.0, help="quality gate: a generated case is kept only if "
                   "every EF reader of the bundle (regressor; LV tracer when present) reads its loop within this "
                   "many EF points of the requested EF (default 7); the case's EF is then the verified reading")
    p.add_argument("--no-gate", action="store_true", help="keep every case at its requested EF, unverified (for "
                   "weights without an EF reader, e.g. --random-init tests)")
    p.add_argument("--allow-non-a4c", action="store_true", help="build from source frames that do not look "
                   "like apical-4-chamber echoes (refused by default: a photo, a non-cardiac image, no sector, "
                   "or no LV found by the bundle's tracer)")
    p.add_argument("--full-clips", action="store_true", help="keep whole generated clips instead of one heart "
                   "cycle from end-diastole to end-diastole (loops then jump when they repeat)")
    p.add_argument("--out", required=True, help="new output folder")
    p.add_argument("--steps", default=None, help="sampler steps: N for every stage, or base=N,spatial=M")
    p.add_argument("--seed", type=int, default=0, help="seed of the first generation; the same seed, frames and "
                   "settings give the same pool (default 0)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    p.add_argument("--random-init", action="store_true", help="untrained networks of --preset (tests only: noise)")
    p.add_argument("--preset", default=None, help="expected preset of the weights")
    add_speed_arguments(p)


def expand_frames(items) -> list[Path]:
    out = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and (f.suffix.lower() in FRAME_EXTS or f.suffix == ""))
            if not files:
                raise UserError(f"{p}: no frame files (images, DICOM, clips, .npy) in this folder")
            out += files
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p}: not found")
    return out


def main(args) -> int:
    from tqdm import tqdm

    from echogen.cli.commands.generate import load_cascade
    from echogen.diffusion.stage import parse_per_stage
    from echogen.device import pick_device
    from echogen.weights.bundle import WeightsError

    out = Path(args.out)
    if (out / "pool.json").exists() or (out / "review.json").exists():
        raise UserError(f"{out} already holds a pool or review set; choose a new folder")
    if args.per_frame < 1:
        raise UserError(f"--per-frame must be >= 1, got {args.per_frame}")
    if args.real_n < 0:
        raise UserError(f"--real-n must be >= 0, got {args.real_n}")
    if args.real and not (Path(args.real) / "FileList.csv").is_file():
        raise UserError(f"--real {args.real}: no FileList.csv there (not an EchoNet-format dataset)")
    if args.review and not ((args.real and args.real_n > 0) or args.real_clips):
        raise UserError("--review needs --real DATA and --real-n N > 0, or --real-clips FILES")
    if not args.review and not args.frames:
        raise UserError("give --frames (files or folders) to generate from")
    device = pick_device(args.device)
    cascade = apply_speed(load_cascade(args.weights, args.preset, device, args.random_init), args)
    steps = parse_per_stage(args.steps, cascade.config.stage_names, int, "steps")
    kw = {"steps": steps} if steps else {}
    bar = tqdm(total=1000, unit="‰", bar_format="{l_bar}{bar}| {desc}")

    def progress(frac, msg):
        bar.n = int(frac * 1000)
        bar.set_description_str(msg, refresh=True)

    try:
        if args.review:
            from echogen.teaching.review import build_review_set

            uploads = expand_frames(args.real_clips) if args.real_clips else None
            if uploads:
                from echogen.teaching.pool import NonA4CFrames, check_source_frames
                try:
                    check_source_frames(uploads, None if args.random_init else (args.weights or cascade.source),
                                        device, labels=[str(f) for f in uploads], allow=args.allow_non_a4c)
                except NonA4CFrames as e:
                    raise UserError(f"{e} (--allow-non-a4c)") from None
            regressor = None
            if uploads:
                from echogen.nets.regressor import load_regressor
                regressor = load_regressor(Path(args.weights) if args.weights else Path(cascade.source), device)
            rs = build_review_set(cascade, args.real, args.real_split, args.real_n or len(uploads or []), out,
                                  seed=args.seed, key_path=args.key, progress=progress, sample_kwargs=kw,
                                  uploads=uploads, regressor=regressor, loops=not args.full_clips)
            bar.close()
            from echogen.teaching.review import default_key_path
            print(f"review set {rs.id}: {len(rs.cases)} clips ({rs.meta['n_real']} real, {rs.meta['n_generated']} "
                  f"generated) in {out}; key: {args.key or default_key_path(out)} (keep it from the raters)")
            return 0
        from echogen.nets.regressor import load_regressor
        from echogen.teaching.pool import build_pool

        frames = expand_frames(args.frames)
        efs = parse_efs(args.efs, what="--efs")
        from echogen.teaching.pool import NonA4CFrames, check_source_frames
        try:
            checks = check_source_frames(frames, None if args.random_init else (args.weights or cascade.source),
                                         device, labels=[str(f) for f in frames], allow=args.allow_non_a4c)
        except NonA4CFrames as e:
            raise UserError(f"{e} (--allow-non-a4c)") from None
        for f, c in zip(frames, checks):
            if not c["ok"]:
                print(f"note: {f} does not look like an apical-4-chamber echo (score {c['score']:.2f}); "
                      "kept (--allow-non-a4c)")
        try:
            regressor = load_regressor(Path(args.weights) if args.weights else Path(cascade.source), device)
        except (WeightsError, FileNotFoundError) as e:
            print(f"note: no EF regressor ({e}); cases get no regressor reading")
            regressor = None
        real = {"root": args.real, "split": args.real_split, "n": args.real_n} if args.real and args.real_n else None
        pool = build_pool(cascade, regressor, frames, efs, per_frame=args.per_frame, out_dir=out, seed=args.seed,
                          progress=progress, real_clips=real, sample_kwargs=kw, loops=not args.full_clips,
                          tolerance=None if args.no_gate else args.tolerance)
    finally:
        bar.close()
    n_real = sum(c["kind"] == "real" for c in pool.cases)
    from echogen.teaching.pool import rejected_summary
    from echogen.teaching.summary import plural
    r = rejected_summary(pool)
    if not args.no_gate:
        print(f"quality gate (±{args.tolerance:g} EF points, {', '.join(pool.meta['readers'])}): {r['text']}")
    shape = (f"clips of {pool.spec.frames} frames" if args.full_clips else
             f"one-cycle loops cut from clips of {pool.spec.frames} frames")
    print(f"pool {pool.id}: {plural(len(pool.cases) - n_real, 'generated case')} + {n_real} real "
          f"({shape}, {pool.spec.size}x{pool.spec.size}, {pool.spec.fps:g} fps) in {out}")
    return 0
