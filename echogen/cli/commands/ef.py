"""`python -m echogen ef --video PATH [--method auto|regressor|tracing|both]`: the EF (%) of a clip.

Two readers: the EF regressor (a video network, EchoNet-Dynamic's approach) and LV tracing (the tracer
segments the LV cavity in every frame; ED / ES from the area curve; volumes by the single-plane method of
disks; EF = (EDV - ESV) / EDV). `auto` (the default) uses every reader the weights have. Each reading names
its method and what that model was trained on, and the input gets an apical-4-chamber check
(echogen.eval.readout.assess_input) with a warning when it does not look like one.

Accepts AVI / MP4 / GIF / .npy (through echogen.data.video_io) and DICOM (through echogen.data.inputs). Frames
that are not already 112x112 greyscale are preprocessed as the generator's input frame is. A long
video is resampled to the regressor's frame rate and scored as the mean over its clips (EchoNet-Dynamic).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from echogen.cli.main import UserError
from echogen.data.clips import ef_frames, read_frames



def add_arguments(p) -> None:
    p.add_argument("--video", required=True, help="clip to score: .avi .mp4 .gif .npy or DICOM (.dcm)")
    p.add_argument("--weights", default=None,
                   help="weights bundle folder (its manifest names the regressor) or a regressor .safetensors "
                        "(default: the demo bundle in assets/weights/demo)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA when present)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of the input (default: read from the file; .npy has none, and is then "
                        "taken to be at the regressor's own rate)")
    p.add_argument("--stride", type=int, default=None, help="frames between clip starts (default: the model's)")
    p.add_argument("--method", default="auto", choices=("auto", "regressor", "tracing", "both"),
                   help="who reads the EF: the regressor, LV tracing (method of disks), both, or auto = every "
                        "reader the weights have (default)")
    p.add_argument("--no-check", action="store_true", help="skip the apical-4-chamber input check")
    p.add_argument("--orientation", default="auto", choices=("auto", "as-is", "mirror"),
                   help="the clip is read in the standard view: an apex-down display (the fan's apex at the bottom) "
                        "turned apex-up, and one shown mirrored (the LV on the left) mirrored back: auto = when the "
                        "fan's shape / the bundle's orientation network say so (default), as-is = neither, "
                        "mirror = always mirror")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a sentence")


def _default_weights() -> Path:
    from echogen.diffusion.cascade import DEFAULT_WEIGHTS
    return Path(DEFAULT_WEIGHTS)


def _readers(weights: Path, method: str, device):
    """(regressor or None, tracer or None) for --method, from a bundle or a single .safetensors file."""
    from echogen.nets.regressor import load_regressor
    from echogen.nets.tracer import has_tracer, load_tracer
    from echogen.weights.bundle import read_manifest, read_metadata

    if weights.is_dir():
        man = read_manifest(weights)
        have_reg, have_tr = bool(man.get("regressor")), has_tracer(weights)
    else:
        kind = read_metadata(weights).get("echogen_kind")
        have_reg, have_tr = kind == "regressor", kind == "tracer"
    want_reg = method in ("regressor", "both") or (method == "auto" and have_reg)
    want_tr = method in ("tracing", "both") or (method == "auto" and have_tr)
    if method == "auto" and not (have_reg or have_tr):
        raise UserError(f"{weights}: holds neither an EF regressor nor an LV tracer")
    if want_tr and not have_tr:
        raise UserError(f"{weights}: no LV tracer in these weights, so --method {method} cannot trace; train one "
                        "with train/train_tracer.py --bundle, or use --method regressor")
    reg = load_regressor(weights, device) if want_reg else None
    tr = load_tracer(weights, device) if want_tr else None
    return reg, tr


def _standard_view(frames, weights: Path, mode: str, device):
    """The clip in the standard orientation (echogen.nets.orient.standard_view) with the bundle's orientation
    network (a bundle without one, or a single weights file: never mirrored unless --orientation mirror; an
    apex-down clip is turned apex-up either way, which is geometry)."""
    from echogen.nets.orient import bundle_orient, standard_view
    return standard_view(frames, bundle_orient(weights, device) if mode == "auto" else None, mode)


def main(args) -> int:
    from echogen.device import pick_device
    from echogen.eval.readout import assess_input, clip_reader, headline, model_provenance
    from echogen.nets.regressor import load_regressor, predict_ef, short_loop
    from echogen.nets.tracer import provenance, trace_video

    path = Path(args.video)
    if not path.is_file():
        raise UserError(f"{path}: video not found")
    weights = Path(args.weights) if args.weights else _default_weights()
    if not args.weights and not weights.exists():
        raise UserError(f"no default weights bundle at {weights}; pass --weights (a bundle folder or a "
                        "regressor .safetensors), or train one: python train/train_regressor.py --bundle DIR")
    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    reg, tr = _readers(weights, args.method, device)
    size = reg[1].size if reg else tr[1].size
    raw, fps = read_frames(path)
    frames = ef_frames(raw, size)
    if frames.shape[0] < 2:
        raise UserError(f"{path}: EF is read from a clip, and this input has {frames.shape[0]} frame")
    if args.fps is not None:
        if args.fps <= 0:
            raise UserError(f"--fps must be positive, got {args.fps}")
        fps = args.fps
    assumed = fps <= 0
    frames, view = _standard_view(frames, weights, args.orientation, device)
    if args.stride is not None and args.stride < 1:
        raise UserError(f"--stride must be >= 1, got {args.stride}")
    out = {"video": str(path), "frames": int(frames.shape[0]), "view": view}
    lines, tr_lines = [], []
    unrounded = {}           # each reader's unrounded EF: rounded once, to 0.1, as generate / the app round them
    if reg:
        model, cfg = reg
        rfps = cfg.fps if assumed else fps
        mean, per_clip = predict_ef(model, cfg, frames, rfps, stride=args.stride)
        unrounded["regressor"] = mean
        who = model_provenance(weights, "regressor")          # the data in a few words; JSON: the whole history
        out.update({"fps": rfps, "fps_assumed": assumed,      # the clip's; each reader's own fields are its own
                    "regressor": {"ef": round(mean, 2), "method": "EF regressor (video network)",
                                  "model": model_provenance(weights, "regressor", full=True),
                                  "clips": [round(e, 2) for e in per_clip], "clip_frames": cfg.frames,
                                  "clip_fps": cfg.fps}})
        note = f" (fps unknown; taken as {cfg.fps:g})" if assumed else ""
        spread = f", clips range {min(per_clip):.1f}-{max(per_clip):.1f}" if len(per_clip) > 1 else ""
        span = frames.shape[0] * cfg.fps / rfps            # frames once resampled to the regressor's rate
        looped = short_loop(frames, rfps, cfg)
        if looped:                # predict_ef repeats a short seamless loop to fill the regressor's window
            how = (f"one clip: a seamless loop of {span:.0f} frames at {cfg.fps:g} fps, repeated to fill the "
                   f"regressor's {cfg.frames}-frame window")
        elif span < cfg.frames:   # ... and zero-pads any other short clip
            how = (f"one clip: {span:.0f} frames at {cfg.fps:g} fps, zero-padded to the regressor's {cfg.frames}-frame "
                   f"window (it does not repeat without a jump); a clip shorter than {cfg.frames / cfg.fps:.2f} s "
                   "reads less reliably")
        else:
            how = f"mean of {len(per_clip)} clip(s) of {cfg.frames} frames @ {cfg.fps:g} fps{spread}"
        out["regressor"]["short_clip"] = bool(span < cfg.frames)
        out["regressor"]["repeated_loop"] = bool(looped)
        by = " by the EF regressor" if tr else ""
        lines.append(f"EF {round(mean, 1):.1f} %{by}  ({path.name}: {frames.shape[0]} frames @ {round(rfps, 2):g} "
                     f"fps{note}; {how})")
        lines.append(f"  method: EF regressor; model: {who}")
    if tr:
        model, cfg = tr
        from echogen.nets.tracer import TRACE_FPS
        tfps = TRACE_FPS if assumed else fps
        res = trace_video(model, frames, tfps)
        t = {"ef": None if res["failed"] else round(res["ef"], 2), "method": "LV tracing, single-plane method of disks",
             "model": provenance(model, full=True), "confidence": round(res["confidence"], 3), "failed": res["failed"],
             "ed_frame": int(res["frames"][res["ed"]]) if res["ed"] >= 0 else None,
             "es_frame": int(res["frames"][res["es"]]) if res["es"] >= 0 else None,
             "edv_px3": None if res["failed"] else round(res["edv"], 1),
             "esv_px3": None if res["failed"] else round(res["esv"], 1), "beats": len(res["beats"]),
             "lv_area_px": [round(float(a), 1) for a in res["area"]], "traced_fps": res["fps"]}
        out["tracing"] = t
        if not res["failed"]:
            unrounded["tracing"] = res["ef"]
        if "fps" not in out:
            out.update({"fps": tfps, "fps_assumed": assumed})
        if res["failed"]:
            tr_lines.append(f"EF not read by LV tracing: {res['failed']} ({path.name})")
        else:
            tr_lines.append(f"EF {round(res['ef'], 1):.1f} % by LV tracing  ({path.name}: ED frame "
                            f"{t['ed_frame']}, ES frame {t['es_frame']}, EDV {res['edv']:.0f} / ESV {res['esv']:.0f} "
                            f"px^3 by the method of disks, {len(res['beats'])} beat(s), tracer confidence "
                            f"{res['confidence']:.2f})")
        tr_lines.append(f"  method: LV tracing (area curve -> ED/ES -> method of disks); model: {provenance(model)}")
    # which reading is THE EF of this clip (JSON "ef", printed first): the bundle's clip_reader when it read the
    # clip, else the other one (echogen.eval.readout.clip_reader / headline); both are printed
    top = headline({"regressor": out.get("regressor", {}).get("ef"), "tracing": out.get("tracing", {}).get("ef")},
                   clip_reader(weights))
    out["ef"], out["method"] = (None, None) if top is None else (round(top[1], 2), top[0])
    lines = tr_lines + lines if top is not None and top[0] == "tracing" else lines + tr_lines
    both = [f"{round(unrounded[k], 1):.1f}" for k in ("regressor", "tracing") if k in unrounded]   # as printed, rounded once
    if len(both) == 2:     # the gap between the readings as printed
        from echogen.eval.readout import DISAGREE, disagreement, loop_ef
        gap = disagreement(*both)
        out["disagreement"] = gap
        mean = loop_ef(*both)[0]           # what the app's "EF read from the loop" is for a generated loop
        out["mean_of_readers"] = round(mean, 2)
        first = "LV tracing" if top is not None and top[0] == "tracing" else "EF regressor"
        lines.append(f"mean of both readers: {mean:.1f} % (the app's 'EF read from the loop' for a loop it "
                     f"generated; a clip's EF is the {first} reading, printed first)")
        if gap > DISAGREE:
            lines.append(f"⚠ the two readings disagree by {gap:.1f} EF points (regressor {both[0]}, LV tracing "
                         f"{both[1]}): trust neither without looking at the clip (is it an apical 4-chamber "
                         "view? see the input check below)")
    from echogen.nets.orient import view_note
    if view_note(view):
        lines.append(view_note(view))
    if not args.no_check:
        a = assess_input(raw, tr[0] if tr else None, fps=0.0 if assumed else fps, prepared=frames, view=view)
        out["input_check"] = a.to_dict()
        lines.append(a.warning or f"input check: looks like an apical-4-chamber echo (score {a.score:.2f})")
    if args.json:
        print(json.dumps(out))
        return 0
    print("\n".join(lines))
    return 0
