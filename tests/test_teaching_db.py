"""Results database: concurrent writers lose nothing; results survive reopening."""
import multiprocessing as mp
import sqlite3
import threading

import pytest

from echogen.teaching.db import DB_NAME, ResultsDB


def _rater(results_dir, name, n, barrier=None):
    db = ResultsDB(results_dir)
    sid = db.start_session("review", "set1", rater=name)
    if barrier is not None:
        barrier.wait()
    for i in range(n):
        db.add_answer(sid, i, f"case{i}", truth_label="real", answer_label="generated" if i % 2 else "real",
                      confidence=1 + i % 5, comment=f"{name} {i}", response_ms=100 + i)
    return sid


def test_two_threads_write_concurrently(tmp_path):
    ResultsDB(tmp_path)
    barrier = threading.Barrier(2)
    ts = [threading.Thread(target=_rater, args=(tmp_path, n, 20, barrier)) for n in ("ann", "bob")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    db = ResultsDB(tmp_path)
    rows = db.answers(kind="review")
    assert len(rows) == 40
    assert sorted({r["rater"] for r in rows}) == ["ann", "bob"]


def _proc(args):
    return _rater(*args)


def test_two_processes_write_concurrently_and_persist(tmp_path):
    ResultsDB(tmp_path)
    with mp.get_context("spawn").Pool(2) as pool:
        sids = pool.map(_proc, [(str(tmp_path), "ann", 20), (str(tmp_path), "bob", 20)])
    # reopen from scratch: a new object, a plain sqlite3 connection
    db = ResultsDB(tmp_path)
    assert {s["id"] for s in db.sessions()} == set(sids)
    assert len(db.answers()) == 40
    assert all(len(db.answers(session=s)) == 20 for s in sids)
    con = sqlite3.connect(tmp_path / DB_NAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 40
    con.close()


def test_answers_validate_and_double_submit_is_ignored(tmp_path):
    db = ResultsDB(tmp_path)
    sid = db.start_session("trainer", "pool1", rater="  cara ", meta={"categories": "esc2021"})
    assert db.session(sid)["rater"] == "cara" and db.session(sid)["meta"]["categories"] == "esc2021"
    assert db.add_answer(sid, 0, "c0", truth_ef=40.0, answer_ef=45.0, response_ms=1234)
    assert not db.add_answer(sid, 0, "c0", truth_ef=40.0, answer_ef=99.0)          # double click
    assert db.answers(session=sid)[0]["answer_ef"] == 45.0
    for bad in (dict(answer_ef=120), dict(answer_ef=40, confidence=6), dict(answer_label="fake"), dict()):
        with pytest.raises(ValueError):
            db.add_answer(sid, 1, "c1", **bad)
    with pytest.raises(KeyError):
        db.add_answer("nosuch", 0, "c0", answer_ef=50)
    with pytest.raises(ValueError):
        db.start_session("exam", "pool1")


def test_session_helpers_store_truth_from_pool_and_key(tmp_path):
    from pathlib import Path

    from echogen.teaching import sessions
    from echogen.teaching.pool import Pool
    from echogen.teaching.review import ReviewSet

    pool = Pool(Path(tmp_path), {"id": "p1", "spec": {"frames": 4, "fps": 2, "size": 8}},
                [{"id": f"c{i}", "kind": "generated", "ef": ef, "ef_regressor": None, "file": ""}
                 for i, ef in enumerate([30, 45, 60])])
    db = ResultsDB(tmp_path / "res")
    sid, cases = sessions.start_trainer(db, pool, 5, rater="ann", seed=0)
    assert len(cases) == 5 and set(cases[:3]) == {"c0", "c1", "c2"}
    fb = sessions.record_trainer_answer(db, sid, 0, pool, "c1", answer_ef=55, answer_category="preserved")
    assert fb == {"true_ef": 45, "error": 10.0, "regressor_ef": None, "true_category": "mildly reduced",
                  "category_correct": False, "kind": "generated", "ef_source": None, "requested_ef": None,
                  "readings": {}}
    # an answer needs an EF or a category; a skip is recorded apart, never as an answer
    import pytest
    with pytest.raises(ValueError, match="give an EF"):
        sessions.record_trainer_answer(db, sid, 1, pool, cases[1])
    with pytest.raises(ValueError, match="category must be one of"):
        sessions.record_trainer_answer(db, sid, 1, pool, cases[1], answer_category="normal")
    sessions.skip_trainer_case(db, sid, 1, cases[1])
    assert db.session(sid)["meta"]["skipped"] == [{"position": 1, "case_id": cases[1]}]
    with pytest.raises(ValueError, match="already answered"):
        sessions.skip_trainer_case(db, sid, 0, cases[0])
    assert "repeat each of them up to 2 times" in sessions.repeat_note(3, 5) and sessions.repeat_note(3, 3) == ""
    assert sessions.repeat_note(1, 3) == "This pool has 1 case, so it is repeated for all your 3 cases."
    row = db.answers(session=sid)[0]
    assert (row["truth_ef"], row["truth_category"], row["answer_ef"]) == (45, "mildly reduced", 55)
    rs = ReviewSet(Path(tmp_path), {"id": "r1", "spec": {}}, [{"id": "a"}, {"id": "b"}],
                   {"a": {"truth": "real"}, "b": {"truth": "generated"}})
    rid, order = sessions.start_review(db, rs, rater="bob", seed=1)
    assert sorted(order) == ["a", "b"]
    for pos, cid in enumerate(order):
        sessions.record_review_answer(db, rid, pos, rs, cid, "real", confidence=3)
    assert {(r["case_id"], r["truth_label"]) for r in db.answers(session=rid)} == {("a", "real"), ("b", "generated")}
    # a study has no anonymous rows; the organiser can exclude a session from every summary
    with pytest.raises(ValueError, match="enter your name"):
        sessions.start_review(db, rs, rater="  ")
    assert len(sessions.included_answers(db, kind="review")) == 2
    sessions.exclude_session(db, rid, True, "test run")
    assert sessions.included_answers(db, kind="review") == [] and len(db.answers(kind="review")) == 2
