"""`python -m echogen ef --video PATH [--method auto|regressor|tracing|both]`: the EF (%) of a clip.

Two readers: the EF regressor (a video network, EchoNet-Dynamic's approach) and LV tracing (the tracer
segments the LV cavity in every frame; ED / ES from the area curve; volumes by the single-plane method of
disks; EF = (EDV - ESV) / EDV). `auto` (the default) uses every reader the weights have. Each reading names
its method and what that model was trained on, and the input gets an apical-4-chamber check
(echogen.readout.assess_input) with a warning when it does not look like one.

Accepts AVI / MP4 / GIF / .npy (through echogen.video_io) and DICOM (through echogen.inputs). Frames
that are not already 112x112 greyscale are preprocessed as the generator's input frame is. A long
video is resampled to the regressor's frame rate and scored as the mean over its clips (EchoNet-Dynamic).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from echogen.cli import UserError

VIDEO_EXTS = {".avi", ".mp4", ".gif", ".npy", ".mov", ".mkv", ".webm"}


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
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a sentence")


def _default_weights() -> Path:
    from echogen.cascade import DEFAULT_WEIGHTS
    return Path(DEFAULT_WEIGHTS)


def _grey(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W) or (T, H, W, 3) RGB -> uint8 (T, H, W) (ITU-R 601 luma)."""
    frames = np.asarray(frames)
    if frames.ndim == 4:
        luma = frames[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        frames = np.clip(luma + 0.5, 0, 255).astype(np.uint8)
    return frames


def prepare_clip(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W[, 3]) -> (T, size, size) uint8 with ONE crop for the whole clip (a crop that moved from
    frame to frame would read as heart motion). The ultrasound sector is found on the clip's maximum
    projection (echogen.inputs.find_sector when present), everything outside it is blanked, and the
    square around it is resized with area interpolation (EchoNet-Dynamic's preprocessing)."""
    import cv2

    g = _grey(frames)                                                   # (T, H, W) uint8
    t, h, w = g.shape
    mask = None
    try:
        from echogen.inputs import find_sector
        mask = find_sector(g.max(0))
    except ImportError:
        pass
    if mask is not None:
        g = g * mask[None].astype(np.uint8)
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    side = max(y1 - y0, x1 - x0)
    canvas = np.zeros((t, side, side), np.uint8)                       # centred, zero-padded square
    oy, ox = (side - (y1 - y0)) // 2, (side - (x1 - x0)) // 2
    canvas[:, oy:oy + y1 - y0, ox:ox + x1 - x0] = g[:, y0:y1, x0:x1]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in canvas])


def read_frames(path: Path) -> tuple[np.ndarray, float]:
    """The raw frames of an input, uint8 (T, H, W) or (T, H, W, 3), and its fps (0 when unknown)."""
    if path.suffix.lower() in VIDEO_EXTS:
        from echogen.video_io import read_video

        frames, fps = read_video(path, grey=False) if path.suffix.lower() != ".npy" else read_video(path)
    else:
        try:
            from echogen import inputs
        except ImportError:
            raise UserError(f"{path}: reading '{path.suffix or 'extension-less'}' files (DICOM) needs "
                            "echogen.inputs, which this build lacks; convert to .avi/.mp4/.npy first") from None
        frames, info = inputs.load_frames(path)
        fps = float(info.get("fps") or 0.0)
    return frames, float(fps or 0.0)


def to_model_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Raw frames -> (T, size, size) uint8 greyscale, preprocessed unless they already are."""
    if frames.ndim == 3 and frames.shape[1:] == (size, size):
        return frames
    if frames.ndim == 4 and frames.shape[1:3] == (size, size):
        return _grey(frames)
    return prepare_clip(frames, size)


def load_clip(path: Path, size: int) -> tuple[np.ndarray, float]:
    """Read a clip as (T, size, size) uint8 greyscale, and its fps (0 when unknown)."""
    frames, fps = read_frames(path)
    return to_model_frames(frames, size), fps


def _readers(weights: Path, method: str, device):
    """(regressor or None, tracer or None) for --method, from a bundle or a single .safetensors file."""
    from echogen.regressor import load_regressor
    from echogen.tracer import has_tracer, load_tracer
    from echogen.weights import read_manifest, read_metadata

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


def main(args) -> int:
    from echogen.device import pick_device
    from echogen.readout import assess_input, model_provenance
    from echogen.regressor import predict_ef
    from echogen.tracer import provenance, trace_video

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
    frames = to_model_frames(raw, size)
    if frames.shape[0] < 2:
        raise UserError(f"{path}: EF is read from a clip, and this input has {frames.shape[0]} frame")
    if args.fps is not None:
        if args.fps <= 0:
            raise UserError(f"--fps must be positive, got {args.fps}")
        fps = args.fps
    assumed = fps <= 0
    if args.stride is not None and args.stride < 1:
        raise UserError(f"--stride must be >= 1, got {args.stride}")
    out = {"video": str(path), "frames": int(frames.shape[0])}
    lines = []
    if reg:
        model, cfg = reg
        rfps = cfg.fps if assumed else fps
        mean, per_clip = predict_ef(model, cfg, frames, rfps, stride=args.stride)
        who = model_provenance(weights, "regressor")
        out.update({"ef": round(mean, 2), "clips": [round(e, 2) for e in per_clip], "fps": rfps,
                    "fps_assumed": assumed, "clip_frames": cfg.frames, "clip_fps": cfg.fps,
                    "regressor": {"ef": round(mean, 2), "method": "EF regressor (video network)", "model": who}})
        note = f" (fps unknown; taken as {cfg.fps:g})" if assumed else ""
        spread = f", clips range {min(per_clip):.1f}-{max(per_clip):.1f}" if len(per_clip) > 1 else ""
        lines.append(f"EF {mean:.1f} %  ({path.name}: {frames.shape[0]} frames @ {rfps:g} fps{note}; mean of "
                     f"{len(per_clip)} clip(s) of {cfg.frames} frames @ {cfg.fps:g} fps{spread})")
        lines.append(f"  method: EF regressor; model: {who}")
    if tr:
        model, cfg = tr
        from echogen.tracer import TRACE_FPS
        tfps = TRACE_FPS if assumed else fps
        res = trace_video(model, frames, tfps)
        t = {"ef": None if res["failed"] else round(res["ef"], 2), "method": "LV tracing, single-plane method of disks",
             "model": provenance(model), "confidence": round(res["confidence"], 3), "failed": res["failed"],
             "ed_frame": int(res["frames"][res["ed"]]) if res["ed"] >= 0 else None,
             "es_frame": int(res["frames"][res["es"]]) if res["es"] >= 0 else None,
             "edv_px3": None if res["failed"] else round(res["edv"], 1),
             "esv_px3": None if res["failed"] else round(res["esv"], 1), "beats": len(res["beats"]),
             "lv_area_px": [round(float(a), 1) for a in res["area"]], "traced_fps": res["fps"]}
        out["tracing"] = t
        if "ef" not in out:
            out.update({"ef": t["ef"], "fps": tfps, "fps_assumed": assumed})
        if res["failed"]:
            lines.append(f"EF not read by LV tracing: {res['failed']} ({path.name})")
        else:
            lines.append(f"EF {res['ef']:.1f} % by LV tracing  ({path.name}: ED frame {t['ed_frame']}, ES frame "
                         f"{t['es_frame']}, EDV {res['edv']:.0f} / ESV {res['esv']:.0f} px^3 by the method of disks, "
                         f"{len(res['beats'])} beat(s), tracer confidence {res['confidence']:.2f})")
        lines.append(f"  method: LV tracing (area curve -> ED/ES -> method of disks); model: {provenance(model)}")
    if not args.no_check:
        a = assess_input(raw, tr[0] if tr else None, fps=0.0 if assumed else fps, prepared=frames)
        out["input_check"] = a.to_dict()
        lines.append(a.warning or f"input check: looks like an apical-4-chamber echo (score {a.score:.2f})")
    if args.json:
        print(json.dumps(out))
        return 0
    print("\n".join(lines))
    return 0
