"""`python -m echogen ef --video PATH`: the EF (%) the regressor reads from a clip.

Accepts AVI / MP4 / GIF / .npy (through echogen.data.video_io) and DICOM (through echogen.data.inputs). Frames
that are not already 112x112 greyscale are preprocessed as the generator's input frame is. A long
video is resampled to the regressor's frame rate and scored as the mean over its clips (EchoNet-Dynamic).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from echogen.cli.main import UserError

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
    from echogen.diffusion.cascade import DEFAULT_WEIGHTS
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
    projection (echogen.data.inputs.find_sector when present), everything outside it is blanked, and the
    square around it is resized with area interpolation (EchoNet-Dynamic's preprocessing)."""
    import cv2

    g = _grey(frames)                                                   # (T, H, W) uint8
    t, h, w = g.shape
    mask = None
    try:
        from echogen.data.inputs import find_sector
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


def load_clip(path: Path, size: int) -> tuple[np.ndarray, float]:
    """Read a clip as (T, size, size) uint8 greyscale, and its fps (0 when unknown)."""
    if path.suffix.lower() in VIDEO_EXTS:
        from echogen.data.video_io import read_video

        frames, fps = read_video(path, grey=False) if path.suffix.lower() != ".npy" else read_video(path)
    else:
        try:
            from echogen.data import inputs
        except ImportError:
            raise UserError(f"{path}: reading '{path.suffix or 'extension-less'}' files (DICOM) needs "
                            "echogen.data.inputs, which this build lacks; convert to .avi/.mp4/.npy first") from None
        frames, info = inputs.load_frames(path)
        fps = float(info.get("fps") or 0.0)
    if frames.ndim == 3 and frames.shape[1:] == (size, size):
        return frames, float(fps or 0.0)
    if frames.ndim == 4 and frames.shape[1:3] == (size, size):
        return _grey(frames), float(fps or 0.0)
    return prepare_clip(frames, size), float(fps or 0.0)


def main(args) -> int:
    from echogen.device import pick_device
    from echogen.nets.regressor import load_regressor, predict_ef

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
    model, cfg = load_regressor(weights, device)
    frames, fps = load_clip(path, cfg.size)
    if frames.shape[0] < 2:
        raise UserError(f"{path}: EF is read from a clip, and this input has {frames.shape[0]} frame")
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
