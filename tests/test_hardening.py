"""Hardening of the classroom server (issue #22), fast tier: bounded inputs, results-database faults,
login throttling, request validation, privacy helpers. The running app is tested in test_app_hardening.py.

Hostile fixtures are made here at a tiny file size (never committed): a 1 KB GIF whose 40 frames are
4096x4096 on screen, an 8192x8192 RGBA PNG, a 45 KB MP4 with 3000 frames.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from echogen.data import inputs as I
from echogen.data.inputs import InputError, Limits, load_frame, load_frames, prepare_frame
from echogen.teaching.db import DB_NAME, JOURNAL_NAME, ResultsDB, ResultsDBError


from echogen.data.hostile import hostile_gif, huge_png, long_mp4  # noqa: E402


def echo_like(side: int) -> np.ndarray:
    """A bright fan on black (sector finder food) of any size."""
    img = np.zeros((side, side), np.uint8)
    yy, xx = np.mgrid[:side, :side]
    fan = (yy > side * 0.1) & (np.abs(xx - side / 2) < (yy - side * 0.1) * 0.7) & (yy < side * 0.9)
    img[fan] = (80 + 100 * np.random.default_rng(0).random(fan.sum())).astype(np.uint8)
    return img


# ------------------------------------------------------------------------------------------ input limits
def test_hostile_gif_refused_from_its_header(tmp_path):
    p = hostile_gif(tmp_path / "scan.png")                     # renamed .png: the type check cannot catch it
    assert p.stat().st_size < 2000
    for fn in (lambda: load_frames(p), lambda: prepare_frame(p)):
        with pytest.raises(InputError, match="too large") as e:
            fn()
        assert "\n" not in str(e.value) and "Mpx" in str(e.value)


def test_hostile_gif_under_raised_limits_decodes_one_frame_at_a_time(tmp_path, monkeypatch):
    p = hostile_gif(tmp_path / "scan.gif", side=1100, n=40)
    lim = Limits(max_megapixels=2, max_frames=10, work_side=256)
    decoded = []
    real = I._page_array
    monkeypatch.setattr(I, "_page_array", lambda page: decoded.append(page.size) or real(page))
    frames, info = load_frames(p, lim)
    assert frames.shape[0] == 10 and max(frames.shape[1:3]) <= 256          # 10 frames read, each shrunk
    assert "first 10 of 40" in info["truncated"] and len(decoded) == 10
    decoded.clear()
    out, info = prepare_frame(p, frame=3, limits=lim)
    assert out.shape == (112, 112) and len(decoded) == 1                     # only the frame asked for


def test_huge_png_refused_before_decoding(tmp_path, monkeypatch):
    p = huge_png(tmp_path / "big.png")
    assert p.stat().st_size < 2_000_000
    monkeypatch.setattr(I, "_page_array", lambda page: pytest.fail("decoded an over-large frame"))
    with pytest.raises(InputError, match=r"too large \(8192x8192 px = 67.1 Mpx"):
        prepare_frame(p)


def test_sector_search_runs_on_a_shrunk_frame(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.fromarray(echo_like(2400)).save(p)
    seen = []
    real = I.find_sector
    monkeypatch.setattr(I, "find_sector", lambda g: seen.append(g.shape) or real(g))
    out, info = prepare_frame(p)
    assert out.shape == (112, 112) and seen and max(max(s) for s in seen) <= Limits().work_side
    assert info["crop"][3] > 1500                                            # crop reported in the file's pixels
    seen.clear()
    I.prepare_array(echo_like(2400))                                         # in-memory frames too
    assert max(max(s) for s in seen) <= Limits().work_side


def test_tiny_mp4_with_huge_frame_count_reads_at_most_max_frames(tmp_path):
    p = long_mp4(tmp_path / "clip.mp4")
    assert p.stat().st_size < 100_000
    frames, info = load_frames(p)
    assert len(frames) == Limits().max_frames == 600 and "first 600" in info["truncated"]
    lim = Limits(max_frames=50)
    assert len(load_frames(p, lim)[0]) == 50
    with pytest.raises(InputError, match="only the first 50 frames are read"):
        load_frame(p, 60, lim)
    f, info = load_frame(p, 10, lim)
    assert f.shape == (64, 64, 3) and info["n_frames"] == 50


def test_file_size_limit_and_env_configuration(tmp_path):
    p = tmp_path / "f.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)).save(p)
    with pytest.raises(InputError, match=r"file is too large \(0 MB; at most 0.01 MB\)"):
        prepare_frame(p, limits=Limits(max_file_mb=0.01))
    lim = Limits.from_env({"ECHOGEN_MAX_FILE_MB": "5", "ECHOGEN_MAX_MEGAPIXELS": "1.5", "ECHOGEN_MAX_FRAMES": "7"})
    assert (lim.max_file_mb, lim.max_pixels, lim.max_frames) == (5.0, 1_500_000, 7)
    with pytest.raises(ValueError, match="ECHOGEN_MAX_FRAMES"):
        Limits.from_env({"ECHOGEN_MAX_FRAMES": "lots"})
    with pytest.raises(ValueError, match="positive"):
        Limits(max_frames=0)


def test_cli_prepare_limits(tmp_path, capsys):
    from echogen.cli.main import main as cli_main
    p = hostile_gif(tmp_path / "scan.gif", side=1100, n=3)
    assert cli_main(["prepare", "--image", str(p), "--out", str(tmp_path / "o.png"), "--max-megapixels", "1"]) == 2
    err = capsys.readouterr().err
    assert "too large" in err and err.count("\n") == 1
    assert cli_main(["prepare", "--image", str(p), "--out", str(tmp_path / "o.png"), "--max-file-mb", "0.0001"]) == 2
    assert "file is too large" in capsys.readouterr().err


# -------------------------------------------------------------------------------- results database faults
def _answer(db, sid, pos):
    return db.add_answer(sid, pos, f"case{pos}", truth_label="real", answer_label="generated", confidence=3)


def _read_only(db, monkeypatch):
    """Write access lost: every connection is opened read-only (works for root too, unlike chmod)."""
    def ro():
        from contextlib import contextmanager

        @contextmanager
        def cm():
            con = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True, isolation_level=None, timeout=1)
            con.row_factory = sqlite3.Row
            try:
                yield con
            finally:
                con.close()
        return cm()
    monkeypatch.setattr(db, "_connect", ro)


def test_db_is_wal_with_a_busy_timeout(tmp_path):
    db = ResultsDB(tmp_path)
    assert db.wal
    with db._connect() as con:
        assert con.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_results_folder_that_cannot_be_made_is_one_line_without_paths(tmp_path):
    (tmp_path / "blocker").write_text("a file where the folder should be")
    with pytest.raises(ResultsDBError) as e:
        ResultsDB(tmp_path / "blocker" / "results")
    msg = str(e.value)
    assert "cannot be created" in msg and "\n" not in msg and str(tmp_path) not in msg
    (tmp_path / "r" / DB_NAME).mkdir(parents=True)                           # unreadable: not a file
    with pytest.raises(ResultsDBError, match="not a file"):
        ResultsDB(tmp_path / "r")


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root ignores file permissions")
def test_read_only_results_folder_is_reported(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        with pytest.raises(ResultsDBError, match="read-only|cannot be"):
            ResultsDB(tmp_path / "ro")
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_corrupt_db_is_moved_aside_and_a_new_one_started_loudly(tmp_path, capsys):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite " * 500)
    db = ResultsDB(tmp_path)
    err = capsys.readouterr().err
    aside = list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not sqlite")
    assert "WARNING" in err and aside[0].name in err and "moved aside" in db.notice and "new, empty" in db.notice
    sid = db.start_session("review", "set1", rater="ann")
    assert _answer(db, sid, 0) and len(ResultsDB(tmp_path).answers()) == 1


def test_truncated_db_is_moved_aside(tmp_path):
    db = ResultsDB(tmp_path)
    sid = db.start_session("review", "set1")
    for i in range(50):
        _answer(db, sid, i)
    with sqlite3.connect(tmp_path / DB_NAME) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = (tmp_path / DB_NAME).read_bytes()
    (tmp_path / DB_NAME).write_bytes(data[:100] + b"\x00" * 50 + data[150:len(data) // 2])
    db2 = ResultsDB(tmp_path, quiet=True)
    assert "corrupt" in db2.notice and list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))


def test_failed_write_is_reported_kept_and_retried(tmp_path, monkeypatch):
    db = ResultsDB(tmp_path, quiet=True)
    sid = db.start_session("trainer", "pool1", rater="ann")
    with monkeypatch.context() as m:
        _read_only(db, m)
        assert _answer(db, sid, 0) is True                              # accepted: kept, not dropped
        msg = db.unsaved_message()
        assert "1 answer is kept but not yet saved" in msg and "read-only" in msg and "\n" not in msg
        assert db.session(sid)["rater"] == "ann"                        # the session is still usable
        journal = [json.loads(x) for x in (tmp_path / JOURNAL_NAME).read_text().splitlines()]
        assert journal[0]["answer"]["position"] == 0
        with pytest.raises(ResultsDBError, match="cannot start a session: the results folder or database is read-only"):
            db.start_session("trainer", "pool1")
    assert _answer(db, sid, 1) is True                                  # write access back: both written
    assert [r["position"] for r in db.answers(session=sid)] == [0, 1]
    assert db.unsaved == [] and db.unsaved_message() == "" and not (tmp_path / JOURNAL_NAME).exists()


def test_journal_of_a_crashed_run_is_replayed(tmp_path, monkeypatch):
    db = ResultsDB(tmp_path, quiet=True)
    sid = db.start_session("review", "set1")
    _read_only(db, monkeypatch)
    _answer(db, sid, 0)
    _answer(db, sid, 1)
    monkeypatch.undo()
    again = ResultsDB(tmp_path, quiet=True)                              # the next start of the app
    assert [r["position"] for r in again.answers(session=sid)] == [0, 1] and not again.unsaved


def test_db_corrupted_while_running_keeps_the_answers(tmp_path):
    db = ResultsDB(tmp_path, quiet=True)
    sid = db.start_session("review", "set1", rater="bob")
    _answer(db, sid, 0)
    for f in tmp_path.glob(DB_NAME + "*"):
        f.write_bytes(b"garbage " * 1000)
    assert _answer(db, sid, 1) is True and "corrupt" in db.notice
    assert _answer(db, sid, 2) is True
    rows = db.answers(session=sid)                                       # in the new database: 1 and 2
    assert [r["position"] for r in rows] == [1, 2] and rows[0]["rater"] == "bob" and not db.unsaved


# ------------------------------------------------------------------------- server helpers (no gradio)
def test_scrub_removes_upload_names_and_server_paths():
    from echogen.ui.guard import scrub
    up = "/tmp/echogen-app-x/uploads/ab12/DOE_JANE_19500101.dcm"
    msg = scrub("DOE_JANE_19500101.dcm: frame 3 out of range\nTraceback...", up)
    assert msg == "the upload: frame 3 out of range"
    assert scrub("no trained weights at /srv/echogen/assets/weights/demo (x)") == \
        "no trained weights at demo (x)"
    assert scrub(f"{up}: file not found", up) == "the upload: file not found"


def test_server_log_hides_tracebacks_names_the_upload_and_cuts_a_flood():
    import io

    from echogen.ui.guard import QuietTracebacks
    out = io.StringIO()
    log = QuietTracebacks(out, private=["/tmp/echogen-app-x"])
    log.write("Traceback (most recent call last):\n  File \"x.py\", line 1\n")
    flood = "gradio.exceptions.Error: Value: '" + "X" * 100_000 + "' is not in the list of choices"
    log.write(flood + "\n")
    log.write("wrote /tmp/echogen-app-x/uploads/ab/DOE_JANE.png\n")
    first, second = out.getvalue().splitlines()
    assert first.startswith("EchoGen: error (traceback hidden): gradio.exceptions.Error: Value: 'XXX")
    assert len(first) < 700 and first.endswith(f"(cut: {len(flood)} characters)"), first[-60:]
    assert second == "wrote the upload"


def test_check_request_in_project_words():
    from echogen.ui.guard import check_request
    assert check_request(2, 45, 7, [12, 3.0, 8, 1.0]) == (2, 45.0, 7, [12, 3.0, 8, 1.0])
    for args, words in (((0, 45, 2 ** 64, []), "seed must be a whole number from 0 to 4294967295"),
                        ((0, 45, -1, []), "seed must be"), ((0, 45, 1.5, []), "seed must be"),
                        ((0, 45, 0, [10 ** 6, 1.0]), "steps must be a whole number from 1 to 50"),
                        ((0, 45, 0, [2, float("nan")]), "guidance must be a number from 0 to 10"),
                        ((-1, 45, 0, []), "frame must be"), ((0, 200, 0, []), "EF must be between")):
        with pytest.raises(ValueError, match=words):
            check_request(*args)


def test_cascade_seed_overflow_is_a_project_error():
    from echogen.diffusion.cascade import Cascade
    with pytest.raises(ValueError, match="seed must be a whole number from 0 to 4294967295"):
        Cascade.random("tiny").sample(np.zeros((112, 112), np.float32), 40, seed=2 ** 64, steps={"base": 1})


def test_login_throttle_backs_off_per_ip_and_per_user():
    from echogen.ui.guard import LoginThrottle
    now = [0.0]
    t = LoginThrottle(free=3, base=1.0, cap=8.0, clock=lambda: now[0])
    for _ in range(3):
        assert t.retry_after("1.1.1.1", "ann") == 0
        t.record("1.1.1.1", "ann", False)
    assert t.retry_after("1.1.1.1", "ann") == 1.0          # 4th try: wait 1 s
    assert t.retry_after("2.2.2.2", "ann") == 1.0          # the user is throttled from another IP too
    assert t.retry_after("1.1.1.1", "bob") == 1.0          # and the IP for another user
    assert t.retry_after("2.2.2.2", "bob") == 0
    for _ in range(5):
        now[0] += 100
        t.record("1.1.1.1", "ann", False)
    assert t.retry_after("1.1.1.1", "ann") == 8.0          # doubling, capped
    t.record("1.1.1.1", "ann", True)
    assert t.retry_after("1.1.1.1", "ann") == 0


def test_budget_stops_a_request():
    import time as _t
    from echogen.ui.guard import Budget, BudgetExceeded
    calls = []
    cb = Budget(0.05).wrap(lambda *a: calls.append(a))
    cb("base", 1, 10)
    _t.sleep(0.06)
    with pytest.raises(BudgetExceeded, match="time budget of 0.05 s"):
        cb("base", 2, 10)
    assert len(calls) == 2
    Budget(None).wrap(None)("base", 1, 1)


def test_prune_by_age_and_size(tmp_path):
    import os
    from echogen.ui.guard import prune
    for i in range(5):
        d = tmp_path / f"r{i}"
        d.mkdir()
        (d / "v.mp4").write_bytes(b"x" * 400_000)
        os.utime(d, (1000 + i, 1000 + i))
    assert prune(tmp_path, max_age_s=3, now=1005) == 2                # r0, r1 older than 3 s
    assert prune(tmp_path, max_mb=0.8) == 1                           # oldest first until <= 0.8 MB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r3", "r4"]


def test_uploads_deleted_after_use_but_not_while_a_page_uses_them(tmp_path):
    from echogen.ui.guard import Uploads
    root = tmp_path / "uploads"
    ex = tmp_path / "example.png"
    ex.write_bytes(b"bundled example")

    def put(name, data=b"patient pixels"):
        d = root / name.split(".")[0]
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
        return str(d / name)
    u = Uploads(root, [ex])
    api = put("DOE_JANE.dcm")
    u.expect([api, api])                                             # two API users sent the same file
    assert not u.done("user-1", api) and Path(api).exists()          # the second one's request still waits
    assert u.done("user-2", api) and not Path(api).exists() and not Path(api).parent.exists()
    page = put("ROE_RICHARD.dcm")
    u.keep("browser", page)
    assert not u.done("browser", page) and Path(page).exists()       # the page may generate again
    assert u.release("browser") == 1 and not Path(page).exists()     # page closed
    copy = put("example.png", b"bundled example")
    assert not u.done("x", copy) and Path(copy).exists()             # a bundled example stays
    outside = tmp_path / "mine.png"
    outside.write_bytes(b"x")
    assert not u.done("x", str(outside)) and outside.exists()        # never outside the upload cache
    old = put("LEFT_BEHIND.dcm")
    assert u.sweep(3600) == 0 and u.sweep(-1) == 1 and not Path(old).exists()


def test_run_dirs_are_private_and_removed(tmp_path, monkeypatch):
    import os
    from echogen.ui.guard import RunDirs
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    run = RunDirs()
    assert run.root.parent == tmp_path and (os.stat(run.root).st_mode & 0o777) == 0o700
    closed = []
    run.on_close(lambda: closed.append(1))
    (run.results / "r").mkdir()
    run.close()
    run.close()
    assert not run.root.exists() and closed == [1]


def test_trim_memory_returns_freed_heap_to_the_os():
    import subprocess
    import sys
    code = ("import ctypes, numpy as np\n"
            "from echogen.device import rss_mb, trim_memory, tune_cpu_malloc\n"
            "tune_cpu_malloc()\n"
            "a = [np.ones(1 << 20) for _ in range(100)]\n"                 # 100 x 8 MB from the heap
            "a[-1][:] = 2\n"
            "del a\n"
            "before = rss_mb()[0]\n"
            "trim_memory()\n"
            "print(before, rss_mb()[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parent.parent)
    before, after = map(float, out.stdout.split())
    assert before - after > 300, (before, after)              # hundreds of MB kept by the tuned malloc, given back
