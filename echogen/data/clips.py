"""A clip from disk as the EF readers want it: (T, size, size) uint8 greyscale with ONE sector crop for the
whole clip. Used by `python -m echogen ef`, the readouts and the tracer."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from echogen.data.inputs import find_sector, load_frames



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
    projection (echogen.data.inputs.find_sector), everything outside it is blanked, and the
    square around it is resized with area interpolation (EchoNet-Dynamic's preprocessing)."""
    import cv2

    g = _grey(frames)                                                   # (T, H, W) uint8
    t, h, w = g.shape
    mask = find_sector(g.max(0))
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


READ_SIDE = 256   # every frame of an input is area-shrunk to at most this side as it is decoded
EF_FRAMES = 256   # the EF of a clip is read from at most its first EF_FRAMES frames


def read_input(path, limits=None) -> tuple[np.ndarray, dict]:
    """The ONE decode of a user's input for the app and the CLI alike (they read the same file 1.6 EF points
    apart when only the app shrank while decoding): uint8 (T, H, W) or (T, H, W, 3) frames, each shrunk to at
    most READ_SIDE a side as it is decoded (also the memory bound for hostile uploads), at most the input
    limits' max_frames (limits: echogen.data.inputs.Limits, default the process's), and the safe info dict of
    echogen.data.inputs.load_frames. Raises InputError."""
    return load_frames(path, limits, shrink=READ_SIDE)


def read_frames(path: Path) -> tuple[np.ndarray, float]:
    """read_input's frames and the input's fps (0 when unknown)."""
    frames, info = read_input(path)
    return frames, float(info.get("fps") or 0.0)


def ef_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """The frames an EF is read from (app and CLI): the first EF_FRAMES of read_input's, as to_model_frames."""
    return to_model_frames(np.asarray(frames)[:EF_FRAMES], size)


def to_model_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Raw frames -> (T, size, size) uint8 greyscale, preprocessed unless they already are."""
    if frames.ndim == 3 and frames.shape[1:] == (size, size):
        return frames
    if frames.ndim == 4 and frames.shape[1:3] == (size, size):
        return _grey(frames)
    return prepare_clip(frames, size)

