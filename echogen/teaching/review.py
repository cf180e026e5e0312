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


def build_review_set(cascade, echonet_root, split: str = "TEST", n: int = 10, out_dir="review",
                     seed: int = 0, key_path=None, progress=None, sample_kwargs: dict | None = None) -> ReviewSet:
    """n real clips of an EchoNet-format split + n factual generations -> a blinded review set of 2n."""
    out = Path(out_dir)
    if (out / REVIEW_FILE).exists():
        raise FileExistsError(f"{out} already holds a review set; choose a new folder")
    key_path = Path(key_path) if key_path else default_key_path(out)
    if key_path.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"the key ({key_path}) must be kept outside the review folder ({out})")
    spec = VideoSpec.of_cascade(cascade)
    chosen = select_real(echonet_root, split, n, spec, seed)
    if not chosen:
        raise ValueError(f"{echonet_root}: no clip in {split} is long enough for {spec.frames} frames at {spec.fps:g} fps")
    rng = np.random.default_rng([seed, 23])
    items = []                                                   # (video uint8/float, key record)
    for i, (row, clip, frame) in enumerate(chosen):              # frame: the real clip's first, 112x112
        ef = float(row["EF"])
        s = int(rng.integers(2**31 - 1))
        cb = None
        if progress:
            def cb(stage, step, n_steps, _i=i):
                progress((_i + step / n_steps / len(cascade.config.stages)) / len(chosen),
                         f"clip {_i + 1}/{len(chosen)}: {stage} {step}/{n_steps}")
        gen = cascade.sample(frame, [ef], seed=s, callback=cb, **(sample_kwargs or {}))[-1].video[0, 0].numpy()
        pair = random_id(4)
        src = {"pair": pair, "ef": round(ef, 2), "source_hash": frame_hash(frame),
               "source_name_hash": name_hash(row["FileName"]), "split": row["Split"]}
        items.append((clip, {"truth": "real", **src}))
        items.append((gen, {"truth": "generated", "seed": s, **src}))
        if progress:
            progress((i + 1) / len(chosen), f"clip {i + 1}/{len(chosen)} generated")
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
            "spec": spec.to_dict(), "n_real": len(chosen), "n_generated": len(chosen)}
    write_json(out / REVIEW_FILE, {**meta, "cases": cases})
    key_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(key_path, {"review_id": meta["id"], "preset": cascade.config.name,
                          "weights": Path(str(cascade.source)).name, "seed": int(seed), "cases": key})
    return ReviewSet(out, meta, cases, key)


def load_review_set(review_dir, key_path=None, need_key: bool = False) -> ReviewSet:
    """Load a review set; the key from key_path (default REVIEW.key.json) when it exists."""
    d = Path(review_dir)
    p = d / REVIEW_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{d}: not a review set (no {REVIEW_FILE})")
    data = json.loads(p.read_text())
    cases = data.pop("cases")
    kp = Path(key_path) if key_path else default_key_path(d)
    key = None
    if kp.is_file():
        k = json.loads(kp.read_text())
        if k.get("review_id") != data["id"]:
            raise ValueError(f"{kp} is the key of review set {k.get('review_id')}, not {data['id']}")
        key = k["cases"]
    elif need_key:
        raise FileNotFoundError(f"{kp}: the review set's key is missing")
    return ReviewSet(d, data, cases, key)
