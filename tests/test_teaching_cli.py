"""`python -m echogen pool` / `report` in-process on tiny inputs."""
import csv
import json

import numpy as np

from echogen.cli.main import main
from echogen.teaching.db import ResultsDB
from echogen.teaching.pool import load_pool


def test_pool_cli_random_init(tmp_path, capsys):
    fdir = tmp_path / "frames"
    fdir.mkdir()
    np.save(fdir / "a.npy", np.random.default_rng(0).random((112, 112)).astype(np.float32))
    # untrained weights have no EF reader: the gate refuses them unless it is turned off
    assert main(["pool", "--random-init", "--preset", "tiny", "--allow-non-a4c", "--frames", str(fdir), "--efs", "30,60",
                 "--steps", "1", "--out", str(tmp_path / "gated")]) == 2
    assert "quality gate needs an EF reader" in capsys.readouterr().err
    rc = main(["pool", "--random-init", "--preset", "tiny", "--allow-non-a4c", "--frames", str(fdir), "--efs", "30,60",
               "--steps", "1", "--no-gate", "--full-clips", "--out", str(tmp_path / "pool")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 generated cases + 0 real (clips of" in out and "no EF regressor" in out
    assert [c["ef_regressor"] for c in load_pool(tmp_path / "pool").cases] == [None, None]
    assert main(["pool", "--random-init", "--preset", "tiny", "--allow-non-a4c", "--frames", str(fdir), "--efs", "30,150",
                 "--out", str(tmp_path / "p2")]) == 2
    assert main(["pool", "--random-init", "--preset", "tiny", "--review", "--out", str(tmp_path / "r")]) == 2
    # issue 19: a noise frame is no apical-4-chamber echo: refused without --allow-non-a4c
    assert main(["pool", "--random-init", "--preset", "tiny", "--frames", str(fdir), "--efs", "30", "--no-gate",
                 "--out", str(tmp_path / "p3")]) == 2
    assert "not apical-4-chamber" in capsys.readouterr().err and not (tmp_path / "p3" / "pool.json").exists()


def test_report_cli(tmp_path, capsys):
    db = ResultsDB(tmp_path)
    t = db.start_session("trainer", "poolA", rater="ann", meta={"categories": "esc2021"})
    for i, (truth, ans) in enumerate([(30, 40), (60, 55), (45, 50)]):
        db.add_answer(t, i, f"c{i}", truth_ef=truth, answer_ef=ans, answer_category="preserved")
    r = db.start_session("review", "setB", rater="bob")
    for i in range(10):
        db.add_answer(r, i, f"c{i}", truth_label="real" if i % 2 else "generated", answer_label="real", confidence=3)
    assert main(["report", "--results", str(tmp_path), "--csv", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    assert "MAE 6.7 %" in out and "bias +3.3 %" in out and "5/10" in out and "p = 1" in out
    rows = list(csv.DictReader(open(tmp_path / "a.csv")))
    assert len(rows) == 13 and rows[0]["session"] in (t, r)
    assert main(["report", "--results", str(tmp_path), "--session", r, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert len(rep) == 1 and rep[0]["summary"]["raters"]["bob"]["correct"] == 5
    assert main(["report", "--results", str(tmp_path), "--session", t, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["summary"]["mae"] == 6.6667       # 4 decimals, not 6.666666...
    assert main(["report", "--results", str(tmp_path / "none")]) == 2
    assert main(["report", "--results", str(tmp_path), "--session", "nosuch"]) == 2


def test_report_names_pools_logins_skips_and_exclusions_as_the_app(tmp_path, capsys):
    db = ResultsDB(tmp_path)
    (tmp_path / "pools" / "ward").mkdir(parents=True)
    (tmp_path / "pools" / "ward" / "pool.json").write_text(json.dumps({"id": "poolA", "cases": []}))
    t = db.start_session("trainer", "poolA", meta={"categories": "esc2021", "user": "bob",
                                                   "skipped": [{"position": 0}]})
    db.add_answer(t, 1, "c1", truth_ef=40.0, answer_ef=50.0)
    r1, r2 = db.start_session("review", "setB", rater="ann"), db.start_session("review", "setB", rater="cat")
    for i in range(4):
        db.add_answer(r1, i, f"c{i}", truth_label="real", answer_label="real", confidence=3)
        db.add_answer(r2, i, f"c{i}", truth_label="real", answer_label="generated", confidence=3)
    db.update_meta(t, excluded=True)                      # the organiser excluded both of these
    db.update_meta(r2, excluded=True)
    assert main(["report", "--results", str(tmp_path), "--csv", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    assert "login bob, pool ward," in out and "1 skipped" in out and "EXCLUDED" in out and ": 1 answer\n" in out
    assert "limits of agreement n/a (one answer)" in out          # no SD of one difference
    assert "4 answers, 4 correct" in out and "1 session(s), 1 excluded by the organiser" in out   # cat left out
    rows = list(csv.DictReader(open(tmp_path / "a.csv")))
    assert {(x["session"], x["excluded"]) for x in rows} == {(t, "True"), (r1, "False"), (r2, "True")}
    assert main(["report", "--results", str(tmp_path), "--json"]) == 0
    rep = {x["kind"]: x for x in json.loads(capsys.readouterr().out)}
    assert rep["trainer"]["excluded"] and rep["trainer"]["pool"] == "ward" and rep["trainer"]["skipped"] == 1
    assert rep["review"]["excluded"] == [r2] and rep["review"]["summary"]["n"] == 4
