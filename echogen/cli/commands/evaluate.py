"""`python -m echogen evaluate --data DIR --weights DIR --split TEST`: the paper's metrics.

`--lpips / --fid / --fvd FILE` (networks converted by `python -m echogen convert`, docs/METRICS.md)
add LPIPS, FID and FVD to the factual task."""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from echogen.cli.main import UserError, add_speed_arguments, apply_speed
from echogen.cli.commands.generate import load_cascade
from echogen.diffusion.stage import parse_per_stage


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="EchoNet-format dataset root")
    p.add_argument("--weights", default=None, help="weights bundle (default assets/weights/demo)")
    p.add_argument("--regressor", default=None, help="EF regressor .safetensors or bundle (default: the weights bundle's)")
    p.add_argument("--tracer", default=None,
                   help="LV tracer .safetensors or bundle (default: the weights bundle's, when it has one): EF by "
                        "LV tracing is reported beside the regressor's")
    p.add_argument("--no-tracing", action="store_true", help="regressor readings only")
    p.add_argument("--preset", default=None)
    p.add_argument("--split", default="TEST")
    p.add_argument("--n", type=int, default=100, help="number of videos (first N of the split)")
    p.add_argument("--samples", type=int, default=3, help="K samples per video (best-of-K reported beside single)")
    p.add_argument("--tasks", default="counterfactual,factual")
    p.add_argument("--steps", default=None, help="N for every stage, or base=N,spatial=M")
    p.add_argument("--guidance", default=None)
    p.add_argument("--sampler", default=None)
    p.add_argument("--sigma-start", default=None, help="SR stages' SDEdit start sigma (see generate --help)")
    p.add_argument("--stages", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-calibration", action="store_true",
                   help="condition on the target EF as given (the paper's protocol), not through the bundle's EF "
                        "calibration (echogen.ef.EFCalibration)")
    p.add_argument("--out", default=None, help="output folder (default runs/eval-<time>)")
    p.add_argument("--device", default=None)
    p.add_argument("--random-init", action="store_true", help="untrained cascade (testing only)")
    p.add_argument("--lpips", default=None, metavar="FILE",
                   help="lpips_alex.safetensors (or lpips_vgg): add LPIPS to the factual task")
    p.add_argument("--fid", default=None, metavar="FILE",
                   help="inception_fid.safetensors: add FID over all frames to the factual task")
    p.add_argument("--fvd", default=None, metavar="FILE",
                   help="i3d.safetensors: add FVD over clips to the factual task (needs --n >= 2)")
    add_speed_arguments(p)


def main(args) -> int:
    from echogen.device import pick_device
    from echogen.eval.evaluate import EvalSettings, evaluate, markdown_table
    from echogen.eval.perceptual import load_perceptual
    from echogen.nets.regressor import load_regressor

    tasks = tuple(t.strip() for t in args.tasks.split(","))
    wanted = {m: getattr(args, m) for m in ("lpips", "fid", "fvd") if getattr(args, m)}
    if wanted and "factual" not in tasks:
        raise UserError(f"--{' --'.join(wanted)} score(s) the factual task; add factual to --tasks")
    if args.fvd and args.n < 2:
        raise UserError("--fvd compares sets of clips: it needs --n 2 or more")
    device = pick_device(args.device)
    perceptual = {m: load_perceptual(f, m, device) for m, f in wanted.items()}   # fail before generating
    cascade = apply_speed(load_cascade(args.weights, args.preset, device, args.random_init), args)
    reg_src = args.regressor or args.weights or str(Path(cascade.source))
    regressor = load_regressor(reg_src, device)
    from echogen.eval.readout import model_provenance
    from echogen.nets.tracer import has_tracer, load_tracer, provenance
    tr_src = args.tracer or args.weights or str(Path(cascade.source))
    tracer = None
    if not args.no_tracing and (args.tracer or has_tracer(tr_src)):
        tracer = load_tracer(tr_src, device)[0]
    names = cascade.config.stage_names
    kw = dict(steps=parse_per_stage(args.steps, names, int, "steps"),
              guidance=parse_per_stage(args.guidance, names, float, "guidance"),
              sampler=parse_per_stage(args.sampler, names, str, "sampler"),
              sigma_start=parse_per_stage(args.sigma_start, names, float, "sigma-start"))
    if args.no_calibration:
        kw["calibrate"] = False
    if args.stages:
        kw["stages"] = [s.strip() for s in args.stages.split(",")]
    settings = EvalSettings(split=args.split, n=args.n, samples=args.samples, seed=args.seed,
                            tasks=tasks)
    out = Path(args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    bar = tqdm(total=args.n, desc="evaluate", dynamic_ncols=True)

    def progress(i, n, rec):
        bar.total = n
        bar.update(1)

    summary = evaluate(cascade, regressor, args.data, settings, out, kw, progress, perceptual, tracer=tracer)
    bar.close()
    print(f"\n{cascade.config.name} on {args.data} {args.split}, {len(open(out / 'per_video.csv').readlines()) - 1} "
          f"videos, {args.samples} samples each, weights {cascade.source}\n")
    print(markdown_table(summary))
    print(f"\nEF read by: {model_provenance(reg_src, 'regressor')}" if Path(reg_src).exists() else "")
    if tracer is not None:
        print(f"and by LV tracing (method of disks): {provenance(tracer)}")
    print(f"\nwrote {out}/summary.md, summary.json, per_video.csv")
    return 0
