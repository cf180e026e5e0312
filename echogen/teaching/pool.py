"""Case pools for the EF trainer: generated loops at chosen EFs (and optionally real clips with a
known EF), made ahead of a session so no one waits.

POOL/pool.json holds the pool's video spec and one record per case; POOL/cases/<random>.mp4 are the
loops and POOL/frames/<hash>.png the prepared 112x112 source frames. Nothing in a pool names a
patient or an input file: case ids and file names are random, source frames are known by the
SHA-256 of their prepared pixels, and the PNGs are written from pixels alone. A pool folder is never
served to browsers: the app shows a case through a copy under an opaque name (docs/TEACHING.md).

Quality gate (echogen.teaching.gate): a generated case enters the pool only if every EF reader of the
bundle (the regressor; the LV tracer too when the bundle has one) reads its loop within `tolerance`
points of the EF it was generated at. Its true EF (`ef`, shown to and scored against trainees) is that
verified reading; the requested EF is kept beside it (`ef_requested`). Rejected cases are counted in
the pool's meta (`rejected`). Every case is a seamless loop: one heart cycle from end-diastole to
end-diastole (echogen.data.loops).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from echogen.data.loops import seamless_loop
from echogen.ef import parse_efs
from echogen.eval.reading import video_ef
from echogen.nets.orient import bundle_orient, standard_view
from echogen.teaching.gate import DEFAULT_TOLERANCE, default_readers, tracer_area, verify
from echogen.teaching.media import (BuildCancelled, CaseFolder, MonotonicProgress,  # noqa: F401 (re-export)
                                    VideoSpec, fit_clip, frame_hash, max_start, name_hash, random_id, save_png,
                                    write_clip, write_json)
from echogen.teaching.summary import plural

POOL_FILE = "pool.json"
POOL_VERSION = 2


@dataclass(frozen=True)
class PoolLimits:
    """Bounds on one build (the app's defaults; `echogen-app --pool-limits` changes them)."""
    frames: int = 10            # source frames
    efs: int = 8                # EFs per frame
    per_frame: int = 3          # repeats per (frame, EF)
    cases: int = 120            # frames x EFs x repeats (+ real clips)
    real: int = 40              # real clips (pool) or pairs (review set)

    def check(self, n_frames: int, n_efs: int, per_frame: int, n_real: int = 0) -> None:
        bad = [f"{what} {n} > {lim}" for what, n, lim in
               (("frames", n_frames, self.frames), ("EFs", n_efs, self.efs), ("repeats", per_frame, self.per_frame),
                ("real clips", n_real, self.real),
                ("cases", n_frames * n_efs * per_frame + n_real, self.cases)) if n > lim]
        if bad:
            raise ValueError(f"build too large: {', '.join(bad)} (limits: {self.frames} frames, {self.efs} EFs, "
                             f"{self.per_frame} repeats, {self.real} real clips, {self.cases} cases)")

    @staticmethod
    def parse(text: str | None) -> "PoolLimits":
        """'frames=10,efs=8,per_frame=3,cases=120,real=40' (any subset)."""
        d = {}
        for part in (text or "").split(","):
            if part.strip():
                k, _, v = part.partition("=")
                k = k.strip().replace("-", "_")
                if k not in PoolLimits.__dataclass_fields__ or not v.strip().isdigit() or int(v) < 1:
                    raise ValueError(f"pool limit '{part.strip()}': use frames=N, efs=N, per_frame=N, cases=N, real=N")
                d[k] = int(v)
        return PoolLimits(**d)


@dataclass
class Pool(CaseFolder):
    """meta: id, created, spec, weights, preset, version, status, tolerance, readers, rejected; cases: one
    record per accepted case."""

    def case(self, case_id: str) -> dict:
        for c in self.cases:
            if c["id"] == case_id:
                return c
        raise KeyError(f"pool {self.id}: no case '{case_id}'")

    @property
    def ready(self) -> bool:
        """Finished building (a pool being built is not offered to trainees) and holding cases."""
        return self.meta.get("status", "ready") == "ready" and bool(self.cases)

    def save(self) -> Path:
        write_json(self.dir / POOL_FILE, {**self.meta, "cases": self.cases})
        return self.dir / POOL_FILE


def new_pool(out_dir, spec: VideoSpec, **meta) -> Pool:
    """An empty pool folder (refuses a folder that already holds a pool)."""
    out = Path(out_dir)
    if (out / POOL_FILE).exists():
        raise FileExistsError(f"{out.name} already holds a pool ({POOL_FILE}); choose a new folder")
    (out / "cases").mkdir(parents=True, exist_ok=True)
    (out / "frames").mkdir(exist_ok=True)
    m = {"version": POOL_VERSION, "id": random_id(6), "status": "building",
         "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "spec": spec.to_dict(),
         "rejected": [], **meta}
    pool = Pool(out, m, [])
    pool.save()
    return pool


def load_pool(pool_dir) -> Pool:
    p = Path(pool_dir) / POOL_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{Path(pool_dir).name}: not a case pool (no {POOL_FILE}); build one with "
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


class NonA4CFrames(ValueError):
    """Source frames that do not look like apical-4-chamber echoes (the organiser can override)."""


def check_source_frames(frames, weights=None, device="cpu", labels=None, allow: bool = False) -> list[dict]:
    """The apical-4-chamber check (echogen.eval.readout.assess_input, with the bundle's LV tracer when it has
    one) of every pool source frame: frame 0 of a file, or an array. Raises NonA4CFrames naming the frames
    that fail (by label, default "source frame i of n") unless allow=True; returns one record per frame
    {"frame", "score", "ok", "reasons"} (kept in the pool's meta)."""
    from echogen.eval.readout import assess_file, assess_input

    tracer = None
    if weights is not None and _is_dir(str(weights)):
        from echogen.nets.tracer import has_tracer, load_tracer
        if has_tracer(weights):
            tracer = load_tracer(weights, device)[0]
    orient = bundle_orient(weights if weights is not None and _is_dir(str(weights)) else None, device)
    n = len(frames)
    labels = list(labels) if labels is not None else [f"source frame {i + 1} of {n}" for i in range(n)]
    out, bad = [], []
    for i, item in enumerate(frames):
        if isinstance(item, (str, Path)):
            a = assess_file(item, tracer, frame=0, orient=orient)
        else:
            x = np.asarray(item)
            if np.issubdtype(x.dtype, np.floating):
                x = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
            a = assess_input(x, tracer, 0.0, orient=orient)
        out.append({"frame": i, "score": round(a.score, 3), "ok": a.ok, "reasons": list(a.reasons)})
        if not a.ok:
            why = "; ".join(r.split(": ", 1)[1] for r in a.reasons if r.startswith("warn"))
            bad.append(f"{labels[i]} (score {a.score:.2f}: {why})")
    if bad and not allow:
        raise NonA4CFrames("refused: not apical-4-chamber echoes: " + " | ".join(bad)
                           + ". Remove them, or override (allow non-A4C frames) to build from them anyway")
    return out


def _regressor_reading(regressor, video: np.ndarray, fps: float) -> float | None:
    """EF the regressor reads from a (T, S, S) video in [0, 1], or None without a regressor."""
    read = video_ef(regressor, np.asarray(video, np.float32), fps)
    return None if read is None else round(float(read[0]), 2)


REJECTED_AS = {"gate": "EF read outside the gate", "loop": "no whole heart cycle"}


def rejected_summary(pool: Pool) -> dict:
    """{"generated": n tried, "accepted": n, "rejected": n, "reasons": {reason kind: n}, "text": "n of m generated
    loops rejected (k EF read outside the gate, j no whole heart cycle)"}."""
    rej = pool.meta.get("rejected", [])
    acc = sum(c["kind"] == "generated" for c in pool.cases)
    kinds = {}
    for r in rej:
        k = r.get("kind", "gate")
        kinds[k] = kinds.get(k, 0) + 1
    why = ", ".join(f"{n} {REJECTED_AS.get(k, k)}" for k, n in kinds.items())
    text = f"{len(rej)} of {acc + len(rej)} generated loops rejected" + (f" ({why})" if why else "")
    return {"generated": acc + len(rej), "accepted": acc, "rejected": len(rej), "reasons": kinds, "text": text}


def build_pool(cascade, regressor, frames, efs, per_frame: int = 1, out_dir="pool", seed: int = 0,
               progress=None, real_clips: dict | None = None, sample_kwargs: dict | None = None,
               readers="default", tolerance: float | None = DEFAULT_TOLERANCE, loops: bool = True,
               limits: PoolLimits | None = None, guard=None) -> Pool:
    """Generate len(frames) * per_frame * len(efs) candidate cases into a new pool at out_dir; those that
    pass the quality gate (and, with loops=True, hold one whole heart cycle) become cases.

    regressor: (model, cfg) from echogen.nets.regressor.load_regressor, or None.
    readers: EF readers for the gate (echogen.teaching.gate.EFReader list); "default": the regressor and,
    when the bundle has one, the LV tracer. tolerance: EF points (None: no gate; then the requested EF is
    the case's EF, ef_source "requested"). A gate with no reader is refused.
    loops: cut every case to one cycle end-diastole to end-diastole (echogen.data.loops); False keeps
    the whole clip (untrained test networks make noise with no cycle in it).
    limits: PoolLimits to refuse an oversized build. guard(): called at every sampler step and case; it
    raises (e.g. BuildCancelled) to stop the build. progress(fraction, message): never goes backwards.
    real_clips: {"root", "split", "n"} to add real clips too (see add_real_clips).
    One cascade call per (frame, repeat) generates every EF in one batch; `seed` and `batch_index`
    are stored so a case can be regenerated."""
    efs = parse_efs(list(efs), what="pool EFs")
    if (Path(out_dir) / POOL_FILE).exists():
        raise FileExistsError(f"{Path(out_dir).name} already holds a pool ({POOL_FILE}); choose a new folder")
    if per_frame < 1:
        raise ValueError(f"per_frame must be >= 1, got {per_frame}")
    if not frames:
        raise ValueError("no source frames given")
    n_real = int((real_clips or {}).get("n", 0) or 0)
    if limits is not None:
        limits.check(len(frames), len(efs), per_frame, n_real)
    if readers == "default":
        readers = default_readers(regressor, cascade.source if _is_dir(cascade.source) else None)
    readers = list(readers or [])
    if tolerance is not None and not readers:
        raise ValueError("the pool quality gate needs an EF reader, and these weights have neither an EF regressor "
                         "nor an LV tracer; use weights with a regressor (or tolerance=None / --no-gate to keep the "
                         "requested EFs unverified)")
    spec = VideoSpec.of_cascade(cascade)
    pool = new_pool(out_dir, spec, preset=cascade.config.name, weights=_weights_name(cascade.source),
                    regressor=regressor is not None, seed=int(seed),
                    tolerance=None if tolerance is None else float(tolerance), readers=[r.name for r in readers],
                    loops="end-diastole to end-diastole" if loops else "whole clip")
    rng = np.random.default_rng(seed)
    n_stages = len(cascade.config.stages)
    total = len(frames) * per_frame
    prog = MonotonicProgress(progress, total + 0.25 * n_real)
    area_fn = tracer_area(readers)
    done = 0
    conditioned = cascade.conditioning_ef(efs, (sample_kwargs or {}).get("calibrate", True))  # what the networks get
    orient = bundle_orient(cascade.source if _is_dir(cascade.source) else None)
    for item in frames:
        frame = standard_view(as_frame(item), orient)[0]        # a mirrored source frame: generated the right way round
        fhash = frame_hash(frame)
        png = f"frames/{fhash[:16]}.png"
        if not (pool.dir / png).exists():
            save_png(pool.dir / png, frame)
        for _ in range(per_frame):
            s = int(rng.integers(2**31 - 1))

            def cb(stage, step, n_steps, _done=done):
                if guard:
                    guard()
                k = cascade.config.stage_names.index(stage)
                prog(_done + (k + step / n_steps) / n_stages, f"batch {_done + 1}/{total}: {stage} {step}/{n_steps}")
            t0 = time.perf_counter()
            out = cascade.sample(frame, efs, seed=s, callback=cb, **(sample_kwargs or {}))[-1]
            secs = (time.perf_counter() - t0) / len(efs)
            vids = out.video[:, 0].numpy()                           # (B, T, S, S) in [0, 1]
            for b, ef in enumerate(efs):
                if guard:
                    guard()
                rec = {"requested": ef, "seed": s, "batch_index": b, "source_hash": fhash}
                verdict = verify(vids[b], out.fps, ef, readers,
                                 float("inf") if tolerance is None else tolerance) if readers else None
                if tolerance is not None and not verdict.ok:
                    pool.meta["rejected"].append({**rec, "kind": "gate", "reason": verdict.reason,
                                                  "readings": verdict.readings})
                    continue
                cut = seamless_loop(vids[b], out.fps, frame=frame, tracer=area_fn) if loops else None
                if cut is not None and not cut.complete:
                    pool.meta["rejected"].append({**rec, "kind": "loop", "reason": cut.method})
                    continue
                video = vids[b] if cut is None else cut.video
                name = f"cases/{random_id()}.mp4"
                write_clip(pool.dir / name, video, spec)
                readings = verdict.readings if verdict else {}
                verified = tolerance is not None
                pool.cases.append({
                    "id": random_id(), "kind": "generated", "file": name,
                    "ef": verdict.ef if verified else ef, "ef_source": "verified" if verified else "requested",
                    "ef_requested": ef, "ef_conditioned": round(float(conditioned[b]), 2), "ef_readings": readings,
                    "ef_regressor": readings["regressor"] if "regressor" in readings
                    else _regressor_reading(regressor, vids[b], out.fps),
                    "seed": s, "batch": efs, "batch_index": b, "source_frame": png, "source_hash": fhash,
                    "weights": pool.meta["weights"], "preset": cascade.config.name,
                    "fps": spec.fps, "frames": int(len(video)), "size": spec.size, "seconds": round(secs, 2),
                    **({} if cut is None else cut.to_dict())})
            done += 1
            pool.save()
            prog(done, f"{done}/{total} batches ({plural(len(pool.cases), 'case')} kept, "
                          f"{len(pool.meta['rejected'])} rejected)")
    if real_clips and n_real:
        add_real_clips(pool, real_clips["root"], real_clips.get("split", "TEST"), n_real, regressor=regressor,
                       seed=seed, progress=lambda f, m: prog(total + 0.25 * n_real * f, m), loops=loops, guard=guard)
    pool.meta["status"] = "ready"
    pool.save()
    prog.finish(f"{plural(len(pool.cases), 'case')} ({len(pool.meta['rejected'])} rejected)")
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
        raise ValueError(f"no videos with an EF in split {split} of this dataset")
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
                   progress=None, loops: bool = True, guard=None) -> list[dict]:
    """Add n real clips with a known EF (FileList.csv) from an EchoNet-format dataset (e.g. EchoNet-
    Dynamic or `python -m echogen phantom`), fitted to the pool's frame rate and size, cut to one heart
    cycle (loops=True; clips without a whole cycle are skipped) and written through the same writer. The
    FileName is kept only as a SHA-256 hash. Returns the new records."""
    if isinstance(pool, (str, Path)):
        pool = load_pool(pool)
    spec = pool.spec
    chosen = select_real(echonet_root, split, n, spec, seed)
    if len(chosen) < n:
        print(f"note: only {len(chosen)} of {n} requested clips in {split} are long enough "
              f"({spec.frames} frames at {spec.fps:g} fps)")
    added = []
    for i, (row, clip, first) in enumerate(chosen):
        if guard:
            guard()
        cut = seamless_loop(clip, spec.fps, frame=first) if loops else None
        if cut is not None and not cut.complete:
            pool.meta.setdefault("rejected_real", []).append({"reason": cut.method})
            continue
        video = clip if cut is None else cut.video
        name = f"cases/{random_id()}.mp4"
        write_clip(pool.dir / name, video, spec)
        fhash = frame_hash(first)
        png = f"frames/{fhash[:16]}.png"
        save_png(pool.dir / png, first)
        reg = _regressor_reading(regressor, clip / 255.0, spec.fps)
        rec = {"id": random_id(), "kind": "real", "file": name, "ef": round(float(row["EF"]), 2),
               "ef_source": "FileList", "ef_requested": None, "ef_readings": {} if reg is None else {"regressor": reg},
               "ef_regressor": reg, "seed": None, "source_frame": png, "source_hash": fhash,
               "source_name_hash": name_hash(row["FileName"]), "split": row["Split"], "fps": spec.fps,
               "frames": int(len(video)), "size": spec.size, **({} if cut is None else cut.to_dict())}
        pool.cases.append(rec)
        added.append(rec)
        pool.save()
        if progress:
            progress((i + 1) / max(1, len(chosen)), f"real clip {i + 1}/{len(chosen)}")
    return added


def _is_dir(source) -> bool:
    try:
        return bool(source) and Path(str(source)).is_dir()
    except OSError:
        return False


def _weights_name(source: str) -> str:
    """The weights' source as stored: the bundle folder's name, not its full path (a home folder's
    path can name a person)."""
    return Path(str(source)).name if source and source != "random-init" else str(source)
