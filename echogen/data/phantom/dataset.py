"""Write a phantom dataset in EchoNet-Dynamic's format, in parallel, deterministically per seed.

Two simulators: "v2" (default; `shape` + `ultrasound`: shape model, regional wall motion, beam-domain
image formation, acquisition variety, 30-80 fps) and "v1" (`anatomy` + `render`, the original).

Video i of seed S depends only on (S, i): the same seed gives byte-identical CSVs whatever the
number of workers. FileList EF, EDV and ESV are computed FROM the written tracings (method of disks),
so a reader that recomputes EF from VolumeTracings.csv agrees with FileList.csv.
"""
from __future__ import annotations

import csv
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from echogen.data.echonet import FILELIST_COLUMNS, TRACING_COLUMNS, ef_from_tracings
from echogen.data.phantom.anatomy import cycle, sample_heart, tracing
from echogen.data.phantom.render import SIZE, Scene

FPS = 50.0          # v1 frame rate (v2 draws 30-80 fps per video)
SIMS = ("v2", "v1")
DEFAULT_SIM = "v2"


def video_name(seed: int, i: int) -> str:
    return f"PH{seed:04d}X{i:06d}"


def splits(n: int, seed: int) -> list[str]:
    """TRAIN/VAL/TEST ~ 75/12.5/12.5, shuffled by seed; at least one VAL and TEST when n >= 3."""
    n_val = n_test = int(round(n * 0.125))
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    labels = ["VAL"] * n_val + ["TEST"] * n_test + ["TRAIN"] * (n - n_val - n_test)
    order = np.random.default_rng([seed, 7919]).permutation(n)
    out = [""] * n
    for lab, j in zip(labels, order):
        out[j] = lab
    return out


def traced_frames(h, rng) -> tuple[int, int]:
    """ED and ES frame of one beat inside the video."""
    T = h.period
    last = (h.n_frames - 1) / h.fps - h.systole - 0.02
    k0 = int(np.ceil((0.0 - h.t0) / T))
    cands = [h.t0 + k * T for k in range(k0, k0 + 20) if h.t0 + k * T <= last]
    t_ed = cands[int(rng.integers(len(cands)))]
    return int(round(t_ed * h.fps)), int(round((t_ed + h.systole) * h.fps))


def heart_v2(seed: int, i: int):
    """The v2 heart and acquisition of video i of seed S (cheap: no rendering)."""
    from echogen.data.phantom.shape import sample_heart2

    return sample_heart2(np.random.default_rng([seed, i, 2]))


def contraction(h, n_frames: int | None = None) -> np.ndarray:
    """Contraction c per frame (0 = end-diastole, 1 = end-systole)."""
    n = h.n_frames if n_frames is None else n_frames
    return cycle(np.arange(n) / h.fps, h)[0]


def lv_masks(h) -> np.ndarray:
    """uint8 (T, 112, 112) LV cavity mask of every frame of a v2 video (the traced shape, exactly)."""
    from echogen.data.phantom.shape import lv_mask

    return np.stack([lv_mask(h, float(c)) for c in contraction(h)])


def lv_volumes(h) -> np.ndarray:
    """Method-of-disks LV volume (mL) of every frame of a v2 video."""
    from echogen.data.phantom.shape import lv_volume_ml

    return np.array([lv_volume_ml(h, float(c)) for c in contraction(h)])


def heart_v1(seed: int, i: int):
    """The v1 heart of video i of seed S (cheap: no rendering; make_video draws it first from the same rng)."""
    return sample_heart(np.random.default_rng([seed, i]), FPS)


def lv_masks_v1(h) -> np.ndarray:
    """uint8 (T, 112, 112) LV cavity mask of every frame of a v1 video, rasterised from the frame's tracing
    (the shape its ED / ES rows in VolumeTracings.csv are drawn from: closed across the mitral annulus whether
    the leaflets are open or shut)."""
    from echogen.eval.lv_volume import tracing_mask

    return np.stack([tracing_mask(tracing(h, float(c)), (SIZE, SIZE)) for c in contraction(h)]).astype(np.uint8)


def lv_volumes_v1(h) -> np.ndarray:
    """Method-of-disks LV volume (mL) of every frame of a v1 video, from the frame's tracing."""
    from echogen.data.echonet import volume_from_tracing

    return np.array([volume_from_tracing(tracing(h, float(c)), h.cm_per_px) for c in contraction(h)])


def _make_v2(seed: int, i: int, masks: bool):
    from echogen.data.phantom.shape import tracing as tracing2
    from echogen.data.phantom.ultrasound import Scene2

    h = heart_v2(seed, i)
    rng = np.random.default_rng([seed, i, 3])
    ed, es = traced_frames(h, rng)
    trace = {f: tracing2(h, float(cycle(f / h.fps, h)[0])) for f in (ed, es)}
    ef, edv, esv, ed_f, es_f = ef_from_tracings(trace, scale=h.cm_per_px)
    video = Scene2(h, rng).render(np.random.default_rng([seed, i, 4]))
    name = video_name(seed, i)
    row = {"FileName": name, "EF": f"{ef:.4f}", "ESV": f"{esv:.4f}", "EDV": f"{edv:.4f}",
           "FrameHeight": SIZE, "FrameWidth": SIZE, "FPS": f"{h.fps:g}", "NumberOfFrames": h.n_frames}
    tr_rows = [[name + ".avi", f"{x1:.4f}", f"{y1:.4f}", f"{x2:.4f}", f"{y2:.4f}", f]
               for f in (ed_f, es_f) for x1, y1, x2, y2 in trace[f]]
    if masks:
        return row, tr_rows, video, lv_masks(h)
    return row, tr_rows, video


def make_video(seed: int, i: int, sim: str = DEFAULT_SIM, masks: bool = False):
    """(FileList row, tracing rows, uint8 video (T, 112, 112)) of phantom video i; with masks=True also the
    uint8 (T, 112, 112) LV cavity mask of every frame."""
    if sim == "v2":
        return _make_v2(seed, i, masks)
    if sim != "v1":
        raise ValueError(f"unknown simulator {sim!r} (use one of {SIMS})")
    rng = np.random.default_rng([seed, i])
    h = sample_heart(rng, FPS)                       # = heart_v1(seed, i): the first draw from this rng
    ed, es = traced_frames(h, rng)
    trace = {f: tracing(h, float(cycle(f / h.fps, h)[0])) for f in (ed, es)}
    ef, edv, esv, ed_f, es_f = ef_from_tracings(trace, scale=h.cm_per_px)
    video = Scene(h, rng).render()
    name = video_name(seed, i)
    row = {"FileName": name, "EF": f"{ef:.4f}", "ESV": f"{esv:.4f}", "EDV": f"{edv:.4f}",
           "FrameHeight": SIZE, "FrameWidth": SIZE, "FPS": f"{FPS:g}", "NumberOfFrames": h.n_frames}
    tr_rows = [[name + ".avi", f"{x1:.4f}", f"{y1:.4f}", f"{x2:.4f}", f"{y2:.4f}", f]
               for f in (ed_f, es_f) for x1, y1, x2, y2 in trace[f]]
    if masks:
        return row, tr_rows, video, lv_masks_v1(h)
    return row, tr_rows, video


def _job(args):
    from echogen.data.video_io import write_video

    seed, i, videos_dir, sim, masks = args
    out = make_video(seed, i, sim=sim, masks=masks)
    row, tr, video = out[:3]
    write_video(Path(videos_dir) / (row["FileName"] + ".avi"), video, float(row["FPS"]))
    if masks:
        vol = lv_volumes(heart_v2(seed, i)) if sim == "v2" else lv_volumes_v1(heart_v1(seed, i))
        np.savez_compressed(Path(videos_dir).parent / "Masks" / (row["FileName"] + ".npz"),
                            masks=np.packbits(out[3].astype(bool), axis=-1), shape=np.array(out[3].shape),
                            volume_ml=vol.astype(np.float32))
    return i, row, tr


def load_masks(root, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (T, 112, 112) LV masks, (T,) LV volumes in mL) written by write_phantom(masks=True)."""
    z = np.load(Path(root) / "Masks" / (name + ".npz"))
    shape = tuple(int(x) for x in z["shape"])
    return np.unpackbits(z["masks"], axis=-1, count=shape[-1]).reshape(shape), z["volume_ml"]


def write_phantom(out, videos: int, seed: int = 0, workers: int = 1, progress=None,
                  sim: str = DEFAULT_SIM, masks: bool = False, only_split: str | None = None) -> dict:
    """Write OUT/FileList.csv, OUT/VolumeTracings.csv and OUT/Videos/*.avi (and with masks=True,
    OUT/Masks/NAME.npz: per-frame LV masks, see load_masks). With only_split ('TRAIN', 'VAL' or 'TEST') only
    that split's videos of the `videos`-video set are written: the same names, videos and rows as in the whole
    set (a held-out TEST set without rendering the rest). Returns a summary."""
    if videos < 1:
        raise ValueError(f"--videos must be at least 1, got {videos}")
    if sim not in SIMS:
        raise ValueError(f"unknown simulator {sim!r} (use one of {SIMS})")
    if only_split not in (None, "TRAIN", "VAL", "TEST"):
        raise ValueError(f"unknown split {only_split!r} (use TRAIN, VAL or TEST)")
    split = splits(videos, seed)
    keep = [i for i in range(videos) if only_split in (None, split[i])]
    out = Path(out)
    (out / "Videos").mkdir(parents=True, exist_ok=True)
    if masks:
        (out / "Masks").mkdir(exist_ok=True)
    t0 = time.time()
    jobs = [(seed, i, str(out / "Videos"), sim, masks) for i in keep]
    results = {}
    if workers > 1:
        with mp.get_context("spawn" if mp.get_start_method(allow_none=True) == "spawn" else "fork").Pool(workers) as pool:
            for k, (i, row, tr) in enumerate(pool.imap_unordered(_job, jobs, chunksize=2)):
                results[i] = (row, tr)
                if progress:
                    progress(k + 1, len(jobs))
    else:
        for k, job in enumerate(jobs):
            i, row, tr = _job(job)
            results[i] = (row, tr)
            if progress:
                progress(k + 1, len(jobs))
    with open(out / "FileList.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(FILELIST_COLUMNS)
        for i in keep:
            row = dict(results[i][0], Split=split[i])
            w.writerow([row[c] for c in FILELIST_COLUMNS])
    with open(out / "VolumeTracings.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TRACING_COLUMNS)
        for i in keep:
            w.writerows(results[i][1])
    efs = np.array([float(results[i][0]["EF"]) for i in keep])
    return {"videos": len(keep), "seconds": time.time() - t0, "sim": sim, "ef_mean": float(efs.mean()),
            "ef_min": float(efs.min()), "ef_max": float(efs.max()),
            "splits": {s: sum(split[i] == s for i in keep) for s in ("TRAIN", "VAL", "TEST")}}
