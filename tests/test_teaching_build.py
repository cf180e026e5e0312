"""Building from the app's teaching state, in-process (tiny bundle): one build at a time, cancel keeps
nothing, limits and the disk budget refuse oversized builds, real clips only from datasets listed inside
--data-root (a path is refused without saying whether it exists), case media under random names."""
import json
import time

import numpy as np
import pytest

from test_app import make_bundle  # noqa: E402


@pytest.fixture
def state(tmp_path):
    from echogen.data.phantom import write_phantom
    from echogen.teaching.pool import PoolLimits
    from echogen.ui.support import Engines
    from echogen.ui.teaching import TeachingState

    bundle = make_bundle(tmp_path / "tinyb")
    write_phantom(tmp_path / "data" / "set1", 1, seed=1, workers=1)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "FileList.csv").write_text("FileName,EF,Split\n")
    frame = tmp_path / "f.npy"
    np.save(frame, np.full((112, 112), 0.4, np.float32))
    st = TeachingState(tmp_path / "results", Engines("cpu"), [str(bundle)], organisers={"teach"},
                       data_root=tmp_path / "data", limits=PoolLimits(frames=2, cases=10))
    st.frame, st.tmp = str(frame), tmp_path
    return st


def wait(state, jid, timeout=900):   # a hang guard: builds are slow on a loaded box
    t0 = time.time()
    while not state.jobs[jid]["done"]:
        assert time.time() - t0 < timeout
        time.sleep(0.1)
    return state.jobs[jid]


def test_one_build_at_a_time_and_cancel_keeps_nothing(state):
    from echogen.ui.teaching import cancel_build, job_status, start_build

    for bad, words in (("../evil", "name: use 1-60 letters"), ("x" * 5000, "name: use 1-60 letters"),
                       ("-x", "starting with a letter")):
        with pytest.raises(ValueError, match=words):
            start_build(state, "pool", bad, "tinyb", [state.frame], "30", allow_non_a4c=True)
    with pytest.raises(ValueError, match="steps must be a whole number from 1 to 50, got 999"):
        start_build(state, "pool", "many", "tinyb", [state.frame], "30", steps="base=999", allow_non_a4c=True)
    # a pool's name is taken while it holds cases; one that no case passed (never offered) gives it back
    for name, cases, status in (("full", [{"id": "c1"}], "ready"), ("empty", [], "ready"), ("busy", [], "building")):
        (state.pools_root / name).mkdir()
        (state.pools_root / name / "pool.json").write_text(json.dumps({"id": name, "status": status, "cases": cases}))
    for name in ("full", "busy"):            # busy: still being written, e.g. by `echogen pool` in another process
        with pytest.raises(ValueError, match=f"'{name}' already exists"):
            start_build(state, "pool", name, "tinyb", [state.frame], "30", allow_non_a4c=True)
    jid = start_build(state, "pool", "empty", "tinyb", [state.frame], "30", steps="base=50", allow_non_a4c=True)
    cancel_build(state)
    wait(state, jid)
    jid = start_build(state, "pool", "slow", "tinyb", [state.frame], "20, 30, 40, 50, 60", per_frame=2,
                      steps="base=50", tolerance=50, allow_non_a4c=True)
    with pytest.raises(ValueError, match="already running"):
        start_build(state, "pool", "other", "tinyb", [state.frame], "30")
    assert cancel_build(state) == "cancelling…"
    job = wait(state, jid)
    assert job["error"] == "cancelled; nothing was kept" and "Stopped" in job_status(state)
    assert not (state.pools_root / "slow").exists()
    assert cancel_build(state) == "no build is running"


def test_limits_disk_budget_and_data_root(state):
    from echogen.ui.teaching import start_build

    with pytest.raises(ValueError, match="build too large: frames 3 > 2"):
        start_build(state, "pool", "big", "tinyb", [state.frame] * 3, "30")
    with pytest.raises(ValueError, match="choose one of the listed weights"):
        start_build(state, "pool", "w", "/etc", [state.frame], "30")
    assert state.datasets() == ["set1"]
    for bad in ("/etc", "../outside", str(state.tmp / "outside"), "set1/../../outside"):
        with pytest.raises(ValueError, match="^choose one of the listed datasets$"):
            start_build(state, "review", "r", "tinyb", dataset=bad, real_n=1)
    # issue 19: a flat grey frame is no apical-4-chamber echo: refused unless the organiser overrides
    with pytest.raises(ValueError, match="not apical-4-chamber echoes: source frame 1 of 1 \\(score"):
        start_build(state, "pool", "n", "tinyb", [state.frame], "30")
    state.disk_budget_mb = 1e-6
    with pytest.raises(ValueError, match="disk budget"):
        start_build(state, "pool", "d", "tinyb", [state.frame], "30", allow_non_a4c=True)


def test_roles_and_opaque_media(state, tmp_path):
    from types import SimpleNamespace

    assert state.is_organiser(SimpleNamespace(username="teach"))
    assert not state.is_organiser(SimpleNamespace(username="ann")) and not state.is_organiser(None)
    clip = tmp_path / "results" / "pools" / "ward" / "cases" / "abc.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"x")
    shown = state.media(clip)
    assert "ward" not in shown and "abc" not in shown and shown.startswith(str(state.media_dir))
    assert state.served_paths() == []
    media = state.media_dir
    state.close()                                               # the app's exit: no links to case videos left
    assert not media.exists()
    from echogen.ui.teaching import make_auth, parse_credentials
    auth = make_auth(parse_credentials(["ann:1,bob:2"], "--auth"), parse_credentials(["teach:3"], "--organiser"))
    assert auth("ann", "1") and auth("teach", "3") and not auth("ann", "3") and not auth("eve", "")
    with pytest.raises(ValueError, match="must differ"):
        make_auth({"x": "1"}, {"x": "2"})
