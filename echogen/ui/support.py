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
from echogen.eval.reading import video_ef
from echogen.weights.bundle import find_bundles, read_manifest

RANDOM_INIT = "random-init (UNTRAINED, testing only)"
SWEEP_EFS = (20, 35, 50, 65, 80)
DISPLAY = 224            # display side of each loop (28x28 base upscaled 8x)
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
    return Engine(casc, reg, f"{Path(choice).name} (preset {man.get('preset')})", untrained,
                  note or "regressor from this bundle")


def weight_choices(weights: str | None, random_init: bool, root=None) -> list[str]:
    """The picker's entries: --weights first, then every bundle under assets/weights, then random-init."""
    root = Path(root) if root else Path(DEFAULT_WEIGHTS).parent
    out = [str(Path(weights).resolve())] if weights else []
    out += [str(p.resolve()) for p in find_bundles(root) if str(p.resolve()) not in out]
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


READ_SIDE = 256          # frames of an upload are kept at most this big (for the clip's EF and the picker)


def read_input(path) -> tuple[np.ndarray, dict]:
    """The frames (uint8, each shrunk to at most READ_SIDE a side as it is decoded; at most the input
    limits' max_frames) of an upload and safe info (never header identifiers). Raises InputError."""
    from echogen.data.inputs import load_frames
    return load_frames(path, shrink=READ_SIDE)


def conditioning_frame(path, index: int = 0) -> tuple[np.ndarray, dict]:
    """Frame `index` of the upload, preprocessed to the model's 112x112 float [0,1] frame."""
    from echogen.data.inputs import prepare_frame
    return prepare_frame(path, frame=int(index))


def input_summary(info: dict, index: int) -> str:
    """One line about the input, built only from geometry/timing fields (no names, no dates)."""
    n = int(info.get("n_frames", 1))
    parts = [str(info.get("kind", "input")), f"{n} frame{'s' if n != 1 else ''}"]
    if info.get("fps"):
        parts.append(f"{float(info['fps']):.0f} fps")
    if n > 1:
        parts.append(f"conditioning on frame {int(index)}")
    if info.get("sector"):
        parts.append(f"sector: {info['sector']}")
    return " · ".join(parts)


def clip_ef(engine: Engine, frames: np.ndarray, fps: float) -> float | None:
    """The regressor's EF of an uploaded clip (None without a regressor or for a single frame)."""
    if engine.regressor is None or len(frames) < 2:
        return None
    from echogen.data.inputs import prepare_array
    size = engine.regressor[1].size
    f = np.asarray(frames)
    if not (f.ndim == 3 and f.shape[1:] == (size, size)):
        f = np.stack([prepare_array(x, size=size) for x in f[:256]])
    return float(video_ef(engine.regressor, f, fps or 0.0)[0])


# ------------------------------------------------------------------------------------------ outputs
def read_ef(engine: Engine, video: torch.Tensor, fps: float) -> tuple[float, list[float]] | None:
    """EF read from one generated video (1, T, H, W) or (T, H, W) in [0,1]; resized to the regressor's size."""
    return video_ef(engine.regressor, video, fps)


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
    the conditioning frame) that is dark in each frame."""
    from echogen.data.loops import dark_area_curve
    return dark_area_curve(video, frame)


def plot_curves(curves: dict, title: str, path) -> Path:
    """curves: label -> (times s, values). Writes a small PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.8, 2.6), dpi=110)
    for label, (t, y) in curves.items():
        ax.plot(t, 100 * np.asarray(y), marker="o", ms=2.5, lw=1.4, label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("dark area (% of sector)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


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


def run_generation(engine: Engine, frame: np.ndarray, ef: float, stages, steps: dict, guidance: dict,
                   seed: int, out: Path, callback=None) -> Generation:
    """One generation: sample, write display/download files for every stage, read EF, plot."""
    from echogen.data.video_io import write_video
    with engine.lock:   # a model's modules are not re-entrant across threads
        res: list[StageResult] = engine.cascade.sample(frame, float(ef), stages=list(stages), steps=steps,
                                                       guidance=guidance, seed=int(seed), callback=callback)
    stamp = "UNTRAINED" if engine.untrained else ""
    display, files, curves, stage_rows = {}, [], {}, []
    from echogen.data.loops import stage_loops
    loops, cut = stage_loops(res, frame)
    for r in res:
        full = r.video[0, 0].numpy()                                     # (T, H, W): the whole generated clip
        v = loops[r.name]                                                # one heart cycle: what is shown
        a, b = (cut.start, cut.stop) if cut.complete else (0, len(full))
        base = f"echogen_ef{ef:.0f}_seed{int(seed)}_{r.name}{_tag(engine)}"
        display[r.name] = write_video(out / f"show_{r.name}.mp4", display_frames(v, stamp=stamp), r.fps, loop=True)
        files += [write_video(out / f"{base}.mp4", v, r.fps, loop=True), write_video(out / f"{base}.gif", v, r.fps)]
        curves[f"{r.name} ({full.shape[-1]}px, {r.fps:g} fps)"] = (np.arange(len(full)) / r.fps,
                                                                   lv_area_curve(full, frame))
        read = read_ef(engine, r.video[0], r.fps)
        stage_rows.append({"stage": r.name, "sampled": r.sampled, "size": int(v.shape[-1]), "frames": int(len(full)),
                           "loop": [int(round(a * r.fps / res[-1].fps)), int(round(b * r.fps / res[-1].fps))],
                           "fps": r.fps, "seconds": round(r.seconds, 2), "nfe": r.nfe,
                           "note": r.note, "ef_read": None if read is None else round(read[0], 1)})
    last = res[-1]
    files.append(write_video(out / f"echogen_ef{ef:.0f}_seed{int(seed)}_{last.name}{_tag(engine)}_fullclip.mp4",
                             last.video[0, 0].numpy(), last.fps))
    final = read_ef(engine, res[-1].video[0], res[-1].fps)
    readout = {"requested_ef": float(ef), "read_ef": None, "difference": None, "per_clip_ef": [],
               "regressor": engine.regressor_note, "weights": engine.label, "untrained": engine.untrained,
               "seed": int(seed), "seconds": round(sum(r.seconds for r in res), 2), "stages": stage_rows,
               "loop": {"start": cut.start, "stop": cut.stop, "complete": cut.complete, "method": cut.method,
                        "frames": int(res[-1].video.shape[2])}}
    if final is not None:
        readout.update(read_ef=round(final[0], 1), difference=round(final[0] - float(ef), 1),
                       per_clip_ef=[round(e, 1) for e in final[1]])
    plot = plot_curves(curves, "blood-pool area over the generated loop", out / "curve.png")
    return Generation(res, display, files, plot, readout)


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
    Returns (grid MP4, table rows [requested, read, difference], download files, grid GIF)."""
    from echogen.data.video_io import write_video
    videos, labels, rows, files = [], [], [], []
    for i, ef in enumerate(efs):
        cb = (lambda s, k, n, _i=i: callback(_i, s, k, n)) if callback else None
        with engine.lock:
            res = engine.cascade.sample(frame, float(ef), stages=list(stages), steps=steps, guidance=guidance,
                                        seed=int(seed), callback=cb)
        last = res[-1]
        from echogen.data.loops import seamless_loop
        v = seamless_loop(last.video[0, 0].numpy(), last.fps, frame=frame).video    # one heart cycle
        read = read_ef(engine, last.video[0], last.fps)
        if read is None:
            rows.append([float(ef), None, None])
            labels.append([f"EF {ef:g}% asked", "no regressor"])
        else:
            rows.append([float(ef), round(read[0], 1), round(read[0] - ef, 1)])
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
