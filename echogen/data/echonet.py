"""EchoNet-Dynamic on-disk format: FileList.csv, VolumeTracings.csv, Videos/*.avi, and a clip Dataset.

FileList.csv: FileName (no .avi), EF, ESV, EDV, FrameHeight, FrameWidth, FPS, NumberOfFrames, Split.
VolumeTracings.csv: FileName (with .avi), X1, Y1, X2, Y2, Frame. Per traced frame, the first row is
the LV long axis (apex to mitral annulus), the next 20 rows are chords perpendicular to it (disks).
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from echogen.data.resample import source_frames

FILELIST_COLUMNS = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"]
TRACING_COLUMNS = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
SPLITS = ("TRAIN", "VAL", "TEST", "ALL")


def _stem(name: str) -> str:
    name = name.strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def read_filelist(root) -> list[dict]:
    """Rows of ROOT/FileList.csv with typed values (FileName without .avi, Split upper case)."""
    path = Path(root) / "FileList.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {root} an EchoNet-Dynamic folder?)")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"FileName", "EF", "Split"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for r in reader:
            row = dict(r)
            row["FileName"] = _stem(r["FileName"])
            for k in ("EF", "ESV", "EDV", "FPS"):
                if k in r:
                    row[k] = float(r[k]) if r[k] not in ("", None) else float("nan")
            for k in ("FrameHeight", "FrameWidth", "NumberOfFrames"):
                if k in r:
                    row[k] = int(float(r[k])) if r[k] not in ("", None) else 0
            row["Split"] = r["Split"].strip().upper()
            rows.append(row)
    return rows


def read_tracings(root) -> dict[str, dict[int, np.ndarray]]:
    """FileName (without .avi) -> {frame: (n, 4) float array X1, Y1, X2, Y2 (row 0 long axis)}."""
    path = Path(root) / "VolumeTracings.csv"
    if not path.is_file():
        return {}
    acc: dict = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            acc[_stem(r["FileName"])][int(float(r["Frame"]))].append(
                [float(r["X1"]), float(r["Y1"]), float(r["X2"]), float(r["Y2"])])
    return {k: {fr: np.asarray(v, dtype=np.float64) for fr, v in d.items()} for k, d in acc.items()}


def volume_from_tracing(coords: np.ndarray, scale: float = 1.0) -> float:
    """Single-plane method of disks: V = sum_i pi/4 d_i^2 * L / n_disks.

    coords: (1 + n_disks, 4) rows X1, Y1, X2, Y2; row 0 is the long axis (length L), the others the
    disk diameters d_i. Units: (scale * pixel)^3, e.g. scale = cm per pixel gives mL."""
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 4 or c.shape[0] < 2:
        raise ValueError(f"tracing must be (1 + n_disks, 4), got shape {c.shape}")
    lengths = np.hypot(c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]) * scale
    L, d = lengths[0], lengths[1:]
    return float(np.pi / 4.0 * np.sum(d * d) * L / len(d))


def ef_from_tracings(frames: dict[int, np.ndarray], scale: float = 1.0) -> tuple[float, float, float, int, int]:
    """(EF %, EDV, ESV, ed_frame, es_frame) from two traced frames; ED is the larger volume."""
    if len(frames) < 2:
        raise ValueError(f"need two traced frames (ED and ES), got {len(frames)}")
    vols = {fr: volume_from_tracing(c, scale) for fr, c in frames.items()}
    ed = max(vols, key=vols.get)
    es = min(vols, key=vols.get)
    edv, esv = vols[ed], vols[es]
    return 100.0 * (edv - esv) / edv, edv, esv, int(ed), int(es)


def load_video(root, filename) -> tuple[np.ndarray, float]:
    """ROOT/Videos/FILENAME.avi as uint8 (T, H, W) greyscale and its frame rate."""
    from echogen.data.video_io import read_video

    return read_video(Path(root) / "Videos" / (_stem(filename) + ".avi"), grey=True)


def clip_indices(start: int, frames: int, native_fps: float, fps: float) -> np.ndarray:
    """Frame indices of a clip of `frames` frames at `fps` from a video at `native_fps`."""
    return source_frames(frames, native_fps, fps, start)


def cut_clip(video: np.ndarray, start: int, frames: int, native_fps: float, fps: float) -> np.ndarray:
    """A clip of `frames` frames at `fps` from `start` of a (T, H, W) video at native_fps; frames past
    the end of the video are zeros."""
    idx = clip_indices(start, frames, native_fps, fps)
    clip = np.zeros((frames,) + video.shape[1:], video.dtype)
    ok = idx < len(video)
    clip[ok] = video[idx[ok]]
    return clip


class EchoNetDataset(torch.utils.data.Dataset):
    """Clips of EchoNet-format videos with their EF, for training the cascade and the EF regressor.

    Each item: {"video": (1, T, H, W) float32 in [0, 1], "frame": (1, H, W) conditioning frame,
    "ef": EF (%) from FileList, "ed"/"es": traced frame indices (-1 if untraced), "start": first
    clip frame in the native video, "filename"}. Frames past the end of a video are zeros.
    Randomness (start, conditioning frame) comes from a generator seeded with `seed`.
    """

    def __init__(self, root, split="TRAIN", frames=16, fps=12.5, size=112, random_start=True,
                 cond_frame="random", max_videos=None, seed=0, cache=True):
        self.root = Path(root)
        split = str(split).upper()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if cond_frame not in ("random", "first", "ed"):
            raise ValueError(f"cond_frame must be 'random', 'first' or 'ed', got {cond_frame!r}")
        rows = [r for r in read_filelist(root) if split == "ALL" or r["Split"] == split]
        rows = [r for r in rows if (self.root / "Videos" / (r["FileName"] + ".avi")).is_file()]
        if max_videos is not None:
            rows = rows[:max_videos]
        if not rows:
            raise ValueError(f"{root}: no videos in split {split}")
        self.rows, self.split = rows, split
        self.frames, self.fps, self.size = int(frames), float(fps), int(size)
        self.random_start, self.cond_frame, self.cache = random_start, cond_frame, cache
        self.gen = torch.Generator().manual_seed(int(seed))
        self._videos: dict[str, np.ndarray] = {}
        self._edes = {}
        for name, fr in read_tracings(root).items():
            try:
                self._edes[name] = ef_from_tracings(fr)[3:]
            except ValueError:
                pass

    def __len__(self) -> int:
        return len(self.rows)

    def videos(self) -> list[dict]:
        return list(self.rows)

    def _video(self, name: str) -> tuple[np.ndarray, float]:
        if name in self._videos:
            return self._videos[name]
        v, fps = load_video(self.root, name)
        if v.shape[1:] != (self.size, self.size):
            import cv2

            interp = cv2.INTER_AREA if v.shape[1] >= self.size else cv2.INTER_LINEAR
            v = np.stack([cv2.resize(f, (self.size, self.size), interpolation=interp) for f in v])
        if self.cache:
            self._videos[name] = (v, fps)
        return v, fps

    def _randint(self, n: int) -> int:
        return int(torch.randint(0, max(int(n), 1), (1,), generator=self.gen))

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        name = row["FileName"]
        v, avi_fps = self._video(name)
        native = row.get("FPS", 0.0)
        native = native if native and np.isfinite(native) and native > 0 else (avi_fps or 50.0)
        n = len(v)
        span = int(clip_indices(0, self.frames, native, self.fps)[-1]) + 1
        start = self._randint(n - span + 1) if self.random_start and n > span else 0
        clip = cut_clip(v, start, self.frames, native, self.fps)
        ed, es = self._edes.get(name, (-1, -1))
        if self.cond_frame == "random":
            c = self._randint(n)
        elif self.cond_frame == "first":
            c = start
        else:
            c = ed if 0 <= ed < n else start
        return {
            "video": torch.from_numpy(clip).float().div_(255.0).unsqueeze(0),   # (1, T, H, W)
            "frame": torch.from_numpy(v[c]).float().div_(255.0).unsqueeze(0),   # (1, H, W)
            "ef": torch.tensor(float(row["EF"]), dtype=torch.float32),
            "ed": int(ed), "es": int(es), "start": int(start), "filename": name,
        }
