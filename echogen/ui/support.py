"""The app's work, without any UI: load weights, read inputs, generate, read EF, write result files.

app.py is a thin Gradio shell over these functions; every one of them is usable (and tested) without
gradio. Results go into a fresh folder per request so concurrent users never share files.
"""
from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from echogen.diffusion.cascade import DEFAULT_WEIGHTS, Cascade, StageResult
from echogen.config import get_preset
from echogen.data.clips import read_input  # noqa: F401  (one decode for the app and the CLI: S.read_input)
from echogen.data.inputs import SECTOR_SAID
from echogen.eval.reading import video_ef
from echogen.eval.readout import LOOP_READER, loop_ef
from echogen.nets.orient import view_note
from echogen.weights.bundle import find_bundles, read_manifest

RANDOM_INIT = "random-init (UNTRAINED, testing only)"
SWEEP_EFS = (20, 35, 50, 65, 80)
DISPLAY = 224            # display side of each loop (28x28 base upscaled 8x)
SHOWN_IN_VIEW = "the loops are generated and shown in the standard view"    # view line's tail when the input moved
TRACE_FPS_UNKNOWN = 25.0   # the rate LV tracing assumes for a clip without one (an .npy array)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

# what each stage adds, shown next to its toggle (keyed by the demo/paper stage names)
STAGE_ROLE = {"spatial": "spatial super-resolution", "temporal": "temporal super-resolution (frame rate)",
              "ssr": "spatial super-resolution", "tsr": "temporal super-resolution"}


def no_weights_message(path) -> str:
    return (f"no trained weights found at {path} — pass --weights DIR, "
            "or --random-init for untrained noise (testing only)")


# ------------------------------------------------------------------------------------------ engine
@dataclass
class Engine:
    """A loaded cascade (+ EF regressor when its bundle has one) and how to label its outputs."""
    cascade: Cascade
    regressor: object = None          # (model, cfg) or None
    label: str = ""
    untrained: bool = False
    regressor_note: str = "no EF regressor in this bundle"
    lock: threading.Lock = field(default_factory=threading.Lock)
    tracer: object = None             # (LVTracer, TracerConfig) or None: LV tracing (echogen.nets.tracer)
    regressor_from: str = ""          # "EF regressor ... trained on ..." (echogen.eval.readout.model_provenance)
    tracer_from: str = ""             # "LV tracer ... trained on ..."
    history: dict = field(default_factory=dict)   # "regressor" / "tracer" -> the whole recorded training history
    clip_reader: str = "regressor"    # who reads an uploaded clip's EF first (echogen.eval.readout.clip_reader)
    orient: object = None             # OrientNet or None: is an upload shown mirrored? (echogen.nets.orient)

    @property
    def stages(self):
        return self.cascade.config.stages


def load_engine(choice: str, device="cpu") -> Engine:
    """choice: a bundle folder, or RANDOM_INIT (the demo preset with random weights). A bundle whose
    manifest provenance says untrained=true (e.g. saved from Cascade.random) is labelled UNTRAINED too."""
    if choice == RANDOM_INIT:
        return Engine(Cascade.random("demo", device), None, "demo preset, random weights", untrained=True,
                      regressor_note="no EF regressor (random-init weights)")
    casc = Cascade.load(choice, device)
    from echogen.nets.regressor import load_regressor
    man = read_manifest(choice)
    # a bundle without a regressor is fine; a listed regressor that fails to load is an error, not "absent"
    reg, note = (load_regressor(choice, device), "") if man.get("regressor") else (None, "no EF regressor in this bundle")
    untrained = str((man.get("provenance") or {}).get("untrained", "")).lower() in ("1", "true", "yes")
    # likewise the LV tracer: optional, but one the manifest names must load
    from echogen.eval.readout import clip_reader, model_provenance
    tracer = None
    if man.get("tracer"):
        from echogen.nets.tracer import load_tracer
        tracer = load_tracer(choice, device)
    orient = None
    if man.get("orientation"):
        from echogen.nets.orient import load_orient
        orient = load_orient(choice, device)[0]
    return Engine(casc, reg, f"{Path(choice).name} (preset {man.get('preset')})", untrained,
                  note or "regressor from this bundle", tracer=tracer,
                  regressor_from=model_provenance(choice, "regressor") if reg is not None else "",
                  tracer_from=model_provenance(choice, "tracer") if tracer is not None else "",
                  history={k: model_provenance(choice, k, full=True) for k, m in (("regressor", reg), ("tracer", tracer))
                           if m is not None},
                  clip_reader=clip_reader(choice), orient=orient)


def weight_choices(weights: str | None, random_init: bool, root=None) -> list[str]:
    """The picker's entries: --weights first, then every bundle under assets/weights (distilled "fast" bundles
    first: the default where one ships; the multi-step bundle stays selectable as the quality choice), then
    random-init."""
    root = Path(root) if root else Path(DEFAULT_WEIGHTS).parent
    out = [str(Path(weights).resolve())] if weights else []
    found = sorted(find_bundles(root), key=lambda p: (read_manifest(p).get("variant") != "fast", p.name))
    out += [str(p.resolve()) for p in found if str(p.resolve()) not in out]
    if random_init:
        out.append(RANDOM_INIT)
    return out


def stage_count(choice: str) -> int:
    """Number of cascade stages of a picker entry, read from its manifest (no weights loaded)."""
    if choice == RANDOM_INIT:
        return len(get_preset("demo").stages)
    return len(read_manifest(choice)["cascade"]["stages"])


class Engines:
    """Loads each picked bundle once; thread-safe."""

    def __init__(self, device="cpu", precision: str = "auto", compile_mode: str | None = None):
        """precision / compile_mode: Cascade.set_speed for every bundle loaded (compile_mode "default",
        "reduce-overhead" or "max-autotune"; None = eager)."""
        self.device, self._cache, self._lock = device, {}, threading.Lock()
        self.precision, self.compile_mode = precision, compile_mode

    def get(self, choice: str) -> Engine:
        with self._lock:
            if choice not in self._cache:
                eng = load_engine(choice, self.device)
                eng.cascade.set_speed(self.precision, self.compile_mode)
                self._cache[choice] = eng
            return self._cache[choice]


# ------------------------------------------------------------------------------------------ inputs
def list_examples(folder) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    exts = IMAGE_EXTS | {".dcm", ".avi", ".mp4", ".npy"}
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in exts and p.is_file()]


def conditioning_frame(path, index: int = 0, engine: Engine | None = None) -> tuple[np.ndarray, dict]:
    """Frame `index` of the upload, preprocessed to the model's 112x112 float [0,1] frame, in the standard view
    (apex at the top, the LV on the right) as decided once for the upload (upload_view); info["view"] then says
    what was done."""
    from echogen.data.inputs import prepare_frame
    from echogen.nets.orient import apply_view
    frame, info = prepare_frame(path, frame=int(index))
    view = upload_view(engine, path)
    frame = apply_view(frame, view)
    note = view_note(view, then=SHOWN_IN_VIEW)
    return frame, ({**info, "view": note} if note else info)


_VIEWS: dict = {}
_VIEWS_LOCK = threading.Lock()


def clip_view(engine: Engine | None, f: np.ndarray):
    """(frames in the standard view, view) for model frames f (T, S, S) of an upload (echogen.nets.orient.
    standard_view with the engine's network: an apex-down upload turned apex-up, a mirrored one mirrored back;
    without a network only the turn, which is geometry)."""
    from echogen.nets.orient import standard_view
    return standard_view(f, getattr(engine, "orient", None))


def upload_view(engine: Engine | None, path, frames=None) -> dict:
    """How is this upload shown (apex-down? mirrored?)? Decided once per upload on the frames its EF is read from
    (clip_ef), so the conditioning frame, the clip's EF and the input check agree (echogen.nets.orient.standard_view;
    without an orientation network: never mirrored). frames: the upload as read_input gives it, when already read
    (else it is read here)."""
    st = Path(path).stat()
    key = (str(path), st.st_mtime_ns, st.st_size, id(engine) if engine is not None else None)
    with _VIEWS_LOCK:
        if key in _VIEWS:
            return _VIEWS[key]
    from echogen.data.clips import ef_frames
    if frames is None:
        frames, _ = read_input(path)
    view = clip_view(engine, ef_frames(np.asarray(frames), 112))[1]
    with _VIEWS_LOCK:
        if len(_VIEWS) > 256:
            _VIEWS.clear()
        _VIEWS[key] = view
    return view


def input_summary(info: dict, index: int) -> str:
    """One line about the input, built only from geometry/timing fields (no names, no dates)."""
    n = int(info.get("n_frames", 1))
    parts = [str(info.get("kind", "input")), f"{n} frame{'s' if n != 1 else ''}"]
    if info.get("fps"):
        parts.append(f"{float(info['fps']):.0f} fps")
    elif n > 1:
        parts.append(f"frame rate unknown (LV tracing assumes {TRACE_FPS_UNKNOWN:g} fps, the EF regressor its own "
                     "frame rate)")
    if n > 1:
        parts.append(f"conditioning on frame {int(index)}")
    if info.get("sector"):
        parts.append(SECTOR_SAID[info["sector"]])
    if info.get("view"):
        parts.append(str(info["view"]))
    return " · ".join(parts)


def clip_ef(engine: Engine, frames: np.ndarray, fps: float, both: bool = False):
    """The EF of an uploaded clip and who read it ("LV tracing" / "EF regressor"): the bundle's clip reader
    first (echogen.eval.readout.clip_reader: manifest "clip_reader"), the other when that one cannot read
    the clip; None for a single frame or with no reader. both=True: ((ef, who), other) where other is the
    other reader's (ef, who) or None, read too (as `echogen ef` does), so a disagreement can be shown."""
    if len(frames) < 2 or (engine.regressor is None and engine.tracer is None):
        return (None, None) if both else None
    from echogen.data.clips import ef_frames
    from echogen.eval.readout import headline
    f = ef_frames(frames, 112)                         # as `echogen ef` prepares a clip: one crop for all frames
    f = clip_view(engine, f)[0]                        # ... in the standard view (a mirrored upload read mirrored back)

    def tracing():
        t = trace_clip(engine, f, fps or TRACE_FPS_UNKNOWN)
        return None if t["failed"] or not np.isfinite(t["ef"]) else float(t["ef"])

    def regressor():
        return video_ef(engine.regressor, f, fps or 0.0)[0]

    readers = {"regressor": regressor if engine.regressor is not None else None,
               "tracing": tracing if engine.tracer is not None else None}
    name = {"tracing": "LV tracing", "regressor": "EF regressor"}
    if not both:   # the second reader runs only when the first cannot read the clip (headline calls them in turn)
        top = headline(readers, engine.clip_reader)
        return None if top is None else (top[1], name[top[0]])
    efs = {m: r() if r is not None else None for m, r in readers.items()}      # each reader once
    top = headline(efs, engine.clip_reader)
    if top is None:
        return None, None
    rest = [m for m in efs if m != top[0] and efs[m] is not None]
    return (top[1], name[top[0]]), ((float(efs[rest[0]]), name[rest[0]]) if rest else None)


# ------------------------------------------------------------------------------------------ outputs
def read_ef(engine: Engine, video: torch.Tensor, fps: float) -> tuple[float, list[float]] | None:
    """EF read from one generated video (1, T, H, W) or (T, H, W) in [0,1]; resized to the regressor's size."""
    return video_ef(engine.regressor, video, fps)


def loop_reading(regressor_read, tracing: dict | None) -> tuple[float, str] | None:
    """A generated loop's EF as its readout states it: echogen.eval.readout.loop_ef of the regressor's reading
    (read_ef's result or None) and the tracing EF of tracing_summary (or None), both as shown (0.1)."""
    return loop_ef(None if regressor_read is None else round(regressor_read[0], 1),
                   None if tracing is None else tracing["ef"])


def in_step_fps(n: int, fps: float, n_last: int, fps_last: float) -> float:
    """The rate at which a lower-rate stage's loop of n frames plays for exactly as long as the last stage's loop
    (n_last frames at fps_last), so loops shown side by side stay in step: a 23-frame loop at 25 fps (0.92 s)
    maps to 12 frames at 12.5 fps (0.96 s), which would drift by a frame every 12 repeats. Within 10 % of the
    stage's own rate (else its own rate: not the same beat)."""
    f = n * fps_last / max(n_last, 1)
    return f if abs(f / fps - 1) <= 0.1 else fps


def display_frames(video: np.ndarray, side: int = DISPLAY, stamp: str = "") -> np.ndarray:
    """(T, h, w) float [0,1] -> (T, side, side) uint8; small videos upscaled with nearest neighbour so
    their real resolution stays visible, larger ones bicubic. `stamp` is burned into the corner."""
    interp = cv2.INTER_NEAREST if video.shape[-1] * 2 <= side else cv2.INTER_CUBIC
    u8 = (np.clip(video, 0, 1) * 255 + 0.5).astype(np.uint8)
    out = np.stack([cv2.resize(f, (side, side), interpolation=interp) for f in u8])
    if stamp:
        for f in out:
            cv2.putText(f, stamp, (6, side - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1, cv2.LINE_AA)
    return out


def lv_area_curve(video: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Blood-pool area over time (echogen.data.loops.dark_area_curve): the fraction of the sector (found on
    the conditioning frame) that is dark in each frame. The plot's fallback when the bundle has no LV tracer."""
    from echogen.data.loops import dark_area_curve
    return dark_area_curve(video, frame)


# ------------------------------------------------------------------------------------------ LV tracing
CONTOUR_RGB = (255, 196, 0)


def _tracer_frames(engine: Engine, video) -> torch.Tensor:
    """(T, h, w) float [0, 1] (or uint8) -> (T, S, S) float at the tracer's size."""
    from echogen.data.resample import resize_frames
    v = torch.as_tensor(np.asarray(video))
    v = v.float() / 255.0 if v.dtype == torch.uint8 else v.float()
    size = engine.tracer[1].size
    return resize_frames(v, size).clamp(0, 1) if v.shape[-1] != size else v


def trace_clip(engine: Engine, video, fps: float) -> dict | None:
    """LV tracing of a generated clip (T, h, w) in [0, 1] (echogen.nets.tracer.trace_video): per traced frame
    LV area / volume (method of disks), ED / ES, EF, confidence, `failed`; plus "area_all" / "volume_all"
    interpolated back to every frame of the clip (traced at <= 25 fps). None without a tracer."""
    if engine.tracer is None:
        return None
    from echogen.nets.tracer import trace_video
    model, cfg = engine.tracer
    v = _tracer_frames(engine, video)
    res = trace_video(model, v, float(fps), cfg)
    n, idx = len(v), np.asarray(res["frames"])
    res["area_all"] = np.interp(np.arange(n), idx, res["area"]) if len(idx) > 1 else np.asarray(res["area"], float)
    res["volume_all"] = (np.interp(np.arange(n), idx, res["volume"]) if len(idx) > 1
                         else np.asarray(res["volume"], float))
    return res


def tracing_summary(res: dict, fps: float) -> dict:
    """The JSON-able part of a trace_clip result for the readout (no per-pixel arrays)."""
    failed = res.get("failed") or ""
    ok = not failed and np.isfinite(res.get("ef", np.nan))
    idx = np.asarray(res["frames"])
    return {"ef": round(float(res["ef"]), 1) if ok else None, "failed": failed if not ok else "",
            "ed_frame": int(idx[res["ed"]]) if ok and res["ed"] >= 0 else None,
            "es_frame": int(idx[res["es"]]) if ok and res["es"] >= 0 else None,
            "edv_px3": round(float(res["edv"]), 1) if ok else None,
            "esv_px3": round(float(res["esv"]), 1) if ok else None,
            "beats": len(res.get("beats") or []), "confidence": round(float(res["confidence"]), 3),
            "interpolated_frames": int((~np.asarray(res.get("usable", []), bool)).sum()),
            "traced_fps": float(res["fps"]), "fps": float(fps)}


def lv_masks(engine: Engine, video) -> np.ndarray | None:
    """The traced LV cavity of every frame of `video` (T, h, w): (T, S, S) probabilities, or None without
    a tracer. Used to draw the contour over a displayed loop."""
    if engine.tracer is None:
        return None
    from echogen.nets.tracer import predict_probs
    return predict_probs(engine.tracer[0], _tracer_frames(engine, video)).numpy()


def overlay_contour(frames: np.ndarray, probs: np.ndarray, threshold: float = 0.5,
                    rgb=CONTOUR_RGB) -> np.ndarray:
    """Display frames (T, side, side) uint8 grey + LV probabilities (T, S, S) -> (T, side, side, 3) uint8 with
    the traced LV contour drawn (probabilities resized smoothly, then thresholded: a sub-pixel contour)."""
    t, side = frames.shape[0], frames.shape[-1]
    out = np.repeat(frames[..., None], 3, axis=-1).copy()
    for k in range(t):
        p = cv2.resize(probs[min(k, len(probs) - 1)].astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
        m = (p >= threshold).astype(np.uint8)
        if m.any():
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out[k], contours, -1, tuple(int(c) for c in rgb), max(1, side // 112), cv2.LINE_AA)
    return out


def plot_curves(curves: dict, title: str, path, ylabel: str = "dark area (% of sector)") -> Path:
    """curves: label -> (times s, values in 0..1). Writes a small PNG (the fallback blood-pool plot)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.8, 2.6), dpi=110)
    for label, (t, y) in curves.items():
        ax.plot(t, 100 * np.asarray(y), marker="o", ms=2.5, lw=1.4, label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_volume(res: dict, source_fps: float, path, loop: tuple | None = None, label: str = "") -> Path:
    """LV volume over time from LV tracing (method of disks), as % of the end-diastolic volume (of the
    largest volume when tracing failed), with ED and ES marked and the shown loop [start, stop) shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = np.asarray(res["frames"]) / float(source_fps)
    vol = np.asarray(res["volume"], np.float64)
    s = tracing_summary(res, source_fps)
    ref = float(res["edv"]) if s["ef"] is not None and res["edv"] > 0 else max(float(vol.max()), 1e-9)
    y = 100 * vol / ref
    fig, ax = plt.subplots(figsize=(4.8, 2.6), dpi=110)
    if loop is not None:
        ax.axvspan(loop[0] / source_fps, loop[1] / source_fps, color="#14b8a6", alpha=0.12, lw=0, label="shown loop")
    ax.plot(t, y, marker="o", ms=2.5, lw=1.4, color="#0f766e", label=label or "LV volume (traced)")
    bad = ~np.asarray(res.get("usable", np.ones(len(t), bool)), bool)
    if bad.any() and len(bad) == len(t):
        ax.plot(t[bad], y[bad], "x", color="#b45309", ms=7, mew=1.6, label="no plausible trace (interpolated)")
    if s["ef"] is not None:
        ed, es = int(res["ed"]), int(res["es"])
        ax.plot([t[ed]], [y[ed]], "^", color="#b91c1c", ms=8, label="ED")
        ax.plot([t[es]], [y[es]], "v", color="#1d4ed8", ms=8, label="ES")
        title = f"LV volume by LV tracing (method of disks): EF {s['ef']:.1f} %"
    else:
        import textwrap           # the reason can be long: wrapped to the plot's width, never past its edges
        title = textwrap.fill(f"LV volume by LV tracing: no EF ({s['failed']})", 70)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("LV volume (% of EDV)" if s["ef"] is not None else "LV volume (% of max)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.3))  # below: never on the curve
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def input_check(engine: Engine, path, index: int | None = None, frames=None, info=None):
    """Does the upload look like an apical-4-chamber echo? echogen.eval.readout.assess_frames (what `generate` and
    `ef` run too) with the bundle's LV tracer when it has one (image checks only otherwise). index: the frame a
    generation conditions on, judged with the clip it comes from; else the clip. The tracer sees the frames in the
    upload's view (upload_view). Returns an Assessment; a check that itself fails falls back to the image checks."""
    from echogen.eval.readout import assess_frames
    if frames is None:
        frames, info = read_input(path)
    frames = np.asarray(frames)
    fps = float((info or {}).get("fps") or 0.0)
    tracer = engine.tracer[0] if engine.tracer is not None else None
    try:
        view = upload_view(engine, path, frames) if path is not None else None   # the upload's, not one frame's
        return assess_frames(frames, fps, tracer, index, getattr(engine, "orient", None), view)
    except Exception as e:  # noqa: BLE001  a tracer failing on an odd input is itself a sign; never block on it
        a = assess_frames(frames, fps, None, index)
        a.reasons.append(f"warn: LV tracing failed on this input ({type(e).__name__})")
        a.checks["tracer"] = 0.0
        a.score = min(a.score, 0.45)
        return a


def new_result_dir(root=None) -> Path:
    """A fresh folder for one request (concurrent users never share or overwrite files)."""
    return Path(tempfile.mkdtemp(prefix="echogen-result-", dir=root))


def _tag(engine: Engine) -> str:
    return "_UNTRAINED" if engine.untrained else ""


@dataclass
class Generation:
    stages: list            # StageResult
    display: dict           # stage name -> display MP4 path
    files: list             # downloads (native-resolution MP4 + GIF per stage)
    plot: Path
    readout: dict
    overlay: dict = field(default_factory=dict)     # stage name -> display MP4 with the traced LV contour


def ef_readers(engine: Engine, regressor_read, tracing: dict | None) -> list[dict]:
    """Who read the EF of the loop, with what each model was trained on: one row per reader the bundle has."""
    rows = []
    if engine.regressor is not None:
        rows.append({"method": "EF regressor", "how": "a video network reads the EF from the clip",
                     "ef": None if regressor_read is None else round(regressor_read[0], 1),
                     "model": engine.regressor_from or engine.regressor_note,
                     "history": engine.history.get("regressor", "")})
    if tracing is not None:
        rows.append({"method": "LV tracing", "how": "LV traced per frame; ED/ES from the area curve; volumes by the "
                     "single-plane method of disks", "ef": tracing["ef"], "failed": tracing["failed"],
                     "model": engine.tracer_from, "history": engine.history.get("tracer", ""),
                     "confidence": tracing["confidence"],
                     "ed_frame": tracing["ed_frame"], "es_frame": tracing["es_frame"],
                     "interpolated_frames": tracing.get("interpolated_frames", 0)})
    return rows


def run_generation(engine: Engine, frame: np.ndarray, ef: float, stages, steps: dict, guidance: dict,
                   seed: int, out: Path, callback=None, check=None) -> Generation:
    """One generation: sample, write display/download files for every stage, read EF, plot.

    With an LV tracer in the bundle, the final clip is traced: its LV-area curve cuts the loop (ED to ED), the
    plot is LV volume over time (ED / ES marked), the tracing EF joins the readout, and every stage gets a
    second display loop with the traced contour drawn (Generation.overlay). check: the input's Assessment
    (echogen.eval.readout), reported in the readout."""
    from echogen.data.video_io import write_video
    with engine.lock:   # a model's modules are not re-entrant across threads
        res: list[StageResult] = engine.cascade.sample(frame, float(ef), stages=list(stages), steps=steps,
                                                       guidance=guidance, seed=int(seed), callback=callback)
    stamp = "UNTRAINED" if engine.untrained else ""
    last = res[-1]
    full_last = last.video[0, 0].numpy()
    traced = trace_clip(engine, full_last, last.fps)                     # None without a tracer
    area_fn = None
    if traced is not None and not traced["failed"]:
        area_fn = lambda v, fps, _a=traced["area_all"]: _a            # noqa: E731  the cut uses the traced LV area
    display, overlay, files, curves, stage_rows = {}, {}, [], {}, []
    from echogen.data.loops import stage_loops
    loops, cut = stage_loops(res, frame, tracer=area_fn)
    for r in res:
        full = r.video[0, 0].numpy()                                     # (T, H, W): the whole generated clip
        v = loops[r.name]                                                # one heart cycle: what is shown
        a, b = (cut.start, cut.stop) if cut.complete else (0, len(full))
        base = f"echogen_ef{ef:.0f}_seed{int(seed)}_{r.name}{_tag(engine)}"
        shown = display_frames(v, stamp=stamp)
        show_fps = in_step_fps(len(v), r.fps, len(loops[last.name]), last.fps) if cut.complete else r.fps
        display[r.name] = write_video(out / f"show_{r.name}.mp4", shown, show_fps, loop=True)
        if engine.tracer is not None:
            overlay[r.name] = write_video(out / f"show_{r.name}_lv.mp4", overlay_contour(shown, lv_masks(engine, v)),
                                          show_fps, loop=True)
        files += [write_video(out / f"{base}.mp4", v, r.fps, loop=True), write_video(out / f"{base}.gif", v, r.fps)]
        if traced is None:
            curves[f"{r.name} ({full.shape[-1]}px, {r.fps:g} fps)"] = (np.arange(len(full)) / r.fps,
                                                                       lv_area_curve(full, frame))
        read = read_ef(engine, r.video[0], r.fps)
        stage_rows.append({"stage": r.name, "sampled": r.sampled, "size": int(v.shape[-1]), "frames": int(len(full)),
                           "loop": [int(round(a * r.fps / res[-1].fps)), int(round(b * r.fps / res[-1].fps))],
                           "loop_frames": int(len(v)),                    # frames of the loop shown (captions)
                           "fps": r.fps, "show_fps": round(show_fps, 3), "seconds": round(r.seconds, 2), "nfe": r.nfe,
                           "note": r.note, "ef_read": None if read is None else round(read[0], 1)})
    files.append(write_video(out / f"echogen_ef{ef:.0f}_seed{int(seed)}_{last.name}{_tag(engine)}_fullclip.mp4",
                             full_last, last.fps))
    final = read_ef(engine, last.video[0], last.fps)
    tracing = None if traced is None else tracing_summary(traced, last.fps)
    readers = ef_readers(engine, final, tracing)
    readout = {"requested_ef": float(ef), "read_ef": None, "difference": None, "per_clip_ef": [],
               "read_by": None, "readers": readers, "tracing": tracing,
               "regressor": engine.regressor_note, "weights": engine.label, "untrained": engine.untrained,
               "seed": int(seed), "seconds": round(sum(r.seconds for r in res), 2), "stages": stage_rows,
               "loop": {"start": cut.start, "stop": cut.stop, "complete": cut.complete, "method": cut.method,
                        "frames": int(res[-1].video.shape[2]), "crossfade": int(cut.crossfade)},
               "plot": "LV volume (LV tracing)" if traced is not None else "blood-pool (dark-pixel) area",
               "conditioning": engine.cascade.describe_conditioning(float(ef)),
               "input_check": None if check is None else check.to_dict()}
    if final is not None:
        readout["per_clip_ef"] = [round(e, 1) for e in final[1]]
    read = loop_reading(final, tracing)
    if read is not None:          # the mean of both readers (what the EF calibration targets), else the one that read it
        readout.update(read_ef=round(read[0], 1), difference=round(round(read[0], 1) - float(ef), 1),
                       read_by=LOOP_READER[read[1]])
    if traced is not None:
        plot = plot_volume(traced, last.fps, out / "curve.png", (a, b) if cut.complete else None,
                           f"{last.name} ({full_last.shape[-1]}px, {last.fps:g} fps)")
    else:
        plot = plot_curves(curves, "blood-pool (dark-pixel) area — no LV tracer in this bundle", out / "curve.png")
    return Generation(res, display, files, plot, readout, overlay)


def grid_frames(videos: list[np.ndarray], labels: list[list[str]], side: int = 192, stamp: str = "") -> np.ndarray:
    """Tiles side by side (same T), each with a caption band above it: (T, side + band, n*side) uint8."""
    band = 38
    tiles = []
    for v, lines in zip(videos, labels):
        d = display_frames(v, side, stamp)
        cap = np.zeros((len(d), band, side), np.uint8)
        for k, line in enumerate(lines):
            cv2.putText(cap[0], line, (6, 15 + 17 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1, cv2.LINE_AA)
        cap[:] = cap[0]
        t = np.concatenate([cap, d], axis=1)
        t[:, :, -1] = 60                                                 # thin separator
        tiles.append(t)
    return np.concatenate(tiles, axis=2)


def run_sweep(engine: Engine, frame: np.ndarray, efs, stages, steps: dict, guidance: dict, seed: int,
              out: Path, callback=None) -> tuple[Path, list, list, Path]:
    """The counterfactual sweep: the same frame and the same noise (seed) at each EF.
    Returns (grid MP4, table rows [requested, read, difference, read by], download files, grid GIF); the read EF
    of each loop as the Generate tab states it (echogen.eval.readout.loop_ef: the mean of both readers)."""
    from echogen.data.video_io import write_video
    videos, labels, rows, files = [], [], [], []
    for i, ef in enumerate(efs):
        cb = (lambda s, k, n, _i=i: callback(_i, s, k, n)) if callback else None
        with engine.lock:
            res = engine.cascade.sample(frame, float(ef), stages=list(stages), steps=steps, guidance=guidance,
                                        seed=int(seed), callback=cb)
        last = res[-1]
        from echogen.data.loops import seamless_loop
        clip = last.video[0, 0].numpy()
        traced = trace_clip(engine, clip, last.fps)                      # the LV tracer's area cuts the loop
        area = None if traced is None or traced["failed"] else traced["area_all"]
        v = seamless_loop(clip, last.fps, area=area, frame=frame).video                 # one heart cycle
        read = loop_reading(read_ef(engine, last.video[0], last.fps),     # as the Generate tab's readout reads it
                            None if traced is None else tracing_summary(traced, last.fps))
        if read is None:
            rows.append([float(ef), None, None, None])
            labels.append([f"EF {ef:g}% asked", "no EF reading"])
        else:
            rows.append([float(ef), round(read[0], 1), round(read[0] - ef, 1), LOOP_READER[read[1]]])
            labels.append([f"EF {ef:g}% asked", f"read {read[0]:.1f}% ({read[0] - ef:+.1f})"])
        videos.append(v)
        base = f"echogen_sweep_ef{ef:.0f}_seed{int(seed)}{_tag(engine)}"
        files += [write_video(out / f"{base}.mp4", v, last.fps), write_video(out / f"{base}.gif", v, last.fps)]
    from echogen.data.loops import repeat_to
    n = int(np.median([len(v) for v in videos]))       # each loop's cycle stretched to one length: the grid loops too
    grid = grid_frames([repeat_to(v, n) for v in videos], labels, stamp="UNTRAINED" if engine.untrained else "")
    grid_mp4 = write_video(out / f"echogen_sweep_grid_seed{int(seed)}{_tag(engine)}.mp4", grid, res[-1].fps, loop=True)
    grid_gif = write_video(out / f"echogen_sweep_grid_seed{int(seed)}{_tag(engine)}.gif", grid, res[-1].fps)
    return grid_mp4, rows, [grid_mp4, grid_gif] + files, grid_gif
