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
    """Write one case video (T, S, S) through the common writer after checking it meets the spec."""
    from echogen.data.video_io import write_video

    v = np.asarray(video)
    if v.shape != (spec.frames, spec.size, spec.size):
        raise ValueError(f"case video has shape {v.shape}, the spec says "
                         f"({spec.frames}, {spec.size}, {spec.size})")
    return write_video(path, v, spec.fps)


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
