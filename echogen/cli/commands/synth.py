"""`python -m echogen synth --frames DATA --n N --ef balanced --out DIR`: a synthetic EchoNet-format dataset.

Single process, or `torchrun --nproc_per_node=N -m echogen -- synth ...` (the `--` keeps torchrun's own
argparse from reading synth's flags: it rejects `--n` as an ambiguous abbreviation of `--nnodes` etc.; each rank makes every N-th item and
writes OUT/FileList.rank{r}.csv; rank 0 merges them into OUT/FileList.csv after a barrier; `--merge` redoes
only the merge). Resumable: items already in a rank file are skipped. The logic is echogen.data.synth.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from echogen.cli.main import UserError, add_speed_arguments, apply_speed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", help="conditioning frames: an EchoNet-format folder (its --split videos) or a "
                                    "folder of PNG/JPEG/DICOM/clips (or one file)")
    p.add_argument("--split", default="TRAIN", help="split of an EchoNet-format --frames folder (default TRAIN)")
    p.add_argument("--n", type=int, default=0, help="number of videos to generate (before filtering)")
    p.add_argument("--ef", default="balanced",
                   help="target EFs: uniform:LO,HI | balanced (equal counts per 10-point bin, 10-90 %%) | FILE.csv "
                        "(its EF or TargetEF column, in order) (default balanced)")
    p.add_argument("--out", required=True, help="output folder (EchoNet-Dynamic format)")
    p.add_argument("--samples-per-frame", type=int, default=1, help="videos per conditioning frame (default 1)")
    p.add_argument("--filter-tolerance", type=float, default=5.0,
                   help="keep a video only when the regressor reads its EF within this many points of the target "
                        "(default 5; negative = no filter)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None, help="weights bundle folder (default assets/weights/demo)")
    p.add_argument("--preset", default=None, help="expected preset of the weights")
    p.add_argument("--random-init", action="store_true", help="untrained networks (testing only)")
    p.add_argument("--regressor", default=None,
                   help="EF regressor for the filter and the privacy features (default: the bundle's)")
    p.add_argument("--steps", default=None, help="sampler steps: N for every stage, or base=N,spatial=M")
    p.add_argument("--guidance", default=None, help="CFG weight: W for every stage, or base=W,...")
    p.add_argument("--sampler", default=None, help="heun | euler | dpmpp_2m, for every stage or base=...")
    p.add_argument("--split-out", default="TRAIN", help="Split column of the synthetic rows (default TRAIN)")
    p.add_argument("--prefix", default="SY", help="FileName prefix (default SY: SY<seed>X<index>)")
    p.add_argument("--no-privacy", action="store_true", help="skip the nearest-training-video check")
    p.add_argument("--privacy-ref", default=None,
                   help="reference (training) videos for the privacy check: an EchoNet folder (its --split) or a "
                        "folder of files (default: --frames)")
    p.add_argument("--privacy-max", type=int, default=0, help="use at most this many reference videos (0 = all)")
    p.add_argument("--copy-ssim", type=float, default=0.9,
                   help="NearCopy when the nearest training frame's SSIM is >= this (default 0.9)")
    p.add_argument("--copy-feat", type=float, default=0.0,
                   help="also NearCopy when the regressor-feature distance is <= this (default 0: off)")
    p.add_argument("--drop-near-copies", action="store_true", help="reject videos flagged NearCopy")
    p.add_argument("--merge", action="store_true", help="only (re)write FileList.csv from the rank files")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = torch's default)")
    p.add_argument("--overlap", choices=["auto", "on", "off"], default="auto",
                   help="read EF, check privacy and write each video in a worker thread while the next one samples "
                        "(auto: on with a GPU, off on the CPU, where both would share the same cores)")
    add_speed_arguments(p)


def _print_summary(out: Path, counts: dict, rows_total: list, seconds: float, made: int, tol) -> None:
    from echogen.data.synth import ef_bins_text, read_rows, summary_text

    print(summary_text(counts, seconds, made, tol), flush=True)
    kept = read_rows(out / "FileList.csv")
    if kept:
        print(f"  kept EFs by bin: {ef_bins_text(kept)}")
        flagged = sum(1 for r in kept if r.get("NearCopy") == "1")
        if any(r.get("NearestSSIM") for r in kept):
            print(f"  near-copies among kept: {flagged}")
    rej = read_rows(out / "Rejected.csv")
    for r in rej[:20]:
        print(f"  rejected {r['FileName']}: target {r['TargetEF']}, read {r['ReadEF'] or '-'}, {r['Reason']}")
    if len(rej) > 20:
        print(f"  ... {len(rej) - 20} more in {out / 'Rejected.csv'}")
    print(f"wrote {out / 'FileList.csv'}")


def main(args) -> int:
    import torch

    from echogen import distributed
    from echogen.data import synth
    from echogen.diffusion.stage import parse_per_stage

    out = Path(args.out)
    tol = args.filter_tolerance if args.filter_tolerance >= 0 else None
    if args.merge:
        if not any(out.glob("FileList.rank*.csv")):
            raise UserError(f"--merge: no FileList.rank*.csv in {out}")
        counts = synth.merge(out)
        _print_summary(out, counts, [], 0, 0, tol)
        return 0
    if not args.frames or args.n < 1:
        raise UserError("give --frames DATA and --n N (or --merge)")
    if args.threads:
        torch.set_num_threads(args.threads)
    d = distributed.setup(args.device)
    try:
        return _run(args, d, out, tol, synth, parse_per_stage)
    finally:
        distributed.cleanup(d)


def _run(args, d, out, tol, synth, parse_per_stage) -> int:
    import torch

    from echogen import distributed
    from echogen.cli.commands.generate import load_cascade

    sources = synth.list_sources(args.frames, args.split)
    plan = synth.make_plan(sources, args.n, args.ef, args.seed, args.samples_per_frame, args.prefix)
    out.mkdir(parents=True, exist_ok=True)
    settings_file = out / "synth.json"
    cascade = apply_speed(load_cascade(args.weights, args.preset, d.device, args.random_init), args)
    names = cascade.config.stage_names
    settings = synth.SynthSettings(
        tolerance=tol, drop_near_copies=args.drop_near_copies, ssim_threshold=args.copy_ssim,
        feat_threshold=args.copy_feat, split_out=args.split_out.upper(),
        steps=parse_per_stage(args.steps, names, int, "steps"),
        guidance=parse_per_stage(args.guidance, names, float, "guidance"),
        sampler=parse_per_stage(args.sampler, names, str, "sampler"))
    recipe = {"frames": str(args.frames), "split": args.split, "n": args.n, "ef": args.ef, "seed": args.seed,
              "samples_per_frame": args.samples_per_frame, "weights": cascade.source, "steps": args.steps,
              "guidance": args.guidance, "sampler": args.sampler, "filter_tolerance": tol,
              "prefix": args.prefix}
    if d.main:
        if settings_file.is_file():
            old = json.loads(settings_file.read_text())
            diff = {k: (old.get(k), v) for k, v in recipe.items() if k != "n" and old.get(k) != v}
            if diff:
                raise UserError(f"{out} was made with other settings ({diff}); use a new --out")
        settings_file.write_text(json.dumps(recipe, indent=1))
    regressor = None
    from echogen.nets.regressor import load_regressor
    from echogen.weights.bundle import WeightsError
    reg_src = args.regressor or (None if args.random_init else (args.weights or _default_bundle()))
    if reg_src:
        try:
            regressor = load_regressor(reg_src, d.device)
        except WeightsError as e:
            if args.regressor:
                raise
            if d.main:
                print(f"warning: no EF filter ({e})", flush=True)
    elif d.main and tol is not None:
        print("warning: no regressor (pass --regressor): no EF filter, ReadEF left blank", flush=True)
    privacy = None
    if not args.no_privacy:
        ref = args.privacy_ref or args.frames
        ref_sources = synth.list_sources(ref, args.split)
        if args.privacy_max:
            ref_sources = ref_sources[:args.privacy_max]
        cache = out / "privacy_index.pt"
        if d.main and not cache.is_file():
            bar = tqdm(total=len(ref_sources), desc="privacy index", dynamic_ncols=True)
            idx = synth.build_privacy_index(ref_sources, regressor, progress=lambda k, n: bar.update(1))
            bar.close()
            idx.save(cache)
        distributed.barrier(d)
        privacy = synth.PrivacyIndex.load(cache)
        if privacy.names != [s.name for s in ref_sources]:
            raise UserError(f"{cache} was built from other reference videos: delete it or use a new --out")
    done = synth.done_rows(out)
    mine = [it for it in synth.shard(plan, d.rank, d.world)
            if not (it.name in done and ((out / "Videos" / (it.name + ".avi")).is_file()
                                         or (out / "Rejected" / (it.name + ".avi")).is_file()))]
    skipped = len(synth.shard(plan, d.rank, d.world)) - len(mine)
    overlap = args.overlap == "on" or (args.overlap == "auto" and d.device.type == "cuda")
    if d.main:
        print(f"synth: {args.n} items from {len(sources)} source frames, {d.world} rank(s); "
              f"this rank: {len(mine)} to make, {skipped} already made; weights {cascade.source} on {d.device}"
              + (" (EF read, privacy check and AVI write overlap the next sample)" if overlap else ""),
              flush=True)
    frames_cache: dict = {}
    t0 = time.perf_counter()
    made = kept = 0
    bar = tqdm(total=len(mine), desc=f"synth r{d.rank}", position=d.rank, dynamic_ncols=True,
               disable=len(mine) == 0)
    def frame_of(it):
        key = (it.source.name, it.source.frame)
        if key not in frames_cache:
            frames_cache.clear()
            frames_cache[key] = synth.load_source_frame(it.source, 112)
        return frames_cache[key]

    for row in synth.make_items(cascade, mine, frame_of, regressor, settings, out, privacy, d.rank, overlap):
        synth.append_row(synth.rank_file(out, d.rank), row)
        made += 1
        kept += int(row["Accepted"])
        bar.update(1)   # kept so far on this rank; the last item's target / read EF
        bar.set_postfix(kept=f"{kept}/{made}", ef=f"{row['TargetEF']}/{row['ReadEF'] or '-'}")
    bar.close()
    seconds = time.perf_counter() - t0
    rate = torch.tensor([float(made), seconds], dtype=torch.float64)
    if d.enabled:
        import torch.distributed as tdist
        all_rates = [torch.zeros_like(rate) for _ in range(d.world)]
        tdist.all_gather(all_rates, rate)
        made_all = int(sum(float(r[0]) for r in all_rates))
        seconds = max(float(r[1]) for r in all_rates)
    else:
        made_all = made
    distributed.barrier(d)
    if d.main:
        counts = synth.merge(out)
        _print_summary(out, counts, [], seconds, made_all, tol)
    distributed.barrier(d)
    return 0


def _default_bundle() -> str:
    from echogen.diffusion.cascade import DEFAULT_WEIGHTS
    return str(DEFAULT_WEIGHTS)
