"""Case pools for the EF trainer: generated loops at chosen EFs (and optionally real clips with a
known EF), made ahead of a session so no one waits.

POOL/pool.json holds the pool's video spec and one record per case; POOL/cases/<random>.mp4 are the
loops and POOL/frames/<hash>.png the prepared 112x112 source frames. Nothing in a pool names a
patient or an input file: case ids and file names are random, source frames are known by the
SHA-256 of their prepared pixels, and the PNGs are written from pixels alone.

A generated case's true EF is the EF the cascade was asked for; `ef_regressor` is what the EF
regressor reads from the loop (None when the weights bundle has no regressor: never invented).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from echogen.ef import parse_efs
from echogen.eval.reading import video_ef
from echogen.teaching.media import (CaseFolder, VideoSpec, fit_clip, frame_hash, max_start, name_hash, random_id,
                                    resize_video, save_png, write_clip, write_json)

POOL_FILE = "pool.json"
POOL_VERSION = 1


@dataclass
class Pool(CaseFolder):
    """meta: id, created, spec, weights, preset, version; cases: one record per case."""

    def case(self, case_id: str) -> dict:
        for c in self.cases:
            if c["id"] == case_id:
                return c
        raise KeyError(f"pool {self.id}: no case '{case_id}'")

    def save(self) -> Path:
        write_json(self.dir / POOL_FILE, {**self.meta, "cases": self.cases})
        return self.dir / POOL_FILE


def new_pool(out_dir, spec: VideoSpec, **meta) -> Pool:
    """An empty pool folder (refuses a folder that already holds a pool)."""
    out = Path(out_dir)
    if (out / POOL_FILE).exists():
        raise FileExistsError(f"{out} already holds a pool ({POOL_FILE}); choose a new folder")
    (out / "cases").mkdir(parents=True, exist_ok=True)
    (out / "frames").mkdir(exist_ok=True)
    m = {"version": POOL_VERSION, "id": random_id(6),
         "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "spec": spec.to_dict(), **meta}
    pool = Pool(out, m, [])
    pool.save()
    return pool


def load_pool(pool_dir) -> Pool:
    p = Path(pool_dir) / POOL_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{pool_dir}: not a case pool (no {POOL_FILE}); build one with "
                                "`python -m echogen pool`")
    import json

    d = json.loads(p.read_text())
    cases = d.pop("cases", [])
    return Pool(Path(pool_dir), d, cases)


def as_frame(item) -> np.ndarray:
    """A path (any input echogen.data.inputs reads) or an array -> float32 (112, 112) in [0, 1]."""
    from echogen.data.inputs import prepare_array, prepare_frame

    if isinstance(item, (str, Path)):
        return prepare_frame(item, frame=0, size=112)[0]
    a = np.asarray(item)
    if a.shape == (112, 112) and np.issubdtype(a.dtype, np.floating) and a.min() >= 0 and a.max() <= 1:
        return a.astype(np.float32)
    return prepare_array(a, 112)


def _regressor_reading(regressor, video: np.ndarray, fps: float) -> float | None:
    """EF the regressor reads from a (T, S, S) video in [0, 1], or None without a regressor."""
    read = video_ef(regressor, np.asarray(video, np.float32), fps)
    return None if read is None else round(float(read[0]), 2)


def build_pool(cascade, regressor, frames, efs, per_frame: int = 1, out_dir="pool", seed: int = 0,
               progress=None, real_clips: dict | None = None, sample_kwargs: dict | None = None) -> Pool:
    """Generate len(frames) * per_frame * len(efs) cases into a new pool at out_dir.

    regressor: (model, cfg) from echogen.nets.regressor.load_regressor, or None (readings stay None).
    frames: paths or arrays (prepared with echogen.data.inputs). efs: requested EFs in %.
    progress(fraction, message): called after every sampler step and every case.
    real_clips: {"root", "split", "n"} to add real clips too (see add_real_clips).
    One cascade call per (frame, repeat) generates every EF in one batch; `seed` and `batch_index`
    are stored so a case can be regenerated."""
    efs = parse_efs(list(efs), what="pool EFs")
    if per_frame < 1:
        raise ValueError(f"per_frame must be >= 1, got {per_frame}")
    if not frames:
        raise ValueError("no source frames given")
    spec = VideoSpec.of_cascade(cascade)
    pool = new_pool(out_dir, spec, preset=cascade.config.name, weights=_weights_name(cascade.source),
                    regressor=regressor is not None, seed=int(seed))
    rng = np.random.default_rng(seed)
    n_stages = len(cascade.config.stages)
    total = len(frames) * per_frame
    done = 0
    for item in frames:
        frame = as_frame(item)
        fhash = frame_hash(frame)
        png = f"frames/{fhash[:16]}.png"
        if not (pool.dir / png).exists():
            save_png(pool.dir / png, frame)
        for _ in range(per_frame):
            s = int(rng.integers(2**31 - 1))
            cb = None
            if progress:
                def cb(stage, step, n_steps, _done=done):
                    k = cascade.config.stage_names.index(stage)
                    frac = (_done + (k + step / n_steps) / n_stages) / total
                    progress(min(frac, 1.0), f"batch {_done + 1}/{total}: {stage} {step}/{n_steps}")
            t0 = time.perf_counter()
            out = cascade.sample(frame, efs, seed=s, callback=cb, **(sample_kwargs or {}))[-1]
            secs = (time.perf_counter() - t0) / len(efs)
            vids = out.video[:, 0].numpy()                           # (B, T, S, S) in [0, 1]
            for b, ef in enumerate(efs):
                cid = random_id()
                name = f"cases/{random_id()}.mp4"
                write_clip(pool.dir / name, vids[b], spec)
                pool.cases.append({
                    "id": cid, "kind": "generated", "file": name,
                    "ef": ef, "ef_source": "requested", "ef_regressor": _regressor_reading(regressor, vids[b], out.fps),
                    "seed": s, "batch": efs, "batch_index": b, "source_frame": png, "source_hash": fhash,
                    "weights": pool.meta["weights"], "preset": cascade.config.name,
                    "fps": spec.fps, "frames": spec.frames, "size": spec.size, "seconds": round(secs, 2)})
            done += 1
            pool.save()                                              # a partial pool is usable
            if progress:
                progress(done / total, f"{done}/{total} batches ({len(pool.cases)} cases)")
    if real_clips:
        add_real_clips(pool, real_clips["root"], real_clips.get("split", "TEST"), int(real_clips.get("n", 0)),
                       regressor=regressor, seed=seed, progress=progress)
    return pool


def select_real(root, split: str, n: int, spec: VideoSpec, seed: int = 0) -> list[tuple]:
    """Up to n random clips of an EchoNet-format split that are long enough for the spec:
    [(FileList row, uint8 video fitted to spec, its first frame as float32 (112, 112))], in random
    order. Each clip starts at a random frame."""
    from echogen.data.echonet import load_video, read_filelist

    split = split.upper()
    rows = [r for r in read_filelist(root) if split == "ALL" or r["Split"] == split]
    rows = [r for r in rows if np.isfinite(r["EF"])]
    if not rows:
        raise ValueError(f"{root}: no videos with an EF in split {split}")
    rng = np.random.default_rng([seed, 17])
    out = []
    for j in rng.permutation(len(rows)):
        if len(out) >= n:
            break
        row = rows[j]
        video, avi_fps = load_video(root, row["FileName"])
        fps = row.get("FPS") or avi_fps
        last = max_start(len(video), fps, spec)
        if last < 0:
            continue
        start = int(rng.integers(last + 1))
        first = video[start]
        first = first.astype(np.float32) / 255.0 if first.shape == (112, 112) else as_frame(first)
        out.append((row, fit_clip(video, fps, spec, start=start), first))
    return out


def add_real_clips(pool: Pool, echonet_root, split: str = "TEST", n: int = 10, regressor=None, seed: int = 0,
                   progress=None) -> list[dict]:
    """Add n real clips with a known EF (FileList.csv) from an EchoNet-format dataset (e.g. EchoNet-
    Dynamic or `python -m echogen phantom`), fitted to the pool's frame count, fps and size and written
    through the same writer. The FileName is kept only as a SHA-256 hash. Returns the new records."""
    if isinstance(pool, (str, Path)):
        pool = load_pool(pool)
    spec = pool.spec
    chosen = select_real(echonet_root, split, n, spec, seed)
    if len(chosen) < n:
        print(f"note: only {len(chosen)} of {n} requested clips in {split} are long enough "
              f"({spec.frames} frames at {spec.fps:g} fps)")
    added = []
    for i, (row, clip, first) in enumerate(chosen):
        name = f"cases/{random_id()}.mp4"
        write_clip(pool.dir / name, clip, spec)
        fhash = frame_hash(first)
        png = f"frames/{fhash[:16]}.png"
        save_png(pool.dir / png, first)
        rec = {"id": random_id(), "kind": "real", "file": name, "ef": round(float(row["EF"]), 2),
               "ef_source": "FileList", "ef_regressor": _regressor_reading(regressor, clip / 255.0, spec.fps),
               "seed": None, "source_frame": png, "source_hash": fhash, "source_name_hash": name_hash(row["FileName"]),
               "split": row["Split"], "fps": spec.fps, "frames": spec.frames, "size": spec.size}
        pool.cases.append(rec)
        added.append(rec)
        pool.save()
        if progress:
            progress((i + 1) / max(1, len(chosen)), f"real clip {i + 1}/{len(chosen)}")
    return added


def _weights_name(source: str) -> str:
    """The weights' source as stored: the bundle folder's name, not its full path (a home folder's
    path can name a person)."""
    return Path(str(source)).name if source and source != "random-init" else str(source)
