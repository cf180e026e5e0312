"""`python -m echogen bench [--preset P] [--device D] [--json OUT] [--repeats N]`: time each stage.

Per stage: parameters, one guided-denoiser forward (median after warm-up; batch x2 when CFG is on),
NFE at the default sampler, estimated seconds per video (forward x NFE), peak memory. Presets small
enough (demo, tiny) also get a measured end-to-end `Cascade.sample`. Weights are freshly initialised:
the time of a forward does not depend on their values.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from echogen.cli.main import UserError, add_speed_arguments

E2E_DEFAULT = {"tiny", "demo"}  # presets whose whole cascade samples in seconds on a CPU


def add_arguments(p) -> None:
    p.add_argument("--preset", default="demo", help="demo | tiny | 1SCM | 2SCM | 4SCM (default demo)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA when present)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per stage (median reported; default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards before timing (default 1)")
    p.add_argument("--stages", default=None, help="comma-separated stage names to time (default: all)")
    p.add_argument("--frames", type=int, default=None,
                   help="override every timed stage's frame count (full-size paper stages are slow on a CPU)")
    p.add_argument("--batch", type=int, default=1, help="videos per sample (default 1; CFG doubles the forward batch)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    e2e = p.add_mutually_exclusive_group()
    e2e.add_argument("--e2e", dest="e2e", action="store_true", default=None,
                     help="also time a whole Cascade.sample (default on for demo/tiny without overrides)")
    e2e.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the end-to-end sample")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    add_speed_arguments(p)


def main(args) -> int:
    import torch

    from echogen.eval import bench
    from echogen.config import get_preset
    from echogen.device import autocast, pick_device, resolve_precision

    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        raise UserError("--repeats and --batch must be >= 1 and --warmup >= 0")
    if args.compile and args.warmup < 1:
        raise UserError("--compile needs --warmup >= 1: the first forward compiles the network")
    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames must be >= 1, got {args.frames}")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise UserError(str(e)) from e
    autocast(device, args.precision)  # fp16 on the CPU: a clear error before any timing
    stages = None
    if args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        for s in stages:
            config.stage(s)  # KeyError naming the preset's stages
    info = bench.machine_info(device)
    print(f"bench: preset {config.name} on {info['device']} ({info.get('gpu', info['cpu'])}), "
          f"{info['threads']} threads, load {info.get('loadavg')}, torch {info['torch']}, {info['date']}",
          file=sys.stderr)
    rows = []
    for st in config.stages:
        if stages is not None and st.name not in stages:
            continue
        print(f"  timing {st.name} ...", file=sys.stderr, flush=True)
        rows += bench.bench_cascade(config, device, [st.name], args.batch, args.frames, args.repeats,
                                    args.warmup, memory=not args.no_memory, precision=args.precision,
                                    compile_mode=args.compile)
    partial = stages is not None or args.frames is not None
    do_e2e = args.e2e if args.e2e is not None else (config.name in E2E_DEFAULT and not partial)
    e2e = None
    if do_e2e:
        print("  end-to-end Cascade.sample ...", file=sys.stderr, flush=True)
        e2e = bench.bench_end_to_end(config, device, args.batch, repeats=max(1, min(3, args.repeats)),
                                     precision=args.precision, compile_mode=args.compile)
    info["loadavg_after"] = bench.machine_info(device).get("loadavg")

    print(f"preset {config.name}, {args.batch} video(s), device {info['device']}, threads {info['threads']}, "
          f"precision {resolve_precision(device, args.precision)}, "
          f"{'torch.compile ' + args.compile if args.compile else 'eager'}, "
          f"load {info.get('loadavg')} -> {info['loadavg_after']}, {info['date']}")
    if partial:
        print("measured: " + ", ".join(f"{r.stage} at {r.frames} frames" for r in rows)
              + " (partial: the total is for these stages only)")
    print(bench.markdown_table(rows))
    if e2e:
        print(f"\nmeasured Cascade.sample: {e2e['seconds']:.2f} s for {e2e['batch']} video(s) "
              f"(median of {len(e2e['seconds_all'])}; per stage {e2e['per_stage_s']})")
    if args.json:
        out = {"preset": config.name, "machine": info, "command": " ".join(sys.argv),
               "precision": resolve_precision(device, args.precision), "compile": args.compile,
               "stages": bench.rows_as_dicts(rows), "est_video_s": sum(r.est_video_s for r in rows),
               "end_to_end": e2e, "partial": partial}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
