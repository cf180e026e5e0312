"""Blinded real-vs-generated review sets (the paper's expert study, runnable by any department).

For each chosen real clip the cascade generates a *factual* loop: from the clip's own first shown
frame at the clip's own EF. Real clips are fitted to the cascade's output spec (frames, fps, size)
and re-encoded through the same writer as the generated loops, so every file has the same size,
frame rate, length and codec; names are random, the order is shuffled, and files are written in
that shuffled order (so modification times say nothing either).

REVIEW/review.json  what raters may see: id, file, position (no truth)
REVIEW/clips/*.mp4  the videos
KEY (default REVIEW.key.json, beside the folder, not in it): which is which, EF, seed, source hash.
Share the REVIEW folder with raters; keep the key with the organiser.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from echogen.teaching.media import CaseFolder, VideoSpec, frame_hash, name_hash, random_id, write_clip, write_json
from echogen.teaching.pool import select_real

REVIEW_FILE = "review.json"


@dataclass
class ReviewSet(CaseFolder):
    """meta: id, created, spec, n_real, n_generated; cases: public records in the order shown
    ({"id", "file", "position"}); key: case id -> {"truth": "real"|"generated", ...}, None without it."""
    key: dict | None = None

    def truth(self, case_id: str) -> str:
        if self.key is None:
            raise RuntimeError(f"review set {self.id}: the key was not loaded")
        return self.key[case_id]["truth"]


def default_key_path(review_dir) -> Path:
    d = Path(review_dir).resolve()
    return d.with_name(d.name + ".key.json")


def real_from_uploads(paths, spec: VideoSpec, regressor, seed: int = 0, orient=None) -> list[tuple]:
    """Clips or multi-frame DICOMs uploaded by the organiser -> [(record, uint8 clip fitted to spec,
    its first frame float32 (112, 112))] like select_real. An upload has no measured EF, so the EF the
    factual generation is asked for is what the bundle's regressor reads from the clip (ef_source
    "regressor"); without a regressor uploads cannot be used. Each clip is put in the standard view first
    (echogen.nets.orient.standard_view: an apex-down display turned apex-up, a mirrored one mirrored back when the
    orientation network `orient` says so), as every reader and the generator see inputs. Files too short or
    unreadable are skipped (their names are never stored: only a hash of the pixels)."""
    from echogen.data.inputs import InputError, load_frames
    from echogen.data.video_io import VideoError
    from echogen.nets.orient import standard_view
    from echogen.teaching.media import fit_clip, max_start, prepare_clip
    from echogen.teaching.pool import _regressor_reading

    if regressor is None:
        raise ValueError("uploaded clips have no known EF; the weights' EF regressor reads it, and these weights "
                         "have none")
    rng = np.random.default_rng([seed, 19])
    out = []
    for p in paths:
        try:
            frames, info = load_frames(p)
        except (InputError, VideoError, ValueError, OSError):
            continue
        fps = float(info.get("fps") or 0) or spec.fps
        if len(frames) < 2:
            continue
        last = max_start(len(frames), fps, spec)
        if last < 0:
            continue
        clip = (prepare_clip(frames, 112, info.get("regions")) * 255 + 0.5).astype(np.uint8)
        clip = standard_view(clip, orient)[0]
        start = int(rng.integers(last + 1))
        fitted = fit_clip(clip, fps, spec, start=start)
        if fitted is None:
            continue
        ef = _regressor_reading(regressor, fitted / 255.0, spec.fps)
        if ef is None or not 5 <= ef <= 95:
            continue
        first = clip[start].astype(np.float32) / 255.0
        out.append(({"EF": ef, "ef_source": "regressor", "FileName": frame_hash(clip[start]), "Split": "upload"},
                    fitted, first))
    return out


def build_review_set(cascade, echonet_root=None, split: str = "TEST", n: int = 10, out_dir="review",
                     seed: int = 0, key_path=None, progress=None, sample_kwargs: dict | None = None,
                     uploads=None, regressor=None, loops: bool = True, guard=None) -> ReviewSet:
    """n real clips + n factual generations -> a blinded review set of up to 2n.

    Real clips come from an EchoNet-format dataset (echonet_root, split) or from uploaded clips / DICOMs
    (uploads: paths; their EF is read by `regressor`). With loops=True every clip, real or generated, is
    cut to one heart cycle end-diastole to end-diastole (echogen.data.loops), so both kinds loop the same
    way; a pair where either has no whole cycle is dropped (counted in meta "dropped")."""
    from echogen.data.loops import seamless_loop
    from echogen.teaching.media import MonotonicProgress

    out = Path(out_dir)
    if (out / REVIEW_FILE).exists():
        raise FileExistsError(f"{out.name} already holds a review set; choose a new folder")
    key_path = Path(key_path) if key_path else default_key_path(out)
    if key_path.resolve().is_relative_to(out.resolve()):
        raise ValueError("the key must be kept outside the review folder")
    spec = VideoSpec.of_cascade(cascade)
    if uploads:
        from echogen.nets.orient import bundle_orient
        source = getattr(cascade, "source", None)
        chosen = real_from_uploads(uploads, spec, regressor, seed,
                                   bundle_orient(source if source and Path(str(source)).is_dir() else None))[:n]
    elif echonet_root is not None:
        chosen = select_real(echonet_root, split, n, spec, seed)
    else:
        raise ValueError("a review set needs real clips: a dataset folder or uploaded clips")
    if not chosen:
        raise ValueError(f"no usable real clip: none is long enough for {spec.frames} frames at {spec.fps:g} fps "
                         "(or none could be read)")
    rng = np.random.default_rng([seed, 23])
    prog = MonotonicProgress(progress, len(chosen) + 0.5)
    from echogen.teaching.gate import tracer_area, tracer_reader
    from echogen.teaching.pool import _is_dir
    area_fn = tracer_area([r for r in [tracer_reader(cascade.source if _is_dir(cascade.source) else None)] if r])
    n_stages = len(cascade.config.stages)
    items, dropped = [], 0                                       # (video uint8/float, key record)
    for i, (row, clip, frame) in enumerate(chosen):              # frame: the real clip's first, 112x112
        ef = float(row["EF"])
        s = int(rng.integers(2**31 - 1))

        def cb(stage, step, n_steps, _i=i):
            if guard:
                guard()
            k = cascade.config.stage_names.index(stage)
            prog(_i + (k + step / n_steps) / n_stages, f"clip {_i + 1}/{len(chosen)}: {stage} {step}/{n_steps}")
        gen_out = cascade.sample(frame, [ef], seed=s, callback=cb, **(sample_kwargs or {}))[-1]
        gen = gen_out.video[0, 0].numpy()
        if loops:
            rc = seamless_loop(clip, spec.fps, frame=frame, tracer=area_fn)        # the LV tracer's area when the
            gc = seamless_loop(gen, spec.fps, frame=frame, tracer=area_fn)         # bundle has one, else dark area
            if not (rc.complete and gc.complete):
                dropped += 1
                prog(i + 1, f"clip {i + 1}/{len(chosen)}: dropped (no whole heart cycle)")
                continue
            clip, gen = rc.video, gc.video
        pair = random_id(4)
        src = {"pair": pair, "ef": round(ef, 2), "ef_source": row.get("ef_source", "FileList"),
               "source_hash": frame_hash(frame), "source_name_hash": name_hash(str(row["FileName"])),
               "split": row["Split"]}
        items.append((clip, {"truth": "real", **src}))
        items.append((gen, {"truth": "generated", "seed": s, **src}))
        prog(i + 1, f"clip {i + 1}/{len(chosen)} generated")
    if not items:
        raise ValueError(f"no pair kept: {dropped} dropped (no whole heart cycle in the real or generated clip)")
    order = rng.permutation(len(items))
    (out / "clips").mkdir(parents=True, exist_ok=True)
    cases, key = [], {}
    for pos, j in enumerate(order):                              # write in the shown order
        video, rec = items[j]
        cid, name = random_id(), f"clips/{random_id()}.mp4"
        write_clip(out / name, video, spec)
        cases.append({"id": cid, "file": name, "position": pos})
        key[cid] = rec
    meta = {"id": random_id(6), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "spec": spec.to_dict(), "n_real": len(items) // 2, "n_generated": len(items) // 2, "dropped": dropped,
            "loops": "end-diastole to end-diastole" if loops else "whole clip"}
    key_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(key_path, {"review_id": meta["id"], "preset": cascade.config.name,
                          "weights": Path(str(cascade.source)).name, "seed": int(seed), "cases": key})
    write_json(out / REVIEW_FILE, {**meta, "cases": cases})      # last: a set is listed only once complete
    prog.finish(f"{len(cases)} clips ({dropped} pairs dropped)")
    return ReviewSet(out, meta, cases, key)


def load_review_set(review_dir, key_path=None, need_key: bool = False) -> ReviewSet:
    """Load a review set; the key from key_path (default REVIEW.key.json) when it exists."""
    d = Path(review_dir)
    p = d / REVIEW_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{d.name}: not a review set (no {REVIEW_FILE})")
    data = json.loads(p.read_text())
    cases = data.pop("cases")
    kp = Path(key_path) if key_path else default_key_path(d)
    key = None
    if kp.is_file():
        k = json.loads(kp.read_text())
        if k.get("review_id") != data["id"]:
            raise ValueError(f"the key found for review set {d.name} belongs to another set")
        key = k["cases"]
    elif need_key:
        raise FileNotFoundError(f"review set {d.name}: its key is missing")
    return ReviewSet(d, data, cases, key)
