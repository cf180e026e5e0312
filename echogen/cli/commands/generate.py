"""`python -m echogen generate --image IN --ef 35 --out OUT`: one frame + an EF -> an echo loop."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from echogen.cli.main import UserError, add_input_limit_arguments, add_speed_arguments, input_limits, apply_speed
from echogen.diffusion.stage import parse_per_stage
from echogen.ef import check_ef


def load_cascade(weights: str | None, preset: str | None, device, random_init: bool):
    from echogen.diffusion.cascade import DEFAULT_WEIGHTS, Cascade
    from echogen.weights.bundle import MANIFEST, WeightsError

    if random_init:
        return Cascade.random(preset or "demo", device)
    bundle = Path(weights) if weights else DEFAULT_WEIGHTS
    if not (bundle / MANIFEST).is_file():
        raise WeightsError(f"no trained weights at {bundle} (a bundle folder with {MANIFEST}). Pass --weights DIR, "
                           f"or --random-init to run untrained networks (noise; for testing only)")
    return Cascade.load(bundle, device, preset=preset)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="conditioning frame: PNG/JPEG/BMP/TIFF, DICOM, or a clip")
    p.add_argument("--frame", type=int, default=0, help="frame index for multi-frame inputs (default 0)")
    p.add_argument("--ef", type=float, required=True, help="target ejection fraction in %% (e.g. 35)")
    p.add_argument("--out", required=True, help="output .mp4 (H.264), .gif or .npy")
    p.add_argument("--preset", default=None, help="expected preset of the weights (demo, 1SCM, 2SCM, 4SCM)")
    p.add_argument("--weights", default=None, help="weights bundle folder (default assets/weights/demo)")
    p.add_argument("--random-init", action="store_true", help="untrained networks (testing only: output is noise)")
    p.add_argument("--steps", default=None, help="sampler steps: N for every stage, or base=N,spatial=M")
    p.add_argument("--guidance", default=None, help="CFG weight: W for every stage, or base=W,...")
    p.add_argument("--sampler", default=None, help="heun | euler | dpmpp_2m, for every stage or base=...,")
    p.add_argument("--sigma-start", default=None,
                   help="super-resolution stages: start sampling at this sigma from the noised upsampled "
                        "low-res video (SDEdit); S for every SR stage or spatial=S,...; 0 = from pure noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=None, help="comma-separated stages to run (others are upsampled)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    p.add_argument("--save-stages", action="store_true", help="also write every stage's output beside OUT")
    p.add_argument("--no-check", action="store_true",
                   help="skip the apical-4-chamber input check (echogen.eval.readout) that warns about unsuitable inputs")
    p.add_argument("--no-calibration", action="store_true",
                   help="condition the networks on --ef as given, not through the bundle's EF calibration")
    p.add_argument("--orientation", default="auto", choices=("auto", "as-is", "mirror"),
                   help="the loop is generated from, and written in, the standard view (as the app shows it): an "
                        "apex-down frame (the fan's apex at the bottom) turned apex-up, one shown mirrored (the LV "
                        "on the left) mirrored back: auto = when the fan's shape / the bundle's orientation network "
                        "say so (default), as-is = neither, mirror = always mirror")
    p.add_argument("--no-read", action="store_true",
                   help="do not read the generated clip's EF with the bundle's EF regressor and LV tracer")
    p.add_argument("--full-clip", action="store_true",
                   help="write every generated frame; by default OUT is a seamless loop: one heart cycle from "
                        "end-diastole to end-diastole (echogen.data.loops), so it repeats without a jump")
    add_input_limit_arguments(p)
    add_speed_arguments(p)


def main(args) -> int:
    from echogen.device import pick_device
    from echogen.data.inputs import prepare_frame
    from echogen.data.video_io import write_video

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif", ".npy"):
        raise UserError(f"--out must end in .mp4, .gif or .npy (got '{out.name}')")
    check_ef(args.ef, "--ef")
    from echogen.diffusion.cascade import check_seed
    check_seed(args.seed, "--seed")
    limits = input_limits(args)
    frame, info = prepare_frame(args.image, frame=args.frame, size=112, limits=limits)
    from echogen.data.clips import read_input
    frames, finfo = read_input(args.image, limits)     # one decode for the input check and the view, as the app's
    device = pick_device(args.device)
    cascade = apply_speed(load_cascade(args.weights, args.preset, device, args.random_init), args)
    from echogen.diffusion.cascade import DEFAULT_WEIGHTS
    from echogen.eval.readout import bundle_readers
    bundle = Path(args.weights) if args.weights else Path(DEFAULT_WEIGHTS)
    tracer, orient = bundle_readers(bundle if (bundle / "manifest.json").is_file() else None, device)
    own = tracer if Path(str(cascade.source)) == bundle else None        # the tracer of the bundle generating
    from echogen.nets.orient import frame_in_view
    frame, view = frame_in_view(frame, frames, orient if args.orientation == "auto" else None, args.orientation)
    if not args.no_check:      # the input as the generation sees it (in the view just decided)
        from echogen.eval.readout import assess_frames
        check = assess_frames(frames, float(finfo.get("fps") or 0.0), tracer, args.frame, orient, view)
        print(check.warning or f"input check: looks like an apical-4-chamber echo (score {check.score:.2f})",
              flush=True)
    from echogen.nets.orient import view_note
    if view_note(view):        # before the generation: the view it conditions on
        print(f"view: {view_note(view, then='the loop is generated and written in the standard view')}", flush=True)
    names = cascade.config.stage_names
    stages = None
    if args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        bad = [s for s in stages if s not in names]
        if bad:
            raise UserError(f"--stages: unknown stage(s) {bad} (preset '{cascade.config.name}' has {names})")
    steps = parse_per_stage(args.steps, names, int, "steps")
    guidance = parse_per_stage(args.guidance, names, float, "guidance")
    sampler = parse_per_stage(args.sampler, names, str, "sampler")
    sigma_start = parse_per_stage(args.sigma_start, names, float, "sigma-start")

    bars = {}

    def progress(stage, i, n):
        if stage not in bars:
            for b in bars.values():
                b.close()
            bars[stage] = tqdm(total=n, desc=f"{stage:>10}", leave=True, dynamic_ncols=True, disable=None)  # None:
            # no bars when stderr is not a terminal (logs)
        bars[stage].update(1)

    if args.random_init:
        print("warning: --random-init: untrained networks, the output is noise", flush=True)
    t0 = time.perf_counter()
    results = cascade.sample(frame, args.ef, stages=stages, steps=steps, guidance=guidance, sampler=sampler,
                             sigma_start=sigma_start, seed=args.seed, callback=progress,
                             calibrate=not args.no_calibration)
    total = time.perf_counter() - t0
    for b in bars.values():
        b.close()
    final = results[-1]
    video = final.video[0, 0].numpy()                     # (T, H, W) in [0, 1]
    loops = {r.name: r.video[0, 0].numpy() for r in results}
    loop_note = "every generated frame (--full-clip)"
    if not args.full_clip:
        from echogen.data.loops import stage_loops
        loops, cut = stage_loops(results, frame, tracer=_tracer_area(cascade.source, device, own))
        loop_note = (f"one heart cycle from end-diastole, frames {cut.start}-{cut.stop - 1} of {len(video)} "
                     f"({cut.method})" if cut.complete else
                     f"no whole heart cycle found, so every frame, which may jump when repeated; {cut.method}")
    video = loops[final.name]
    write_video(out, video, final.fps, loop=not args.full_clip)
    if args.save_stages:
        for r in results[:-1]:
            write_video(out.with_name(f"{out.stem}.{r.name}{out.suffix}"), loops[r.name], r.fps)
    for r in results:
        t, h, w = r.video.shape[2:]
        print(f"  {r.name:>10}: {t} x {h}x{w} @ {r.fps:g} fps, {r.seconds:.1f} s"
              f"{', ' + r.note if r.note else ''}")
    t, h, w = video.shape
    print(f"wrote {out}: {t} frames {h}x{w} at {final.fps:g} fps effective ({t / final.fps:.2f} s of heart motion), "
          f"EF {args.ef:g}%, seed {args.seed}, weights {cascade.source}, {total:.1f} s on {device}\n"
          f"  loop: {loop_note}\n  EF: {cascade.describe_conditioning(args.ef, not args.no_calibration)}")
    if not args.no_read:
        cut_loop = video if len(video) != final.video.shape[2] else None       # OUT holds a loop cut from the clip
        print(_read_line(cascade.source, device, final.video[0, 0], final.fps, args.ef, cut_loop, own,
                         as_is=view["mode"] == "as-is"), flush=True)
    return 0


def _read_line(source, device, video, fps: float, asked: float, loop=None, tracer=None, as_is=False) -> str:
    """The generated clip's EF as the app's readout states it (echogen.eval.reading.generated_ef), and, when OUT
    holds a loop cut from it, the loop's (what `ef --video OUT --method both` reads, before video compression).
    tracer: the bundle's LV tracer when already loaded (else loaded here when the bundle has one). as_is: the input
    was read as given (--orientation as-is), so is the loop: `ef` reads it so only when told (it would turn an
    apex-down loop apex-up)."""
    from echogen.eval.reading import generated_ef
    from echogen.weights.bundle import MANIFEST, read_manifest

    if not source or not (Path(source) / MANIFEST).is_file():
        return "  EF read from the clip: not read (no weights bundle with an EF reader)"
    man = read_manifest(source)
    regressor = None
    if man.get("regressor"):
        from echogen.nets.regressor import load_regressor
        regressor = load_regressor(source, device)
    if tracer is None and man.get("tracer"):
        from echogen.nets.tracer import load_tracer
        tracer = load_tracer(source, device)[0]
    if regressor is None and tracer is None:
        return f"  EF read from the clip: not read ({source} has neither an EF regressor nor an LV tracer)"
    def said(r):
        if r["ef"] is None:
            return "neither reader could read it"
        if r["regressor"] is not None and r["tracing"] is not None:
            return f"{r['ef']:.1f} % ({r['read_by']}: regressor {r['regressor']:.1f} %, tracing {r['tracing']:.1f} %)"
        other = "LV tracing" if r["tracing"] is None and tracer is not None else \
            "the EF regressor" if r["regressor"] is None and regressor is not None else ""
        return f"{r['ef']:.1f} % ({r['read_by']}" + (f"; {other} gave no EF)" if other else ")")
    r = generated_ef(regressor, tracer, video, fps)
    line = f"  EF read from the generated clip (the app's number): {said(r)}"
    if r["ef"] is not None:
        line += f"; asked {asked:g} %, difference {r['ef'] - asked:+.1f}"
    if loop is not None:
        on_loop = said(generated_ef(regressor, tracer, loop, fps))
        same = " --orientation as-is" if as_is else ""
        line += (f"\n  EF read from the written loop ({len(loop)} frames, what `python -m echogen ef --video OUT "
                 f"--method both{same}` reads; a short loop can read differently): {on_loop}")
    return line


def _tracer_area(source, device, tracer=None):
    """The bundle's LV tracer as an LV-area function for the loop cut (as the app cuts it), or None (then the
    dark-area curve): bundles without a tracer, random-init weights. tracer: that tracer, when already loaded."""
    if not source or not (Path(source) / "manifest.json").is_file():
        return None
    from echogen.teaching.gate import tracer_reader
    reader = tracer_reader(source, device, loaded=tracer)
    return reader.area if reader is not None else None
