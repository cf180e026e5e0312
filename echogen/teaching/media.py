"""What pools and review sets share: the video spec every case is written at, real clips fitted to
it, random non-identifying names, and hashes of frames instead of file names.

A case's file must say nothing but its content: every clip of a pool or review set is written by
the same writer (echogen.data.video_io.write_video: H.264, yuv420p, crf 18, +faststart) at the same size,
frame rate and length, under a random name.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VideoSpec:
    frames: int     # T of every case
    fps: float      # playback rate of every case
    size: int       # height = width of every case

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "VideoSpec":
        return VideoSpec(int(d["frames"]), float(d["fps"]), int(d["size"]))

    @staticmethod
    def of_cascade(cascade) -> "VideoSpec":
        """The spec of the cascade's last stage (what it generates)."""
        st = cascade.config.stages[-1]
        return VideoSpec(int(st.frames), float(st.fps), int(st.size))



@dataclass
class CaseFolder:
    """A folder of cases described by a JSON file: a trainer pool or a blinded review set."""
    dir: Path
    meta: dict                          # id, created, spec, ... (what the JSON file holds besides the cases)
    cases: list = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def spec(self) -> VideoSpec:
        return VideoSpec.from_dict(self.meta["spec"])

    def path(self, case: dict) -> Path:
        """The video file of a case."""
        return self.dir / case["file"]

def random_id(nbytes: int = 8) -> str:
    """Random hex id (no order, time or content in it)."""
    return secrets.token_hex(nbytes)


def frame_hash(frame) -> str:
    """SHA-256 of a frame's 8-bit pixels: links the cases made from one anatomy without naming it."""
    a = np.asarray(frame)
    u8 = a if a.dtype == np.uint8 else (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    h = hashlib.sha256()
    h.update(str(u8.shape).encode())
    h.update(np.ascontiguousarray(u8).tobytes())
    return h.hexdigest()


def name_hash(name: str) -> str:
    """SHA-256 of a source name (e.g. an EchoNet FileName) so a key can be traced back by whoever holds
    the dataset, without writing the name itself."""
    return hashlib.sha256(name.encode()).hexdigest()


def resize_video(video: np.ndarray, size: int) -> np.ndarray:
    """uint8 or float (T, H, W) -> same dtype (T, size, size); area interpolation when shrinking."""
    import cv2

    v = np.asarray(video)
    if v.shape[1:] == (size, size):
        return v
    interp = cv2.INTER_AREA if v.shape[1] >= size else cv2.INTER_CUBIC
    out = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in v])
    return np.clip(out, 0, 1) if out.dtype != np.uint8 else out


def fit_clip(video: np.ndarray, native_fps: float, spec: VideoSpec, start: int = 0) -> np.ndarray | None:
    """A real clip (T0, H, W) at native_fps -> uint8 (spec.frames, spec.size, spec.size) at spec.fps:
    frame k shows the source frame on screen at time start/native_fps + k/spec.fps. None when the clip
    is too short to fill spec.frames (padding or looping would be a tell)."""
    from echogen.data.video_io import to_uint8

    v = to_uint8(video)
    native_fps = float(native_fps) if native_fps and native_fps > 0 else spec.fps
    idx = start + np.floor(np.arange(spec.frames) * (native_fps / spec.fps) + 1e-6).astype(np.int64)
    if idx[-1] >= len(v):
        return None
    return resize_video(v[idx], spec.size)


def max_start(n_frames: int, native_fps: float, spec: VideoSpec) -> int:
    """Largest start frame for which fit_clip succeeds (-1: the clip is too short)."""
    native_fps = float(native_fps) if native_fps and native_fps > 0 else spec.fps
    span = int(np.floor((spec.frames - 1) * (native_fps / spec.fps) + 1e-6))
    return n_frames - 1 - span


def write_clip(path: Path, video: np.ndarray, spec: VideoSpec) -> Path:
    """Write one case video (T, S, S) through the common writer after checking it meets the spec: the
    spec's size and frame rate, at most spec.frames frames (a seamless loop is one heart cycle of the
    generated clip, so its length follows the heart rate)."""
    from echogen.data.video_io import write_video

    v = np.asarray(video)
    if v.ndim != 3 or v.shape[1:] != (spec.size, spec.size) or not 2 <= len(v) <= spec.frames:
        raise ValueError(f"case video has shape {v.shape}, the spec says "
                         f"(2..{spec.frames}, {spec.size}, {spec.size})")
    return write_video(path, v, spec.fps, loop=True)


class BuildCancelled(RuntimeError):
    """Raised (by a build's guard) to stop building a pool or review set."""


class MonotonicProgress:
    """progress(fraction, message) that never goes backwards: call it with units done out of `total`;
    phases (generation, real clips, writing) map onto one 0..1 scale."""

    def __init__(self, progress, total: float):
        self.progress, self.total, self.last = progress, max(float(total), 1e-9), 0.0

    def __call__(self, units: float, message: str = "") -> None:
        if self.progress is None:
            return
        self.last = max(self.last, min(1.0, float(units) / self.total))
        self.progress(self.last, message)

    def finish(self, message: str = "done") -> None:
        if self.progress is not None:
            self.last = 1.0
            self.progress(1.0, message)


def prepare_clip(frames: np.ndarray, size: int = 112, regions=None) -> np.ndarray:
    """A clip (T, H, W[, 3]) uint8 -> float32 (T, size, size) in [0, 1], every frame cropped and masked
    like the generator's input with ONE sector found on the clip's brightest projection (a per-frame
    crop would jitter)."""
    import cv2

    from echogen.data.inputs import _prepare, find_sector

    f = np.asarray(frames)
    if f.ndim == 4:
        f = f[..., :3].mean(-1).astype(np.uint8) if f.shape[-1] >= 3 else f[..., 0]
    _, info = _prepare(f.max(0), size, regions, "clip")
    x0, y0, x1, y1 = info["crop"]
    mask = find_sector(f.max(0))
    h, w = f.shape[1:]
    mask = np.ones((h, w), np.uint8) if mask is None else mask
    side = x1 - x0
    out = []
    for fr in f:
        g = (fr * mask).astype(np.uint8)
        canvas = np.zeros((side, side), np.uint8)
        cx0, cx1, cy0, cy1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
        canvas[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = g[cy0:cy1, cx0:cx1]
        interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
        out.append(cv2.resize(canvas, (size, size), interpolation=interp))
    return np.stack(out).astype(np.float32) / 255.0


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def save_png(path: Path, frame) -> Path:
    """A fresh greyscale PNG from pixels only (no metadata from the original file)."""
    from PIL import Image

    a = np.asarray(frame)
    u8 = a if a.dtype == np.uint8 else (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(u8, mode="L").save(path)
    return Path(path)
