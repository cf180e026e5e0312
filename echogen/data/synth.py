"""Synthetic EchoNet-format datasets: conditioning frames x target EFs -> generated videos, filtered.

The plan (`make_plan`) is a pure function of the arguments: item i uses source frame
sources[(i // K) % len(sources)] (K = samples per frame, sources in a seed-shuffled order), target EF
efs[i] from the EF distribution (`target_efs`) and sample seed `item_seed(seed, i)`; so an item's video
depends only on (weights, sampling settings, source frame, target EF, seed), never on which rank or run
made it. Under torchrun rank r makes the items i with i % world == r and appends its rows to
OUT/FileList.rank{r}.csv (one row per item as soon as it is made, so an interrupted run resumes); `merge`
writes OUT/FileList.csv (kept items, EchoNet-Dynamic's columns first) and OUT/Rejected.csv (the rest).

Kept videos: OUT/Videos/NAME.avi (MJPG, the cascade's final frames at its output fps). Rejected videos go
to OUT/Rejected/NAME.avi, out of the way of EchoNet readers (they drop rows whose Videos/*.avi is absent).
A sample is rejected when the regressor reads an EF more than `tolerance` points from its target, or
(with drop_near_copies) when the privacy check flags it as a near-copy of a training video.

Privacy check (`PrivacyIndex`): per reference (training) video, M frames evenly spaced and the
regressor's backbone features of its first clip. For a synthetic video: the nearest reference by frame SSIM
(echogen.eval.metrics.ssim_per_frame of the closest frame pair of each of the 8 reference videos closest in
28x28 pixel distance: a shortlist, since a float64 SSIM costs ~0.1 s a pair on one CPU core) and the nearest
by feature distance (L2 of
echogen.nets.regressor.extract_features). NearCopy = 1 when the SSIM >= ssim_threshold or the feature
distance <= feat_threshold.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from echogen.data.echonet import FILELIST_COLUMNS
from echogen.ef import EF_BIN_EDGES, EF_MAX, EF_MIN, check_ef
from echogen.rng import mix_seed

SYNTH_COLUMNS = FILELIST_COLUMNS + ["SourceVideo", "TargetEF", "ReadEF", "Seed", "Accepted", "Reason",
                                    "NearestSSIMVideo", "NearestSSIM", "NearestFeatVideo", "NearestFeatDist",
                                    "NearCopy", "Rank", "Index"]
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"}
BALANCED_BINS = (10.0, 90.0, 8)      # "balanced": 8 bins of 10 points from 10 to 90 %, in turn


class SynthError(ValueError):
    """Unusable synth arguments; the message is one line."""


# ------------------------------------------------------------------------------------------- EFs
def target_efs(spec: str, n: int, seed: int = 0) -> list[float]:
    """n target EFs from a distribution: 'uniform:LO,HI' (uniform in [LO, HI]), 'balanced' (equal numbers
    in each 10-point bin of 10-90 %, uniform within a bin, bins in turn) or FILE.csv (its EF or TargetEF
    column in order, repeated when n is larger)."""
    spec = str(spec).strip()
    rng = np.random.default_rng([int(seed), 0xEF])
    if spec.lower().startswith("uniform"):
        try:
            lo, hi = (float(v) for v in spec.split(":", 1)[1].split(","))
        except (IndexError, ValueError):
            raise SynthError(f"--ef: expected uniform:LO,HI (e.g. uniform:10,90), got {spec!r}") from None
        check_ef(lo, "--ef uniform LO"), check_ef(hi, "--ef uniform HI")
        if hi < lo:
            raise SynthError(f"--ef: uniform:LO,HI needs LO <= HI, got {spec!r}")
        return [round(float(v), 2) for v in rng.uniform(lo, hi, n)]
    if spec.lower() == "balanced":
        lo, hi, k = BALANCED_BINS
        w = (hi - lo) / k
        u = rng.uniform(0, 1, n)
        return [round(lo + ((i % k) + float(u[i])) * w, 2) for i in range(n)]
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise SynthError(f"--ef: {path}: file not found")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        col = next((c for c in ("TargetEF", "EF") if rows and c in rows[0]), None)
        if col is None:
            raise SynthError(f"--ef: {path} needs an EF (or TargetEF) column")
        vals = [float(r[col]) for r in rows if r[col] not in ("", None)]
        if not vals:
            raise SynthError(f"--ef: {path} holds no EF values")
        vals = [min(max(v, EF_MIN), EF_MAX) for v in vals]
        return [vals[i % len(vals)] for i in range(n)]
    raise SynthError(f"--ef: expected uniform:LO,HI, balanced or a .csv file, got {spec!r}")


def item_seed(seed: int, i: int) -> int:
    """The sampling seed of item i: in 0 .. 2**32 - 1, the range Cascade.sample accepts (check_seed)."""
    return int(mix_seed(int(seed), int(i), 0x5E7) % 2 ** 32)


# --------------------------------------------------------------------------------------- sources
@dataclass
class Source:
    name: str          # the video / file stem (SourceVideo column)
    path: Path         # where the frame comes from
    frame: int = 0     # which frame of it
    echonet_root: Path | None = None


def is_echonet(root) -> bool:
    root = Path(root)
    return (root / "FileList.csv").is_file() and (root / "Videos").is_dir()


def list_sources(frames, split: str = "TRAIN") -> list[Source]:
    """Conditioning frames: the videos of `split` in an EchoNet-format folder (their end-diastolic traced
    frame when VolumeTracings.csv has it, else frame 0), or every PNG/JPEG/DICOM/clip/.npy in a folder,
    or one such file."""
    from echogen.data.echonet import SPLITS, ef_from_tracings, read_filelist, read_tracings
    from echogen.data.inputs import DICOM_EXTS, VIDEO_EXTS

    root = Path(frames)
    if not root.exists():
        raise SynthError(f"--frames: {root}: not found")
    if root.is_dir() and is_echonet(root):
        split = str(split).upper()
        if split not in SPLITS:
            raise SynthError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
        tr = read_tracings(root)
        out = []
        for r in read_filelist(root):
            if split != "ALL" and r["Split"] != split:
                continue
            p = root / "Videos" / (r["FileName"] + ".avi")
            if not p.is_file():
                continue
            ed = 0
            if r["FileName"] in tr:
                try:
                    ed = ef_from_tracings(tr[r["FileName"]])[3]
                except ValueError:
                    pass
            out.append(Source(r["FileName"], p, int(ed), root))
        if not out:
            raise SynthError(f"--frames: {root} has no videos in split {split}")
        return out
    files = [root] if root.is_file() else sorted(
        p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS | DICOM_EXTS)
    if not files:
        raise SynthError(f"--frames: {root} holds no PNG/JPEG/DICOM/clip files (nor is it an EchoNet folder)")
    return [Source(p.stem, p, 0) for p in files]


def load_source_frame(src: Source, size: int = 112) -> np.ndarray:
    """The conditioning frame (size, size) float32 in [0, 1]. EchoNet videos are already preprocessed
    (only resized); other inputs go through echogen.data.inputs.prepare_frame."""
    if src.echonet_root is not None:
        import cv2

        from echogen.data.echonet import load_video

        v, _ = load_video(src.echonet_root, src.name)
        f = v[min(src.frame, len(v) - 1)]
        if f.shape != (size, size):
            f = cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA if f.shape[0] >= size else cv2.INTER_CUBIC)
        return f.astype(np.float32) / 255.0
    from echogen.data.inputs import prepare_frame

    return prepare_frame(src.path, frame=src.frame, size=size)[0].astype(np.float32)


@dataclass
class Item:
    index: int
    name: str
    source: Source
    target_ef: float
    seed: int


def make_plan(sources: list[Source], n: int, ef_spec: str, seed: int = 0, samples_per_frame: int = 1,
              prefix: str = "SY") -> list[Item]:
    if n < 1:
        raise SynthError(f"--n must be >= 1, got {n}")
    if samples_per_frame < 1:
        raise SynthError(f"--samples-per-frame must be >= 1, got {samples_per_frame}")
    order = np.random.default_rng([int(seed), 0x50C]).permutation(len(sources))
    efs = target_efs(ef_spec, n, seed)
    return [Item(i, f"{prefix}{int(seed) % 10000:04d}X{i:06d}",
                 sources[int(order[(i // samples_per_frame) % len(sources)])], efs[i], item_seed(seed, i))
            for i in range(n)]


def shard(plan: list[Item], rank: int, world: int) -> list[Item]:
    return [it for it in plan if it.index % world == rank]


# --------------------------------------------------------------------------------------- privacy
def _thumbs(frames: torch.Tensor, size: int = 28) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> (N, size*size) area-downsampled, for the SSIM shortlist."""
    return torch.nn.functional.adaptive_avg_pool2d(frames[:, None].float(), size).flatten(1)


def _even(n: int, m: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(m, n)).round().astype(int))


@dataclass
class PrivacyIndex:
    names: list
    frames: torch.Tensor           # (R, size, size) float32 reference frames
    owner: torch.Tensor            # (R,) index into names
    feats: torch.Tensor | None     # (len(names), C) regressor features, or None
    thumbs: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.thumbs = _thumbs(self.frames)

    def save(self, path) -> None:
        torch.save({"names": self.names, "frames": self.frames.half(), "owner": self.owner, "feats": self.feats},
                   path)

    @staticmethod
    def load(path) -> "PrivacyIndex":
        d = torch.load(path, weights_only=False)
        return PrivacyIndex(d["names"], d["frames"].float(), d["owner"], d["feats"])


def _first_clip(video: np.ndarray, fps: float, cfg) -> torch.Tensor:
    """The regressor's first clip (1, 1, T, S, S) of a (T, H, W) uint8/float video at fps."""
    from echogen.data.resample import resize_frames
    from echogen.nets.regressor import at_regressor_rate

    v = torch.as_tensor(np.asarray(video))
    v = v.float() / 255 if v.dtype == torch.uint8 else v.float()
    if v.shape[-1] != cfg.size:
        v = resize_frames(v, cfg.size).clamp(0, 1)
    v = at_regressor_rate(v, fps, cfg)[:cfg.frames]
    if v.shape[0] < cfg.frames:
        v = torch.cat([v, v.new_zeros(cfg.frames - v.shape[0], *v.shape[1:])])
    return v[None, None]


def video_features(regressor, video: np.ndarray, fps: float) -> torch.Tensor | None:
    if regressor is None:
        return None
    from echogen.nets.regressor import extract_features

    model, cfg = regressor
    return extract_features(model, _first_clip(video, fps, cfg))[0]


def build_privacy_index(sources: list[Source], regressor=None, frames_per_video: int = 8, size: int = 112,
                        progress=None) -> PrivacyIndex:
    """Reference frames (and regressor features) of the training videos / images in `sources`."""
    import cv2

    from echogen.data.echonet import load_video
    from echogen.data.inputs import load_frames, prepare_array

    names, frames, owner, feats = [], [], [], []
    for k, src in enumerate(sources):
        if src.echonet_root is not None:
            v, fps = load_video(src.echonet_root, src.name)
            if v.shape[1:] != (size, size):
                v = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in v])
            v = v.astype(np.float32) / 255
        else:
            raw, info = load_frames(src.path)
            fps = float(info.get("fps", 0.0) or 0.0)
            # every frame of a clip when its features are wanted, else only the frames the SSIM uses
            keep = range(len(raw)) if len(raw) > 1 and regressor is not None and fps > 0 else \
                _even(len(raw), frames_per_video)
            v = np.stack([prepare_array(raw[j], size) for j in keep])
        idx = _even(len(v), frames_per_video)
        names.append(src.name)
        frames.append(torch.from_numpy(np.ascontiguousarray(v[idx])))
        owner += [k] * len(idx)
        if regressor is not None and len(v) > 1:
            feats.append(video_features(regressor, v, fps or regressor[1].fps))
        elif regressor is not None:
            feats.append(None)
        if progress:
            progress(k + 1, len(sources))
    f = None
    if feats and all(x is not None for x in feats):
        f = torch.stack(feats)
    return PrivacyIndex(names, torch.cat(frames), torch.tensor(owner), f)


def nearest(index: PrivacyIndex, video: np.ndarray, fps: float, regressor=None, frames_per_video: int = 8,
            shortlist: int = 8) -> dict:
    """Nearest reference video by frame SSIM and by feature distance, for a (T, H, W) video in [0, 1]."""
    from echogen.eval.metrics import ssim_per_frame

    v = torch.as_tensor(np.asarray(video, dtype=np.float32))
    syn = v[_even(len(v), frames_per_video)]
    if syn.shape[-1] != index.frames.shape[-1]:
        syn = torch.nn.functional.interpolate(syn[:, None], size=index.frames.shape[-2:], mode="area")[:, 0]
    d = torch.cdist(_thumbs(syn), index.thumbs)                      # (S, R) frame-pair distances
    best, si = d.min(0)                                              # per reference frame: closest synthetic one
    n_ref = len(index.names)
    per_video = torch.full((n_ref,), float("inf")).scatter_reduce(0, index.owner, best, "amin")
    cand = torch.topk(per_video, min(shortlist, n_ref), largest=False).indices
    ri = []
    for c in cand.tolist():                                          # each candidate's closest frame pair
        frames = (index.owner == c).nonzero()[:, 0]
        ri.append(int(frames[torch.argmin(best[frames])]))
    ri = torch.tensor(ri)
    si = si[ri]
    s = ssim_per_frame(syn[si], index.frames[ri])                    # (shortlist,)
    j = int(torch.argmax(s))
    out = {"NearestSSIMVideo": index.names[int(index.owner[ri[j]])], "NearestSSIM": round(float(s[j]), 4),
           "NearestFeatVideo": "", "NearestFeatDist": ""}
    if index.feats is not None and regressor is not None:
        f = video_features(regressor, np.asarray(video), fps)
        dist = torch.linalg.vector_norm(index.feats - f[None], dim=1)
        m = int(torch.argmin(dist))
        out["NearestFeatVideo"], out["NearestFeatDist"] = index.names[m], round(float(dist[m]), 4)
    return out


# ---------------------------------------------------------------------------------------- rows
def rank_file(out, rank: int) -> Path:
    return Path(out) / f"FileList.rank{rank}.csv"


def read_rows(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def done_rows(out) -> dict[str, dict]:
    """Rows already written by any rank of any earlier run (FileName -> row); the last one wins."""
    rows = {}
    for p in sorted(Path(out).glob("FileList.rank*.csv")):
        for r in read_rows(p):
            rows[r["FileName"]] = r
    return rows


def append_row(path, row: dict) -> None:
    path = Path(path)
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SYNTH_COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()


def merge(out) -> dict:
    """OUT/FileList.rank*.csv -> OUT/FileList.csv (kept rows whose video exists, by index) and
    OUT/Rejected.csv (the others). Returns counts."""
    out = Path(out)
    rows = sorted(done_rows(out).values(), key=lambda r: int(r.get("Index") or 0))
    kept = [r for r in rows if r.get("Accepted") == "1" and (out / "Videos" / (r["FileName"] + ".avi")).is_file()]
    rej = [r for r in rows if r not in kept]
    for name, rs in (("FileList.csv", kept), ("Rejected.csv", rej)):
        tmp = out / (name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=SYNTH_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rs)
        tmp.replace(out / name)
    reasons = {}
    for r in rej:
        reasons[r.get("Reason") or "?"] = reasons.get(r.get("Reason") or "?", 0) + 1
    return {"total": len(rows), "kept": len(kept), "rejected": len(rej), "reasons": reasons}


# ---------------------------------------------------------------------------------------- making
@dataclass
class SynthSettings:
    tolerance: float | None = 5.0        # None: no EF filter
    drop_near_copies: bool = False
    ssim_threshold: float = 0.9
    feat_threshold: float = 0.0          # <= this feature distance is a near-copy (0: feature flag off)
    split_out: str = "TRAIN"
    steps: dict | None = None
    guidance: dict | None = None
    sampler: dict | None = None


def make_item(cascade, item: Item, frame: np.ndarray, regressor, settings: SynthSettings, out: Path,
              privacy: PrivacyIndex | None = None, rank: int = 0) -> dict:
    """Sample one item, read its EF, check privacy, write its video; returns its row."""
    video, fps = sample_item(cascade, item, frame, settings)
    return finish_item(item, video, fps, regressor, settings, out, privacy, rank)


def sample_item(cascade, item: Item, frame: np.ndarray, settings: SynthSettings) -> tuple[np.ndarray, float]:
    """The cascade's part of an item (on the GPU when there is one): its last stage's video (T, H, W) in [0, 1]."""
    res = cascade.sample(frame, item.target_ef, seed=item.seed, steps=settings.steps,
                         guidance=settings.guidance, sampler=settings.sampler)[-1]
    return res.video[0, 0].detach().cpu().numpy(), float(res.fps)


def make_items(cascade, items, frame_of, regressor, settings: SynthSettings, out: Path,
               privacy: PrivacyIndex | None = None, rank: int = 0, overlap: bool = False):
    """Rows of `items` in order (a generator). frame_of(item) -> its conditioning frame. overlap: item k's EF read,
    privacy check and AVI write (finish_item, mostly CPU work) run in one worker thread while item k+1 samples, so
    on a GPU they cost no sampling time; the rows and files are the same as without (each item has its own seed)."""
    if not overlap:
        for it in items:
            yield make_item(cascade, it, frame_of(it), regressor, settings, out, privacy, rank)
        return
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-finish") as pool:
        pending = None
        for it in items:
            video, fps = sample_item(cascade, it, frame_of(it), settings)
            if pending is not None:
                yield pending.result()
            pending = pool.submit(finish_item, it, video, fps, regressor, settings, out, privacy, rank)
        if pending is not None:
            yield pending.result()


def finish_item(item: Item, video: np.ndarray, fps: float, regressor, settings: SynthSettings, out: Path,
                privacy: PrivacyIndex | None = None, rank: int = 0) -> dict:
    """An item's row from its sampled video: read its EF, check privacy, write the AVI (Videos/ or Rejected/)."""
    from echogen.data.video_io import write_video
    from echogen.eval.reading import video_ef

    read = video_ef(regressor, video, fps)
    read_ef = None if read is None else float(read[0])
    row = {"FileName": item.name, "EF": f"{item.target_ef:.2f}", "ESV": "", "EDV": "",
           "FrameHeight": video.shape[1], "FrameWidth": video.shape[2], "FPS": f"{fps:g}",
           "NumberOfFrames": video.shape[0], "Split": settings.split_out, "SourceVideo": item.source.name,
           "TargetEF": f"{item.target_ef:.2f}", "ReadEF": "" if read_ef is None else f"{read_ef:.2f}",
           "Seed": item.seed, "Rank": rank, "Index": item.index,
           "NearestSSIMVideo": "", "NearestSSIM": "", "NearestFeatVideo": "", "NearestFeatDist": "", "NearCopy": ""}
    reason = ""
    if settings.tolerance is not None and read_ef is not None and abs(read_ef - item.target_ef) > settings.tolerance:
        reason = "ef"
    if privacy is not None:
        row.update(nearest(privacy, video, fps, regressor))
        near = row["NearestSSIM"] >= settings.ssim_threshold or (
            settings.feat_threshold > 0 and row["NearestFeatDist"] != "" and
            row["NearestFeatDist"] <= settings.feat_threshold)
        row["NearCopy"] = int(near)
        if near and settings.drop_near_copies:
            reason = reason + "+near-copy" if reason else "near-copy"
    row["Accepted"] = 0 if reason else 1
    row["Reason"] = reason
    folder = out / ("Rejected" if reason else "Videos")
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / (item.name + ".avi"), video, fps)
    return row


def summary_text(counts: dict, seconds: float | None = None, made: int = 0, tolerance=None) -> str:
    s = (f"{counts['kept']} kept, {counts['rejected']} rejected of {counts['total']}"
         + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(counts['reasons'].items()))})" if counts["reasons"] else ""))
    if tolerance is not None:
        s += f"; EF filter +-{tolerance:g} points"
    if seconds and made:
        s += f"; made {made} in {seconds:.0f} s = {60.0 * made / seconds:.2f} videos/min"
    return s


def ef_bins_text(rows: list[dict], edges=EF_BIN_EDGES) -> str:
    efs = [float(r["EF"]) for r in rows if r.get("EF") not in ("", None)]
    if not efs:
        return ""
    h = np.histogram(efs, bins=edges)[0]
    return ", ".join(f"{edges[i]}-{edges[i + 1]}: {int(c)}" for i, c in enumerate(h))


__all__ = ["SYNTH_COLUMNS", "SynthError", "SynthSettings", "target_efs", "item_seed", "list_sources",
           "load_source_frame", "make_plan", "shard", "build_privacy_index", "nearest", "merge", "make_item",
           "sample_item", "finish_item", "make_items",
           "done_rows", "rank_file", "append_row", "summary_text"]


def combine(out, parts, link: bool = True) -> int:
    """An EchoNet-format folder OUT from parts [(root, rows)], rows: dicts of FileList rows of root (with
    FileName and Split, e.g. from read_filelist or read_rows); videos are symlinked (copied when link is False
    or symlinks fail). E.g. real VAL/TEST + a real TRAIN subset + a synthetic FileList.csv for
    train/train_regressor.py. The parts' VolumeTracings.csv rows of the written videos are combined too
    (train/train_tracer.py reads them), and so are their per-frame mask files (Masks/NAME.npz, linked the
    same way) where a part has them. Returns the number of rows written."""
    out = Path(out)
    (out / "Videos").mkdir(parents=True, exist_ok=True)
    written, seen = [], set()
    for root, rows in parts:
        root = Path(root)
        for r in rows:
            name = str(r["FileName"])
            if name in seen:
                raise SynthError(f"combine: {name} appears twice")
            src, dst = (root / "Videos" / (name + ".avi")).resolve(), out / "Videos" / (name + ".avi")
            if not src.is_file():
                continue
            _link_or_copy(src, dst, link)
            mask = root / "Masks" / (name + ".npz")
            if mask.is_file():
                (out / "Masks").mkdir(exist_ok=True)
                _link_or_copy(mask.resolve(), out / "Masks" / (name + ".npz"), link)
            seen.add(name)
            written.append({k: r.get(k, "") for k in FILELIST_COLUMNS})
    with open(out / "FileList.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FILELIST_COLUMNS)
        w.writeheader()
        for r in written:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    _combine_tracings(out, [Path(root) for root, _ in parts], seen)
    return len(written)


def _link_or_copy(src: Path, dst: Path, link: bool) -> None:
    """dst as a symlink to src (a copy when link is False or symlinks fail); an existing dst is kept."""
    import shutil

    if dst.exists():
        return
    try:
        if not link:
            raise OSError
        dst.symlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


def _combine_tracings(out: Path, roots: list, names: set) -> None:
    """OUT/VolumeTracings.csv: the tracing rows of the combined videos from every root that has them (so the
    combined folder trains the LV tracer too); no file when no root has tracings."""
    header, rows = None, []
    for root in dict.fromkeys(roots):
        path = root / "VolumeTracings.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            r = csv.reader(f)
            h = next(r, None)
            if h is None:
                continue
            if header is not None and h != header:
                raise SynthError(f"combine: {path} has columns {h}, another part has {header}")
            header = h
            rows += [row for row in r if row and Path(row[0]).stem in names]
    if header is None:
        return
    with open(out / "VolumeTracings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
