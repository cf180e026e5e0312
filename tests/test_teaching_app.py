"""The teaching tabs served by Gradio and driven through their API with gradio_client: two raters at
once, 20 trainer answers each, all 40 stored; a blinded review end to end with the organiser summary.
(Roles, the quality gate and loops on the real app: tests/test_teaching_roles.py.)"""
import socket
import threading

import numpy as np
import pytest

from echogen.diffusion.cascade import Cascade
from echogen.teaching.db import ResultsDB

STEPS = {"base": 1, "spatial": 1, "temporal": 1}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("gradio_client")
    from echogen.ui.teaching import TeachingState, build_teaching_demo
    from echogen.data.phantom import write_phantom
    from echogen.teaching.pool import build_pool
    from echogen.teaching.review import build_review_set

    tmp = tmp_path_factory.mktemp("teach")
    state = TeachingState(tmp / "results", local_organiser=True)       # no login: the local user organises
    casc = Cascade.random("tiny", seed=0)                              # noise: no gate, no loops to find
    build_pool(casc, None, [np.full((112, 112), 0.4, np.float32)], [30, 45, 60], out_dir=state.pools_root / "p1",
               sample_kwargs={"steps": STEPS}, tolerance=None, loops=False)
    write_phantom(tmp / "echonet", 2, seed=4)
    rdir = state.reviews_root / "r1"
    build_review_set(casc, tmp / "echonet", "ALL", 1, rdir, key_path=state.key_path(rdir),
                     sample_kwargs={"steps": STEPS}, loops=False)
    demo = build_teaching_demo(state)
    demo.queue(default_concurrency_limit=1)
    with socket.socket() as sock:                         # a free port: other apps may hold 7860
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=port)
    yield {"url": demo.local_url, "state": state, "pool": "p1", "review": "r1"}
    demo.close()


def test_two_concurrent_trainees_store_all_answers(served):
    from gradio_client import Client

    errors = []

    def trainee(name, n=20):
        try:
            c = Client(served["url"], verbose=False)
            c.predict(name, served["pool"], n, "esc2021", api_name="/trainer_start")
            for i in range(n):
                c.predict(40 + i % 20, "reduced" if i % 2 else "preserved", api_name="/trainer_answer")
                c.predict(api_name="/trainer_next")
        except Exception as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=trainee, args=(n,)) for n in ("ann", "bob")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    db = ResultsDB(served["state"].results_dir)
    rows = db.answers(kind="trainer")
    assert len(rows) == 40
    assert sorted({r["rater"] for r in rows}) == ["ann", "bob"]
    assert {r["truth_ef"] for r in rows} == {30, 45, 60}
    assert all(r["response_ms"] is not None and r["response_ms"] >= 0 for r in rows)


def test_blinded_review_and_organiser_summary(served):
    from gradio_client import Client

    c = Client(served["url"], verbose=False)
    video, status = c.predict("cara", served["review"], api_name="/review_start")
    assert "Clip 1 of 2" in status and video
    for label in ("real", "generated"):
        out = c.predict(label, "4", "looks fine", api_name="/review_answer")
    assert out[1].startswith("Finished") and out[0] is None
    md, rows, csv_path = c.predict(served["review"], api_name="/review_summary")
    assert "2 answers" in md and any(r[0] == "cara" for r in rows["data"]) and "binomial" in md
    assert open(csv_path).read().count("\n") == 3
    # the key is never among the files served to browsers
    key = served["state"].key_path(served["state"].reviews_root / served["review"])
    assert key.is_file() and not any(str(key).startswith(p) for p in served["state"].served_paths())


def test_a_failed_write_keeps_the_answer_and_next_does_not_skip(served):
    """Write access lost while a trainee answers (issue 22): the answer is kept (the trainee gets the
    feedback and a warning), Next moves on, and the answer is written once the database is writable."""
    import sqlite3
    from contextlib import contextmanager

    from gradio_client import Client

    db = served["state"].db

    @contextmanager
    def read_only():
        con = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True, isolation_level=None, timeout=1)
        con.row_factory = sqlite3.Row
        try:
            yield con
        finally:
            con.close()

    c = Client(served["url"], verbose=False)
    c.predict("dora", served["pool"], 3, "esc2021", api_name="/trainer_start")
    sid = next(s["id"] for s in db.sessions(kind="trainer") if s["rater"] == "dora")
    db._connect = read_only                                       # the results folder became read-only
    try:
        feedback = c.predict(50, "preserved", api_name="/trainer_answer")
        assert "True EF" in feedback                              # the trainee still gets the feedback
        assert len(db.unsaved) == 1 and "read-only" in db.unsaved_message()
        out = c.predict(api_name="/trainer_next")
        assert "Case 2 of 3" in str(out)                          # Next does not skip a case
    finally:
        del db._connect                                           # write access is back
    c.predict(40, "reduced", api_name="/trainer_answer")
    assert [r["position"] for r in db.answers(session=sid)] == [0, 1] and not db.unsaved


def test_a_pool_built_after_the_page_opened_is_picked():
    """The trainee's pool picker follows the pools on disk; when nothing was picked (no pool existed when the
    page opened) the first pool built is picked, never a pool the trainee chose replaced."""
    from echogen.ui.teaching import followed

    seen, upd = followed(("ward",), (), None)
    assert seen == ("ward",) and upd["choices"] == ["ward"] and upd["value"] == "ward"
    seen, upd = followed(("icu", "ward"), ("ward",), "ward")
    assert seen == ("icu", "ward") and upd["choices"] == ["icu", "ward"] and "value" not in upd
    import gradio as gr
    assert followed(("ward",), ("ward",), "ward") == (gr.skip(), gr.skip())       # unchanged: nothing sent
