"""`python -m echogen bench` on the tiny preset: one row per stage with sane fields, and the JSON file."""
import json
import os
import subprocess
import sys

import pytest

from echogen.eval import bench
from echogen.cli.main import main
from echogen.config import get_preset
from echogen.diffusion.samplers import nfe


def test_bench_tiny_rows_are_sane(tmp_path, capsys):
    cfg = get_preset("tiny")
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "tiny", "--device", "cpu", "--repeats", "2", "--json", str(out),
                 "--no-e2e"]) == 0
    table = capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = data["stages"]
    assert [r["stage"] for r in rows] == cfg.stage_names
    for r, st in zip(rows, cfg.stages):
        assert r["params"] > 1000
        assert r["batch"] == (2 if st.guidance != 1 else 1)       # CFG: cond + uncond in one batch
        assert (r["frames"], r["size"]) == (st.frames, st.size)
        assert r["nfe"] == nfe(st.sampler, st.steps)
        assert 0 < r["forward_s"] < 30 and len(r["forward_all_s"]) == 2
        assert abs(r["est_video_s"] - r["forward_s"] * r["nfe"]) < 1e-9
        assert r["peak_mem_mb"] >= 0 and r["mem_kind"].startswith("cpu")
        assert f"| {st.name} |" in table
    assert data["machine"]["device"] == "cpu" and data["partial"] is False


def test_bench_stage_override_frames():
    cfg = get_preset("tiny")
    rows = bench.bench_cascade(cfg, "cpu", stages=["temporal"], frames=4, repeats=1, warmup=0, memory=False)
    assert len(rows) == 1 and rows[0].frames == 4 and "frames 4" in rows[0].note


@pytest.mark.parametrize("env,expected", [("1", "True True"), ("0", "False False")])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_tuning_is_applied_once_and_can_be_turned_off(env, expected):
    code = "from echogen.device import tune_cpu_malloc as t; a = t(); b = t(); print(a, b)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "ECHOGEN_MALLOC": env})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == expected.split()
