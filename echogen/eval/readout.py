"""Honest readouts: what read the EF and what it learnt from, and whether an input looks like an
apical-4-chamber (A4C) echo at all.

    describe_dataset(root)               -> "EchoGen phantom v1 (376 TRAIN videos)"        (for training scripts)
    model_provenance(bundle, "regressor")-> "EF regressor 'small' (2000 steps) trained on ..."
    a = assess_input(frames, tracer=...) -> Assessment(score, ok, reasons, warning)
    a.warning                            -> "Warning: this does not look like an apical-4-chamber echo (score 0.21): ..."

The A4C score combines independent image checks (each gives a sub-score in [0, 1] and one line):
colour (photos and colour Doppler are coloured; B-mode is grey), the ultrasound sector (found by
echogen.data.inputs.find_sector; a fan narrower at the top than at the bottom, black around it), dark blood
pools inside the sector (chambers), and, with a tracer, whether it finds one plausible LV cavity with
confidence (and, for a clip, one that beats). score = the mean of the sub-scores, capped by the worst
one plus 0.25 x the mean of the others (a single hard failure cannot be averaged away, and two failures score
lower than one), and at 0.45 when two or more checks fail (sub-score < 0.7); below 0.5 the input gets a warning.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WARN_BELOW = 0.5
WHOLE_CLIP = " (the whole clip)"     # a frame's check reason that the clip it comes from failed
CLIP_CHECK_FRAMES = 96   # a clip's check traces at most this many of its frames (~3 s at 30 fps)
# the tracer check below this (its confidence < 0.66) warns on its own: an A4C echo has an LV the tracer finds.
# Simulator v1 / v2 TEST clips and first frames, as written and exported: >= 0.5 (one of 720), else 1.0; the real
# SonoSite clip 1.0 in every frame and export; Gradio's HF logo in grey 0.39 (passed at 0.64; session 18)
TRACER_ALONE_BELOW = 0.45


# ------------------------------------------------------------------------------------ provenance
def describe_dataset(root) -> str:
    """One line naming an EchoNet-format dataset: ROOT/dataset.json's "name" (and "version") when the
    writer left one, else recognised from its file names (phantoms: PH<seed>X<index>; v1 all at 50 fps, v2 at
    30-80 fps), with its size."""
    root = Path(root)
    name = None
    meta = root / "dataset.json"
    if meta.is_file():
        try:
            d = json.loads(meta.read_text())
            name = d.get("name") or d.get("description")
            if name and d.get("version") and str(d["version"]) not in name:
                name = f"{name} {d['version']}"
        except (json.JSONDecodeError, AttributeError):
            name = None
    from echogen.data.echonet import read_filelist
    try:
        rows = read_filelist(root)
    except (FileNotFoundError, ValueError):
        rows = []
    n_train = sum(r["Split"] == "TRAIN" for r in rows)
    if name is not None:
        return f"{name} ({n_train} TRAIN videos)"
    # Recognised by file name, per group (a folder combined from several datasets: echogen.data.synth.combine):
    # phantoms PH<seed>X<index> (v1 writes every video of a seed at 50 fps, v2 at 30-80 fps), synth's SY<seed>X<index>
    groups: dict = {}
    for r in rows:
        m = re.fullmatch(r"(PH|SY)(\d{4})X\d{6}", r["FileName"])
        key = (m.group(1), m.group(2)) if m else ("", "")
        groups.setdefault(key, []).append(r)
    parts = {}
    for (kind, _), rs in groups.items():
        if kind == "PH":
            fps = {round(float(r.get("FPS", 0) or 0), 3) for r in rs}
            label = "EchoGen phantom v1 (synthetic)" if fps == {50.0} else "EchoGen phantom v2 (synthetic)"
        elif kind == "SY":
            label = "EchoGen cascade samples (synthetic, echogen synth)"
        else:
            label = f"EchoNet-format data '{root.name}'"
        parts[label] = parts.get(label, 0) + sum(r["Split"] == "TRAIN" for r in rs)
    if len(parts) <= 1:
        return f"{next(iter(parts), f'EchoNet-format data {root.name!r}')} ({n_train} TRAIN videos)"
    return " + ".join(f"{label} ({n} TRAIN videos)" for label, n in sorted(parts.items(), key=lambda x: -x[1]))


DISAGREE = 10.0     # EF points between the regressor's and LV tracing's readings above which a readout warns


def disagreement(regressor_ef, tracing_ef) -> float | None:
    """|regressor - tracing| in EF points, rounded as printed (0.1), or None unless both read the clip."""
    if regressor_ef is None or tracing_ef is None:
        return None
    return round(abs(round(float(regressor_ef), 1) - round(float(tracing_ef), 1)), 1)


CLIP_READERS = ("regressor", "tracing")


def clip_reader(bundle) -> str:
    """Which reader's EF comes FIRST for a user's clip (`echogen ef`, the app's EF of an upload): the bundle
    manifest's "clip_reader" ("tracing" | "regressor"), set by whoever measured which of its readers reads
    real-looking clips better (the demo bundles: LV tracing; docs/RESULTS.md "Which reader reads a user's
    clip"); "regressor" when unset (older and converted bundles). Both readings are always shown."""
    from echogen.weights.bundle import MANIFEST, read_manifest

    b = Path(bundle) if bundle is not None else None
    if b is None or not (b / MANIFEST).is_file():
        return "regressor"
    r = read_manifest(b).get("clip_reader", "regressor")
    if r not in CLIP_READERS:
        raise ValueError(f"{b}: manifest clip_reader must be one of {CLIP_READERS}, got {r!r}")
    return r


def headline(readings: dict, first: str = "regressor") -> tuple[str, float] | None:
    """The EF to state first: (method, EF) of reader `first` when it read the clip, else of the other one;
    readings {"regressor": ..., "tracing": ...}, each an EF, None (did not read it), or a function () -> EF or
    None that is called only when its turn comes (a reader that need not run does not); None when neither
    read it."""
    for m in (first,) + tuple(r for r in CLIP_READERS if r != first):
        ef = readings.get(m)
        ef = ef() if callable(ef) else ef
        if ef is not None:
            return m, float(ef)
    return None


LOOP_READER = {"mean": "mean of the EF regressor and LV tracing", "regressor": "EF regressor", "tracing": "LV tracing"}


def loop_ef(regressor_ef, tracing_ef) -> tuple[float, str] | None:
    """The EF of a GENERATED loop as one number: (EF, who) with who a key of LOOP_READER; the mean of the two
    readings when both read the loop, else the one that did, None when neither did (None / NaN = no reading).

    One rule for every place that states a generated loop's EF: the app's headline and difference, the EF
    calibration's fit (train/fit_ef_calibration.py: the calibration makes this number match the asked EF) and
    `evaluate`'s "mean of both readers" rows. The mean, because on generated loops the two readers err in
    opposite directions near the ends of the EF range (the regressor saturates near 78 % and reads low EFs
    higher than tracing: docs/RESULTS.md "Session 14"); a user's real clip is read by the bundle's clip_reader
    first instead (headline)."""
    vals = {m: float(v) for m, v in (("regressor", regressor_ef), ("tracing", tracing_ef))
            if v is not None and np.isfinite(float(v))}
    if not vals:
        return None
    if len(vals) == 2:
        return float(np.mean(list(vals.values()))), "mean"
    (m, v), = vals.items()
    return v, m


def shipped_metadata(run_file, data, trained_on: str | None = None, stored_as: str = "", steps: str | None = None) -> dict:
    """Metadata of a reader shipped into a bundle (train/ship_tracer.py, train/ship_regressor.py): the run file's
    own (without kind and config, which the writer sets), `trained_on` (default: describe_dataset(data)), how it is
    stored and, when given, a steps label; model_provenance reads them back."""
    from echogen.weights.bundle import read_metadata

    meta = {k: v for k, v in read_metadata(run_file).items() if k not in ("echogen_kind", "echogen_config")}
    meta["trained_on"] = trained_on or describe_dataset(data)
    meta["stored_as"] = stored_as
    if steps:
        meta["steps"] = steps
    return meta


def model_provenance(weights, kind: str = "regressor", full: bool = False) -> str:
    """'<what> trained on <data>' for the regressor or tracer of a bundle (or a .safetensors file), from
    the file's metadata, else the bundle manifest's provenance, else says it is unrecorded. <data>: the datasets
    in a few words (echogen.weights.bundle.data_summary); full=True: the whole recorded training history."""
    from echogen.weights.bundle import data_summary, read_manifest, read_metadata, steps_summary

    p = Path(weights)
    man = {}
    if p.is_dir():
        man = read_manifest(p)
        name = man.get(kind)
        if not name:
            return f"no {kind} in {p}"
        p = p / name
    meta = read_metadata(p)
    label = {"regressor": "EF regressor", "tracer": "LV tracer"}.get(kind, kind)
    if meta.get("preset"):
        label += f" '{meta['preset']}'"
    steps = meta.get("steps") or (man.get("provenance", {}).get("trained_steps", {}) or {}).get(kind)
    if steps:
        label += f" ({steps if full else steps_summary(steps)} steps)"
    on = meta.get("trained_on") or man.get("provenance", {}).get("data")
    if not on:
        return f"{label} (training data not recorded in the weights)"
    return f"{label} trained on {on if full else data_summary(on)}"


# ------------------------------------------------------------------------------------ A4C score
@dataclass
class Assessment:
    score: float                       # 0 (not an A4C echo) .. 1 (looks like one)
    reasons: list = field(default_factory=list)      # one line per check: "ok|warn: what was seen"
    checks: dict = field(default_factory=dict)       # check -> sub-score

    @property
    def ok(self) -> bool:
        return self.score >= WARN_BELOW

    @property
    def warning(self) -> str | None:
        """One line for the CLI / app, or None when the input looks like an A4C echo."""
        if self.ok:
            return None
        bad = [r.split(": ", 1)[1] for r in self.reasons if r.startswith("warn")]
        whole = [b[:-len(WHOLE_CLIP)] for b in bad if b.endswith(WHOLE_CLIP)]
        if len(whole) > 1:          # said once for the line: "the whole clip: a; b"
            bad = [b for b in bad if not b.endswith(WHOLE_CLIP)] + ["the whole clip: " + "; ".join(whole)]
        return (f"Warning: this does not look like an apical-4-chamber echo (score {self.score:.2f} of 1): "
                + "; ".join(bad) + ". EF readings and generated loops from it are not meaningful.")

    def to_dict(self) -> dict:
        return {"score": round(self.score, 3), "ok": self.ok, "reasons": list(self.reasons),
                "checks": {k: round(v, 3) for k, v in self.checks.items()}, "warning": self.warning}


def _line(ok: bool, text: str) -> str:
    return ("ok: " if ok else "warn: ") + text


def _colour_check(frames: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, str]:
    """Coloured pixels over the whole image and, with the sector's mask, inside it: B-mode is grey; markers and
    ECG traces sit outside the sector, colour Doppler inside it."""
    if frames.ndim != 4:
        return 1.0, _line(True, "greyscale")
    rgb = frames[..., :3].astype(np.int16)
    coloured = (rgb.max(-1) - rgb.min(-1)) > 40
    frac = float(coloured.mean())
    inside = float(coloured[:, mask > 0].mean()) if mask is not None and mask.any() else 0.0
    if frac > 0.2:
        return 0.0, _line(False, f"{frac:.0%} of the pixels are coloured (a photo or colour Doppler, not B-mode)")
    if inside > 0.05:
        return 0.1, _line(False, f"{inside:.0%} of the sector is coloured (colour Doppler, not a B-mode echo)")
    if frac > 0.03:
        return 0.4, _line(False, f"{frac:.0%} of the pixels are coloured (colour Doppler or overlays)")
    return 1.0, _line(True, f"grey B-mode ({frac:.1%} coloured pixels)")


def _longest_straight_side(mask: np.ndarray) -> float:
    """Length of the outline's longest straight stretch (Douglas-Peucker, tolerance 2 % of the height), over the
    mask's height; stretches along the image border (a crop) do not count. A fan's sides run straight from its
    apex (simulator v1/v2 TEST clips: >= 0.36, median 0.67; the real SonoSite clip 0.53); a disc's outline is
    curved everywhere (Gradio's sample Earth-at-night video: 0.22)."""
    import cv2

    h, w = mask.shape
    ys = np.nonzero(mask)[0]
    height = float(ys.max() - ys.min() + 1)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    poly = cv2.approxPolyDP(max(contours, key=cv2.contourArea), 0.02 * height, True)[:, 0, :].astype(float)
    longest = 0.0
    for p, q in zip(poly, np.roll(poly, -1, axis=0)):
        on_border = any(abs(p[k] - v) <= 2 and abs(q[k] - v) <= 2 for k, v in ((0, 0), (0, w - 1), (1, 0), (1, h - 1)))
        if not on_border:
            longest = max(longest, float(np.hypot(*(q - p))) / height)
    return longest


def _sector_check(grey: np.ndarray, turned: bool | None = None, as_is: bool = False
                  ) -> tuple[float, str, np.ndarray | None]:
    """grey: (H, W) uint8 maximum projection of the clip. turned: whether the readers turn this input apex-up (the
    view applied, echogen.nets.orient.standard_view; None: none decided, then the same geometry rule decides here,
    unless as_is). An apex-down fan that is not turned is read as given, and fails (as_is: asked so)."""
    from echogen.data.inputs import fan_shape, find_sector, is_apex_down

    h, w = grey.shape
    mask = find_sector(grey)
    if mask is None:
        return 0.0, _line(False, "no ultrasound sector found"), None
    area = float(mask.mean())
    outside = grey[mask == 0]
    dark_out = float((outside < 25).mean()) if outside.size > 0.02 * h * w else 1.0
    shape = fan_shape(mask)
    # a fan: narrow top (taper). And the narrow top is the apex, above the fan's middle: text or a marker merged
    # into one corner of a rectangular (linear-probe) image also makes a narrow top, off to one side (US1_UNCR)
    score = 1.0
    notes = []
    if area > 0.97 and dark_out >= 0.5:
        score -= 0.6
        notes.append("the bright region fills the whole image (no sector edge)")
    elif area < 0.08:
        score -= 0.5
        notes.append(f"the sector covers only {area:.0%} of the image")
    if dark_out < 0.6:
        score -= 0.5
        notes.append(f"only {dark_out:.0%} of the pixels around it are black")
    apex_down = is_apex_down(shape)
    if turned is None:               # no view decided: the rule standard_view applies (apex_at_bottom)
        turned = apex_down and not as_is
    if turned:                       # the readers see it turned apex-up: judge that fan
        shape = fan_shape(np.ascontiguousarray(mask[::-1]))
    if apex_down and not turned:     # read as given (the real clip upside down read EF 88 / 72 %, upright 64 / 52)
        score -= 0.8
        how = " (orientation as-is)" if as_is else ""
        notes.append(f"it is a fan with its apex at the bottom (an apex-down display) read as given{how}; EchoGen's "
                     "models need the apex at the top")
    elif shape["taper"] > 0.8:
        score -= 0.45
        notes.append("it is not fan-shaped (as wide at the top as below; a linear or rectangular image)")
    elif shape["off_centre"] > 0.25:      # simulator v2's probe offsets and tilts: <= 0.19 (190 clips)
        score -= 0.45
        notes.append("it is not fan-shaped (its narrow top lies off to one side, not at an apex above the middle)")
    elif _longest_straight_side(mask) < 0.3:
        score -= 0.45
        notes.append("it is not fan-shaped (its outline is curved all round, like a disc: no straight sides from an "
                     "apex)")
    score = max(0.0, score)
    apex = " with its apex at the bottom (an apex-down display: read turned apex-up)" if turned else ""
    if score >= 0.7:
        return score, _line(True, f"a fan-shaped ultrasound sector{apex} covering {area:.0%} of the image"), mask
    return score, _line(False, "sector: " + "; ".join(notes)), mask


def _chamber_check(grey: np.ndarray, mask: np.ndarray | None) -> tuple[float, str]:
    """Blood pools are dark: an A4C sector has 15-65 % dark pixels in a few large blobs."""
    import cv2

    h, w = grey.shape
    inside = grey[mask > 0] if mask is not None else grey.ravel()
    if inside.size == 0:
        return 0.0, _line(False, "nothing inside the sector")
    thr = max(8.0, 0.35 * float(np.percentile(inside, 90)))
    dark = ((grey < thr) & ((mask > 0) if mask is not None else True)).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    frac = float(dark.sum() / max(inside.size, 1))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    big = int((stats[1:, cv2.CC_STAT_AREA] > 0.01 * inside.size).sum()) if n > 1 else 0
    if 0.12 <= frac <= 0.7 and big >= 1:
        return 1.0, _line(True, f"dark blood pools ({frac:.0%} of the sector, {big} large)")
    if frac < 0.12:
        return 0.2, _line(False, f"hardly any dark (blood-pool) region in the sector ({frac:.0%})")
    return 0.4, _line(False, f"the sector is mostly dark ({frac:.0%}); no chamber walls to see")


def _tracer_check(prepared: np.ndarray, tracer, fps: float) -> tuple[float, str]:
    """prepared: (T, S, S) uint8 frames as the models see them."""
    from echogen.nets.tracer import trace_video

    frames = prepared[:64] if fps <= 0 else prepared
    res = trace_video(tracer, frames, fps if len(frames) > 1 else 0.0)
    found = np.asarray(res.get("usable", res["found"]), bool)      # a cavity, and a plausible one (see trace_video)
    if found.mean() < 0.5:
        return 0.0, _line(False, f"the LV tracer finds no plausible left-ventricular cavity ({int(found.sum())} of "
                                 f"{len(found)} frames)")
    area = res["area"][found] / prepared.shape[1] / prepared.shape[2]
    conf = res["confidence"]
    notes = []
    score = min(1.0, max(0.0, (conf - 0.5) / 0.35))
    if conf < 0.75:
        notes.append(f"the LV tracer is unsure (confidence {conf:.2f})")
    if not 0.01 <= float(np.median(area)) <= 0.3:
        score *= 0.3
        notes.append(f"the traced 'LV' covers {float(np.median(area)):.0%} of the frame")
    if len(found) > 4 and found.all():
        change = float((area.max() - area.min()) / max(area.max(), 1e-9))
        if change < 0.03:
            score *= 0.5
            notes.append("the traced LV does not change size over the clip (no heartbeat)")
    if res["failed"] and len(found) > 1:
        score *= 0.5
        notes.append(f"tracing failed: {res['failed']}")
    if not notes:
        return score, _line(True, f"the LV tracer finds an LV cavity (confidence {conf:.2f}, "
                                  f"{float(np.median(area)):.0%} of the frame)")
    return score, _line(False, "; ".join(notes))


def assess_input(frames, tracer=None, fps: float = 0.0, prepared=None, orient=None,
                 view: dict | None = None) -> Assessment:
    """How much an input looks like an apical-4-chamber echo.

    frames: the raw input, uint8 (T, H, W) / (T, H, W, 3) or one frame (H, W) / (H, W, 3), as
    echogen.data.inputs.load_frames gives it. tracer: an LVTracer (or None: image checks only). fps: the clip's
    frame rate (0 unknown). prepared: the (T, 112, 112) model frames if already made (else made here with
    the generator's preprocessing; `prepared` frames given are taken to be in the standard view already). orient: an
    orientation network (echogen.nets.orient): the tracer sees the prepared frames in the standard view
    (standard_view: an apex-down input turned apex-up, a mirrored one mirrored back when orient says so; a mirrored
    upload is not an unsure trace). view: that view already decided (e.g. on the whole upload when `frames` is one
    frame of it; echogen.nets.orient.standard_view's dict), else decided here."""
    a = np.asarray(frames)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4 and a.shape[1] > 4
                       and a.shape[-1] != a.shape[-2]):
        a = a[None]
    if a.dtype != np.uint8:
        from echogen.data.inputs import _to_uint8
        a = _to_uint8(a)
    checks, reasons = {}, []
    grey = a if a.ndim == 3 else np.stack([_luma(f) for f in a])
    proj = grey.max(0)
    if tracer is not None and prepared is None:      # the tracer's frames, in the view (decided here if not given)
        from echogen.data.clips import prepare_clip
        from echogen.nets.orient import apply_view, standard_view
        prepared = prepare_clip(a, tracer.cfg.size)
        prepared, view = standard_view(prepared, orient) if view is None else (apply_view(prepared, view), view)
    s_sector, r_sector, mask = _sector_check(proj, None if view is None else bool(view.get("turned")),
                                             as_is=view is not None and view.get("mode") == "as-is")
    s, r = _colour_check(a, mask)
    checks["colour"], _ = s, reasons.append(r)
    checks["sector"], _ = s_sector, reasons.append(r_sector)
    s, r = _chamber_check(grey[len(grey) // 2], mask)
    checks["chambers"], _ = s, reasons.append(r)
    if tracer is not None:
        s, r = _tracer_check(np.asarray(prepared), tracer, fps)
        checks["tracer"], _ = s, reasons.append(r)
    vals = np.sort(np.array(list(checks.values())))
    # the worst check caps the score (a hard failure is not averaged away); how far above it the score may go
    # grows with how echo-like the REST looks, so a CT with one failed check scores above a colour photo that
    # fails two (both scored exactly 0.25 under a fixed "worst + 0.25")
    score = float(min(vals.mean(), vals[0] + 0.25 * vals[1:].mean()))
    if (vals < 0.7).sum() >= 2 or checks.get("tracer", 1.0) < TRACER_ALONE_BELOW:  # two signs, or no LV
        score = min(score, 0.45)
    return Assessment(score=score, reasons=reasons, checks=checks)


def _luma(rgb: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)


def frame_and_clip(frame_check: Assessment, clip_check: Assessment | None) -> Assessment:
    """The check of a frame a generation conditions on, taken from a clip: the lower-scoring of the frame's and
    the whole clip's checks (one frame of a non-echo video can pass what the clip fails: Gradio's Earth-at-night
    video is a curved disc in its max projection, while one frame's noisy rim has straight stretches)."""
    if clip_check is None or frame_check.score <= clip_check.score:
        return frame_check
    clip_check.reasons = [r + WHOLE_CLIP if r.startswith("warn") else r for r in clip_check.reasons]
    return clip_check


def assess_frames(frames, fps: float = 0.0, tracer=None, frame: int | None = None, orient=None,
                  view: dict | None = None) -> Assessment:
    """The check of a decoded input (echogen.data.clips.read_input: the one decode the app and the CLI share).
    frame: the frame a generation conditions on, judged with the clip it comes from (frame_and_clip); else the
    whole clip (its first CLIP_CHECK_FRAMES frames). view: the input's view, decided on the whole input
    (echogen.nets.orient.standard_view); else decided here with orient."""
    frames = np.asarray(frames)
    if frame is not None and view is None and len(frames) > 1:
        # one decision for the clip's check and the frame's (the frame is seen as the clip is: one frame alone is a
        # weaker witness), on the frames the EF is read from, as the app decides it (upload_view)
        from echogen.data.clips import ef_frames
        from echogen.nets.orient import standard_view
        view = standard_view(ef_frames(frames, 112), orient)[1]
    clip = (assess_input(frames[:CLIP_CHECK_FRAMES], tracer, fps, orient=orient, view=view)
            if len(frames) > 1 else None)
    if frame is None:
        return clip if clip is not None else assess_input(frames, tracer, 0.0, orient=orient, view=view)
    one = assess_input(frames[frame:frame + 1], tracer, 0.0, orient=orient, view=view)
    return frame_and_clip(one, clip)


def assess_file(path, tracer=None, frame: int | None = None, orient=None) -> Assessment:
    """assess_frames on a file (PNG / JPEG / DICOM / clip / .npy) decoded as the app and the CLI decode it
    (echogen.data.clips.read_input)."""
    from echogen.data.clips import read_input

    frames, info = read_input(path)
    return assess_frames(frames, float(info.get("fps") or 0.0), tracer, frame, orient)


def bundle_readers(weights, device=None) -> tuple:
    """(LV tracer or None, orientation network or None) of a weights bundle (None: neither), for the check."""
    from echogen.nets.orient import bundle_orient
    tracer = None
    if weights is not None:
        from echogen.nets.tracer import has_tracer, load_tracer
        if has_tracer(weights):
            tracer = load_tracer(weights, device)[0]
    return tracer, bundle_orient(weights, device)


def check_input(path, weights=None, frame: int | None = None, device=None) -> Assessment:
    """The A4C check the CLI runs before reading or generating: assess_file with the LV tracer (and the
    orientation network) of the weights bundle when it has them (image checks only otherwise)."""
    tracer, orient = bundle_readers(weights, device)
    return assess_file(path, tracer, frame, orient)
