"""`python -m echogen ef --video PATH`: the EF (%) the regressor reads from a clip.

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
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a sentence")


def _default_weights() -> Path:
    from echogen.cascade import DEFAULT_WEIGHTS
    return Path(DEFAULT_WEIGHTS)


def _resize_square(frames: np.ndarray, size: int) -> np.ndarray:
    """Fallback preprocessing (no echogen.inputs): centre square crop, area resize. uint8 (T,H,W) in/out."""
    import cv2

    t, h, w = frames.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    sq = frames[:, top:top + s, left:left + s]
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in sq])


def load_clip(path: Path, size: int) -> tuple[np.ndarray, float]:
    """Read a clip as (T, size, size) uint8 or float [0, 1] greyscale, and its fps (0 when unknown)."""
    try:
        from echogen import inputs
    except ImportError:
        inputs = None
    if path.suffix.lower() in VIDEO_EXTS:
        from echogen.video_io import read_video

        frames, fps = read_video(path, grey=False)
        if frames.ndim == 4:  # colour video: greyscale it unless the input preprocessing does
            frames = frames if inputs is not None else frames.mean(-1).astype(np.uint8)
    elif inputs is not None:
        frames, info = inputs.load_frames(path)
        fps = float((info or {}).get("fps") or 0.0) if isinstance(info, dict) else float(getattr(info, "fps", 0) or 0)
    else:
        raise UserError(f"{path}: reading '{path.suffix or 'extension-less'}' files (DICOM) needs echogen.inputs, "
                        "which is not installed in this build; convert to .avi/.mp4/.npy first")
    if frames.ndim == 3 and frames.shape[1:] == (size, size):
        return frames, float(fps or 0.0)
    if inputs is not None:
        return np.stack([inputs.prepare_array(f, size=size) for f in frames]), float(fps or 0.0)
    if frames.ndim == 4:
        frames = frames.mean(-1).astype(np.uint8)
    return _resize_square(np.asarray(frames), size), float(fps or 0.0)


def main(args) -> int:
    from echogen.device import pick_device
    from echogen.regressor import load_regressor, predict_ef

    path = Path(args.video)
    if not path.is_file():
        raise UserError(f"{path}: video not found")
    weights = Path(args.weights) if args.weights else _default_weights()
    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    model, cfg = load_regressor(weights, device)
    frames, fps = load_clip(path, cfg.size)
    if frames.shape[0] < 1:
        raise UserError(f"{path}: the clip has no frames")
    if args.fps is not None:
        if args.fps <= 0:
            raise UserError(f"--fps must be positive, got {args.fps}")
        fps = args.fps
    assumed = fps <= 0
    if assumed:
        fps = cfg.fps
    if args.stride is not None and args.stride < 1:
        raise UserError(f"--stride must be >= 1, got {args.stride}")
    mean, per_clip = predict_ef(model, cfg, frames, fps, stride=args.stride)
    if args.json:
        print(json.dumps({"video": str(path), "ef": round(mean, 2), "clips": [round(e, 2) for e in per_clip],
                          "frames": int(frames.shape[0]), "fps": fps, "fps_assumed": assumed,
                          "clip_frames": cfg.frames, "clip_fps": cfg.fps}))
        return 0
    note = f" (fps unknown; taken as {cfg.fps:g})" if assumed else ""
    spread = f", clips range {min(per_clip):.1f}-{max(per_clip):.1f}" if len(per_clip) > 1 else ""
    print(f"EF {mean:.1f} %  ({path.name}: {frames.shape[0]} frames @ {fps:g} fps{note}; mean of "
          f"{len(per_clip)} clip(s) of {cfg.frames} frames @ {cfg.fps:g} fps{spread})")
    return 0
