"""The app: its pure helpers, and the real app driven through its API with gradio_client.

A tiny random cascade bundle (+ a tiny random EF regressor) keeps every generation to a few seconds
on the CPU. The app runs as a subprocess on a free local port, started with --share: offline, it must
say that it serves locally only and keep serving.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

from echogen.ui import support as S  # noqa: E402

TOGGLES = ["spatial", "temporal"]
STEPS = [2, 1.0, 1, 1.0, 1, 1.0, 1, 1.0]            # (steps, guidance) per stage slot


# ------------------------------------------------------------------------------ fixtures & helpers
def make_bundle(out: Path, regressor: bool = True) -> Path:
    from echogen.diffusion.cascade import Cascade
    from echogen.nets.regressor import EFRegressor, get_regressor_preset, save_regressor
    from echogen.weights.bundle import update_manifest
    Cascade.random("tiny").save(out)
    if regressor:
        cfg = get_regressor_preset("tiny")
        save_regressor(out / "regressor.safetensors", EFRegressor(cfg), cfg)
        update_manifest(out, regressor="regressor.safetensors")
    return out


def make_inputs(out: Path) -> dict:
    """A phantom clip (EchoNet-format AVI), its first frame as PNG, an empty and a garbage file."""
    import cv2
    from echogen.data.phantom import write_phantom
    from echogen.data.video_io import read_video
    write_phantom(out / "ph", 1, seed=3)
    avi = next((out / "ph" / "Videos").glob("*.avi"))
    frames, _ = read_video(avi)
    png = out / "frame.png"
    cv2.imwrite(str(png), frames[0])
    (out / "empty.png").write_bytes(b"")
    (out / "garbage.png").write_bytes(os.urandom(2000))
    return {"avi": avi, "png": png, "empty": out / "empty.png", "garbage": out / "garbage.png"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(args: list[str], log: Path, timeout: float = 300.0, env: dict | None = None, scheme: str = "http"):
    """Start app.py on a free port; return (process, url, log text so far) once it serves."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", **(env or {})}
    fh = open(log, "w")
    if "--results" not in args:                      # teaching results stay in the test's folder
        args = [*args, "--results", str(log.parent / "results")]
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--device", "cpu", *args],
                            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    t0 = time.time()
    while time.time() - t0 < timeout:
        text = log.read_text()
        if "serving locally only" in text or ("EchoGen serving at" in text and "--share" not in args):
            return proc, f"{scheme}://127.0.0.1:{port}/", text
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"app did not start within {timeout} s:\n{log.read_text()}")


def stop_app(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def video_path(out) -> str:
    return out["value"] if isinstance(out, dict) and "value" in out else (out.get("video") if isinstance(out, dict)
                                                                          else out)


def read_gif(path) -> list:
    from PIL import Image, ImageSequence
    return [np.asarray(p.convert("L")) for p in ImageSequence.Iterator(Image.open(path))]


def decode(path) -> np.ndarray:
    import av
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])


# ---------------------------------------------------------------------------------- pure functions
def test_display_frames_upscales_and_keeps_pixels():
    v = np.zeros((3, 8, 8), np.float32)
    v[:, 0, 0] = 1.0
    d = S.display_frames(v, side=64)
    assert d.shape == (3, 64, 64) and d.dtype == np.uint8
    assert (d[:, :8, :8] == 255).all() and (d[:, 8:, 8:] == 0).all()   # nearest: an 8x8 block per pixel


def test_grid_frames_layout():
    vids = [np.random.rand(4, 16, 16).astype(np.float32) for _ in range(3)]
    g = S.grid_frames(vids, [["EF 20%", "read 21%"]] * 3, side=48)
    assert g.shape == (4, 48 + 38, 3 * 48)


def test_weight_choices_and_no_weights_message(tmp_path):
    assert S.weight_choices(None, False, root=tmp_path) == []
    assert S.weight_choices(None, True, root=tmp_path) == [S.RANDOM_INIT]
    b = make_bundle(tmp_path / "w" / "b1", regressor=False)
    assert S.weight_choices(None, False, root=tmp_path / "w") == [str(b.resolve())]
    # a distilled ("fast") bundle comes first: the app's default; the multi-step one stays in the list
    from echogen.weights.bundle import update_manifest
    fast = make_bundle(tmp_path / "w" / "b2", regressor=False)
    update_manifest(fast, variant="fast")
    assert S.weight_choices(None, False, root=tmp_path / "w") == [str(fast.resolve()), str(b.resolve())]
    assert S.weight_choices(str(b), False, root=tmp_path / "w")[0] == str(b.resolve())   # --weights wins
    assert S.stage_count(str(b)) == 3 and S.stage_count(S.RANDOM_INIT) == 3
    msg = S.no_weights_message("assets/weights/demo")
    assert "no trained weights found at assets/weights/demo" in msg and "--random-init" in msg


def test_random_init_is_labelled_untrained_and_has_no_regressor():
    eng = S.load_engine(S.RANDOM_INIT)
    assert eng.untrained and eng.regressor is None and [s.name for s in eng.stages] == ["base", "spatial", "temporal"]
    assert S.display_frames(np.zeros((1, 28, 28)), stamp="UNTRAINED").max() > 0     # the label is burned in


def test_app_refuses_to_start_without_weights(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "app.py"), "--weights", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2 and "not a folder" in r.stderr
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "app.py"), "--weights", str(tmp_path / "empty")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2 and "manifest.json" in r.stderr and "Traceback" not in r.stderr


def test_input_summary_has_no_identifiers():
    s = S.input_summary({"kind": "dicom", "n_frames": 30, "fps": 30.0, "sector": "dicom-regions",
                         "PatientName": "DOE^JANE", "StudyDate": "20240101"}, 4)
    assert "30 frames" in s and "frame 4" in s and "DOE" not in s and "2024" not in s
    assert "sector from the DICOM's ultrasound regions" in s and "30 fps" in s
    # an array has no frame rate: the line says what LV tracing assumes (the app's EF differed from `ef --fps 30`)
    s = S.input_summary({"kind": "array", "n_frames": 30, "sector": "image-analysis"}, 0)
    assert "frame rate unknown (LV tracing assumes 25 fps" in s and "sector found in the image" in s, s


def test_generation_without_regressor_never_makes_up_an_ef(tmp_path):
    from echogen.ui.layout import readout_html
    eng = S.load_engine(str(make_bundle(tmp_path / "b", regressor=False)))
    frame = np.random.default_rng(0).random((112, 112), dtype=np.float32)
    calls = []
    g = S.run_generation(eng, frame, 40, ["temporal"], {"base": 2, "temporal": 1}, {}, 1, S.new_result_dir(tmp_path),
                         callback=lambda *a: calls.append(a))
    assert g.readout["read_ef"] is None and g.readout["regressor"] == "no EF regressor in this bundle"
    assert "no EF regressor in this bundle" in readout_html(g.readout)
    # which EF the networks got: said in the readout (no calibration in this bundle: the requested one)
    assert g.readout["conditioning"].startswith("the networks were given the asked EF 40 %")
    assert "EF conditioning: the networks were given the asked EF 40 %" in readout_html(g.readout)
    assert [s["sampled"] for s in g.readout["stages"]] == [True, False, True]      # spatial switched off
    assert calls[0] == ("base", 1, 2) and calls[-1] == ("temporal", 1, 1)
    assert len(g.files) == 7 and all(Path(f).stat().st_size > 0 for f in g.files)     # loops + the full clip
    assert g.files[-1].name.endswith("temporal_fullclip.mp4") and decode(g.files[-1]).shape[0] == 8
    assert decode(g.display["temporal"]).shape == (8, S.DISPLAY, S.DISPLAY)
    # each stage's caption gives the frames of the loop it shows (not the generated clip's, unless it is the clip)
    from echogen.ui.layout import stage_label
    for r, row in zip(g.stages, g.readout["stages"]):
        n = decode(g.display[r.name]).shape[0]
        assert row["loop_frames"] == n
        assert f"{n} frames ({n / r.fps:.2f} s" in stage_label(r, eng, row["loop_frames"], g.readout["loop"]["complete"])


def test_clip_ef_defaults_the_slider_only_when_there_is_a_regressor_and_a_clip(tmp_path):
    files = make_inputs(tmp_path)
    frames, info = S.read_input(files["avi"])
    with_reg = S.load_engine(str(make_bundle(tmp_path / "a")))
    without = S.load_engine(str(make_bundle(tmp_path / "b", regressor=False)))
    est = S.clip_ef(with_reg, frames, info["fps"])
    assert isinstance(est[0], float) and 0 < est[0] < 100 and est[1] == "EF regressor"
    assert S.clip_ef(without, frames, info["fps"]) is None
    assert S.clip_ef(with_reg, frames[:1], info["fps"]) is None


def test_clip_ef_reads_with_the_bundles_clip_reader_first(tmp_path, monkeypatch):
    """A bundle whose manifest says clip_reader "tracing" reads an upload by LV tracing; when tracing fails on
    the clip, the regressor reads it (and says so); without the key, the regressor reads first."""
    from echogen.weights.bundle import update_manifest
    files = make_inputs(tmp_path)
    frames, info = S.read_input(files["avi"])
    b = make_bundle(tmp_path / "a")
    assert S.load_engine(str(b)).clip_reader == "regressor"
    update_manifest(b, clip_reader="tracing")
    eng = S.load_engine(str(b))
    eng.tracer = ("model", "cfg")                     # a tracer whose readings the test controls
    monkeypatch.setattr(S, "trace_clip", lambda engine, video, fps: {"failed": "", "ef": 42.0})
    assert S.clip_ef(eng, frames, info["fps"]) == (42.0, "LV tracing")
    monkeypatch.setattr(S, "trace_clip", lambda engine, video, fps: {"failed": "no LV cavity found", "ef": float("nan")})
    ef, who = S.clip_ef(eng, frames, info["fps"])
    assert who == "EF regressor" and 0 < ef < 100


# ------------------------------------------------------------------------------ the app via its API
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    bundle = make_bundle(tmp / "bundle")
    files = make_inputs(tmp)
    proc, url, log = start_app(["--weights", str(bundle), "--share"], tmp / "app.log")
    yield {"url": url, "bundle": bundle.name, "log": log, **files}      # bundles are picked by name
    stop_app(proc)


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client
    return Client(served["url"], verbose=False)


def test_share_offline_says_local_only(served):
    assert "serving locally only at http://127.0.0.1:" in served["log"]


def _generate(client, served, path, ef=45, frame=0, toggles=TOGGLES, seed=7):
    from gradio_client import handle_file
    return client.predict(handle_file(str(path)), frame, ef, toggles, served["bundle"], seed, *STEPS,
                          api_name="/generate")


def test_generate_endpoint(client, served):
    out = _generate(client, served, served["png"], ef=45)
    assert len(out) == 3 + 3 + 4                        # a loop and a caption per stage, then the readout
    vids, caps, (html, plot, files, readout) = out[:3], out[3:6], out[6:]
    shown = [video_path(v) for v in vids[:3]]
    assert "temporal" in str(caps[2]) and "sampled" in str(caps[2])
    assert all(p and Path(p).is_file() for p in shown)
    assert [decode(p).shape[0] for p in shown] == [4, 4, 8]                   # tiny: 4 -> 4 -> 8 frames
    for p, cap, row in zip(shown, caps, readout["stages"]):                    # captions: the frames shown
        assert row["loop_frames"] == decode(p).shape[0] and f"{row['loop_frames']} frames" in str(cap)
    assert readout["requested_ef"] == 45 and readout["untrained"] is False
    assert readout["read_ef"] is not None and readout["per_clip_ef"]
    assert readout["difference"] == pytest.approx(readout["read_ef"] - 45, abs=0.11)
    assert "EF read from the loop" in html and Path(plot).is_file()
    names = sorted(Path(f).name for f in files)
    stages = ("base", "spatial", "temporal")
    assert names == sorted([f"echogen_ef45_seed7_{s}.{e}" for s in stages for e in ("mp4", "gif")]
                           + ["echogen_ef45_seed7_temporal_fullclip.mp4"])
    final = next(f for f in files if f.endswith("temporal.mp4"))
    assert decode(final).shape == (8, 16, 16)                                 # native resolution download
    # same seed -> same loop; a clip input with a frame picked also works
    again = _generate(client, served, served["png"], ef=45)
    # the shown MP4 (x264 made deterministic in issue 27: same frames -> same bytes) and the lossless GIF
    assert np.array_equal(decode(video_path(again[2])), decode(video_path(out[2])))
    gif = lambda out: next(f for f in out[-2] if f.endswith("temporal.gif"))     # noqa: E731
    assert np.array_equal(np.stack(read_gif(gif(again))), np.stack(read_gif(gif(out))))
    clip = _generate(client, served, served["avi"], ef=60, frame=5, toggles=["temporal"])
    assert [s["sampled"] for s in clip[-1]["stages"]] == [True, False, True]


def test_sweep_endpoint(client, served):
    from gradio_client import handle_file
    grid, table, files = client.predict(handle_file(str(served["png"])), 0, "20, 50, 80", TOGGLES, served["bundle"],
                                        3, *STEPS, api_name="/sweep")
    g = decode(video_path(grid))
    assert g.shape[0] == 8 and g.shape[2] == 3 * 192
    rows = table["data"]
    assert [r[0] for r in rows] == [20, 50, 80]
    assert all(r[2] == pytest.approx(r[1] - r[0], abs=0.11) for r in rows)
    assert all(r[3] in ("mean of the EF regressor and LV tracing", "EF regressor", "LV tracing") for r in rows)
    assert len(files) == 2 + 2 * 3 and all(Path(f).is_file() for f in files)


def test_bad_uploads_give_clear_errors_and_app_keeps_serving(client, served):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="file is empty"):
        _generate(client, served, served["empty"])
    with pytest.raises(AppError, match="the upload: not an image") as e:    # never the uploaded file's name
        _generate(client, served, served["garbage"])
    assert "garbage" not in str(e.value)
    with pytest.raises(AppError, match="out of range"):
        _generate(client, served, served["png"], frame=3)
    out = _generate(client, served, served["png"], ef=30, toggles=[])
    assert out[-1]["requested_ef"] == 30 and [s["sampled"] for s in out[-1]["stages"]] == [True, False, False]


def _outputs(out) -> dict:
    """name -> bytes of every file a /generate call returned (shown loops, downloads, plot), and the readout
    without its timings."""
    got = {f"shown_{i}": Path(video_path(v)).read_bytes() for i, v in enumerate(out[:3]) if video_path(v)}
    got.update({Path(f).name: Path(f).read_bytes() for f in out[8]})
    got["plot"] = Path(out[7]).read_bytes()
    readout = {k: v for k, v in out[-1].items() if k != "seconds"}
    readout["stages"] = [{k: v for k, v in s.items() if k != "seconds"} for s in readout["stages"]]
    return {"files": got, "readout": readout}


@pytest.mark.skipif(not (S.DEFAULT_WEIGHTS / "manifest.json").is_file(), reason="bundled demo weights absent")
def test_same_seed_same_loop_with_other_requests_and_a_concurrent_user(client, served):
    """Issue 27: two /generate calls with the same seed, frame and EF give byte-identical files (every stage's
    shown loop, the MP4 + GIF downloads, the plot) and the same readout, with a different request in between
    and another user's sweep running at the same time as the second call. The trained demo bundle (few steps)
    so the networks' part of the loop is not trivial."""
    from gradio_client import Client, handle_file
    demo = S.DEFAULT_WEIGHTS.name                         # bundles are picked by name (#22)

    def gen(c, seed=7, ef=45, toggles=TOGGLES):
        return c.predict(handle_file(str(served["png"])), 0, ef, toggles, demo, seed, *STEPS, api_name="/generate")

    first = _outputs(gen(client))
    other = _outputs(gen(client, seed=8, ef=60, toggles=["temporal"]))
    assert other["files"]["shown_0"] != first["files"]["shown_0"]          # the seed matters
    second_user = Client(served["url"], verbose=False)
    sweep = second_user.submit(handle_file(str(served["png"])), 0, "20, 50, 80", TOGGLES, served["bundle"], 3,
                               *STEPS, api_name="/sweep")
    again = _outputs(gen(client))
    assert len(sweep.result()[2]) == 2 + 2 * 3                            # the other user got their sweep
    assert again["readout"] == first["readout"]
    assert sorted(again["files"]) == sorted(first["files"]) and len(first["files"]) == 3 + 6 + 1 + 1  # + full clip
    differ = [name for name in first["files"] if again["files"][name] != first["files"][name]]
    assert not differ, f"same seed, different files: {differ}"


def test_lower_rate_stage_loops_play_in_step_with_the_last_stage(tmp_path):
    """A 23-frame loop at 25 fps lasts 0.92 s; its 12 frames at 12.5 fps last 0.96 s: side by side the base and
    spatial loops drifted a frame behind every 12 repeats. They are now written at the rate that gives the last
    stage's duration (and the caption says so); a rate more than 10 % off is never used."""
    import av
    from echogen.data.video_io import write_video
    from echogen.ui.layout import stage_label
    from echogen.ui.support import in_step_fps
    f = in_step_fps(12, 12.5, 23, 25.0)
    assert f == pytest.approx(12 * 25 / 23) and 12 / f == pytest.approx(23 / 25)
    assert in_step_fps(16, 12.5, 32, 25.0) == 12.5 and in_step_fps(10, 12.5, 32, 25.0) == 12.5   # exact / too far
    path = write_video(tmp_path / "b.mp4", np.zeros((12, 32, 32), np.uint8), f, loop=True)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert float(s.duration * s.time_base) == pytest.approx(23 / 25, abs=0.01)

    class R:   # a stage result as stage_label reads it
        name, sampled, fps = "base", True, 12.5
        video = np.zeros((1, 1, 16, 28, 28))

    class E:
        untrained = False
    assert "played at 13.0 fps to stay in step" in stage_label(R, E, 12, True, 0, f)
    assert "played at" not in stage_label(R, E, 12, True, 0, 12.5)
