"""The pool quality gate: a generated case enters a pool only if the EF read back from its loop agrees
with the EF it was generated at.

Readers are a list, so the gate uses what the weights bundle has: the EF regressor now
(echogen.eval.reading.video_ef), and the LV tracer as well when the bundle ships one (echogen.tracer, or
echogen.nets.tracer, when that module exists: has_tracer / load_tracer / trace_video). Every reader must
read within `tolerance` EF points of the target; the case's verified EF (the one trainees see and are
scored against) is the mean of the readings, and the requested EF is kept beside it.

    readers = default_readers(engine_regressor, bundle_dir)
    v = verify(video, fps, target=50, readers=readers, tolerance=7)
    v.ok, v.ef, v.readings, v.reason
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

DEFAULT_TOLERANCE = 7.0          # EF points


@dataclass
class EFReader:
    """name: shown in records ("regressor", "tracer"); read(video (T, S, S) float [0, 1], fps) -> EF % or
    None (could not read this clip); area(video, fps) -> LV area per frame, when the reader traces the LV
    (used to find end-diastole for seamless loops)."""
    name: str
    read: Callable
    area: Callable | None = None


@dataclass
class Verdict:
    ok: bool
    ef: float | None                 # the verified EF: mean of the readings (None when nothing read)
    readings: dict = field(default_factory=dict)
    reason: str = ""


def regressor_reader(regressor) -> EFReader | None:
    """The bundle's EF regressor ((model, cfg) from echogen.nets.regressor.load_regressor), or None."""
    if regressor is None:
        return None
    from echogen.eval.reading import video_ef

    def read(video, fps):
        r = video_ef(regressor, np.asarray(video, np.float32), fps)
        return None if r is None else float(r[0])

    return EFReader("regressor", read)


def _tracer_module():
    for name in ("echogen.tracer", "echogen.nets.tracer", "echogen.eval.tracer"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def tracer_reader(bundle, device="cpu", loaded=None) -> EFReader | None:
    """The bundle's LV tracer as an EF reader (EF from traced volumes; area for end-diastole), or None when
    the tracer module is not installed or the bundle has no tracer. loaded: that tracer already loaded (an LVTracer;
    then `bundle` is not read again)."""
    mod = _tracer_module()
    if mod is None or not all(hasattr(mod, f) for f in ("has_tracer", "load_tracer", "trace_video")):
        return None
    if loaded is not None:
        model, cfg = loaded, loaded.cfg
    else:
        if bundle is None:
            return None
        try:
            if not mod.has_tracer(bundle):
                return None
            model, cfg = mod.load_tracer(bundle, device)
        except Exception:  # a tracer that cannot be loaded is reported by whoever loads bundles; no gate from it
            return None

    def read(video, fps):
        r = mod.trace_video(model, np.asarray(video, np.float32), fps, cfg)
        ef = r.get("ef")
        return None if r.get("failed") or ef is None or not np.isfinite(ef) else float(ef)

    def area(video, fps):
        r = mod.trace_video(model, np.asarray(video, np.float32), fps, cfg)
        a, idx = np.asarray(r["area"], np.float64), np.asarray(r.get("frames", np.arange(len(video))))
        if r.get("failed") or len(a) < 2:
            raise ValueError(r.get("failed") or "no trace")
        return np.interp(np.arange(len(video)), idx, a)      # back to every frame when traced at a lower rate

    return EFReader("tracer", read, area)


def default_readers(regressor, bundle=None, device="cpu") -> list[EFReader]:
    """Every EF reader the bundle offers: the regressor, then the LV tracer when present."""
    return [r for r in (regressor_reader(regressor), tracer_reader(bundle, device)) if r is not None]


def tracer_area(readers) -> Callable | None:
    """The first reader's LV-area function (for seamless loops), or None (then the dark-area curve)."""
    for r in readers or []:
        if r.area is not None:
            return r.area
    return None


def verify(video, fps: float, target: float, readers: list[EFReader], tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """Read the EF of `video` with every reader; ok when every reading is within tolerance of target."""
    if not readers:
        return Verdict(False, None, {}, "no EF reader (the bundle has neither a regressor nor a tracer)")
    readings = {}
    for r in readers:
        try:
            readings[r.name] = None if (x := r.read(video, fps)) is None else round(float(x), 2)
        except Exception as e:  # a reader failing on one clip rejects that clip, not the build
            readings[r.name] = None
            readings[f"{r.name}_error"] = f"{type(e).__name__}: {e}"[:200]
    vals = [readings[r.name] for r in readers]
    if any(v is None for v in vals):
        missing = [r.name for r in readers if readings[r.name] is None]
        return Verdict(False, None, readings, f"{', '.join(missing)} could not read the loop")
    ef = round(float(np.mean(vals)), 2)
    off = [f"{r.name} {readings[r.name]:.1f}" for r in readers if abs(readings[r.name] - target) > tolerance]
    if off:
        return Verdict(False, ef, readings, f"read {', '.join(off)} vs {target:g} requested (tolerance {tolerance:g})")
    return Verdict(True, ef, readings, "")
