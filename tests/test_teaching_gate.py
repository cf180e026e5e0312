"""The pool quality gate, build limits, cancellation and monotonic progress (tiny cascade, fake EF readers)."""
import numpy as np
import pytest

from echogen.diffusion.cascade import Cascade
from echogen.teaching.gate import EFReader, verify
from echogen.teaching.media import BuildCancelled
from echogen.teaching.pool import PoolLimits, build_pool, load_pool, rejected_summary

STEPS = {"steps": {"base": 1, "spatial": 1, "temporal": 1}}
FRAME = np.full((112, 112), 0.4, np.float32)


def const_reader(value, name="regressor"):
    return EFReader(name, lambda video, fps: value)


def test_verify_needs_every_reader_within_tolerance():
    v = np.zeros((4, 8, 8), np.float32)
    ok = verify(v, 4.0, 50, [const_reader(53), const_reader(48, "tracer")], tolerance=7)
    assert ok.ok and ok.ef == pytest.approx(50.5) and ok.readings == {"regressor": 53, "tracer": 48}
    bad = verify(v, 4.0, 50, [const_reader(53), const_reader(40, "tracer")], tolerance=7)
    assert not bad.ok and "tracer 40.0" in bad.reason
    none = verify(v, 4.0, 50, [const_reader(None)], tolerance=7)
    assert not none.ok and "could not read" in none.reason
    assert not verify(v, 4.0, 50, [], 7).ok


def test_out_of_tolerance_cases_are_excluded_and_counted(tmp_path):
    casc = Cascade.random("tiny", seed=0)
    seen = []
    pool = build_pool(casc, None, [FRAME], [30, 42, 60], out_dir=tmp_path / "p", sample_kwargs=STEPS,
                      readers=[const_reader(40.0)], tolerance=7, loops=False, progress=lambda f, m: seen.append(f))
    assert sorted(c["ef_requested"] for c in pool.cases) == [42]         # 30 and 60 read as 40: out of +-7
    case = pool.cases[0]
    assert case["ef"] == 40.0 and case["ef_source"] == "verified" and case["ef_readings"] == {"regressor": 40.0}
    r = rejected_summary(load_pool(tmp_path / "p"))
    assert (r["generated"], r["accepted"], r["rejected"]) == (3, 1, 2)
    assert r["text"] == "2 of 3 generated loops rejected (2 EF read outside the gate)"      # words, not a dict
    assert load_pool(tmp_path / "p").ready and load_pool(tmp_path / "p").meta["tolerance"] == 7
    assert seen == sorted(seen) and seen[-1] == 1.0                      # progress never goes backwards


def test_gate_without_reader_is_refused_unless_turned_off(tmp_path):
    casc = Cascade.random("tiny", seed=0)
    with pytest.raises(ValueError, match="quality gate needs an EF reader"):
        build_pool(casc, None, [FRAME], [40], out_dir=tmp_path / "a", sample_kwargs=STEPS)
    pool = build_pool(casc, None, [FRAME], [40], out_dir=tmp_path / "b", sample_kwargs=STEPS, tolerance=None,
                      loops=False)
    assert pool.cases[0]["ef"] == 40 and pool.cases[0]["ef_source"] == "requested"


def test_limits_and_cancel(tmp_path):
    casc = Cascade.random("tiny", seed=0)
    with pytest.raises(ValueError, match="build too large"):
        build_pool(casc, None, [FRAME] * 3, [30, 40, 50], per_frame=2, out_dir=tmp_path / "big",
                   limits=PoolLimits(frames=2), tolerance=None)
    with pytest.raises(ValueError, match="cases 1000000"):
        PoolLimits().check(1, 1, 1000000)
    assert PoolLimits.parse("frames=2,cases=9") == PoolLimits(frames=2, cases=9)
    with pytest.raises(ValueError):
        PoolLimits.parse("frames=-1")

    def guard():
        raise BuildCancelled("stop")
    with pytest.raises(BuildCancelled):
        build_pool(casc, None, [FRAME], [40], out_dir=tmp_path / "c", sample_kwargs=STEPS, tolerance=None, guard=guard)
    assert not load_pool(tmp_path / "c").ready                           # never offered to trainees
