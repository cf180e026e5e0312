"""train/train_stage.py on a tiny phantom: every stage trains, exports into a bundle and resumes;
then `python -m echogen evaluate` scores that bundle end to end."""
import json
from pathlib import Path

import pytest

from scripts import run_cli, run_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from echogen.data.phantom import write_phantom
    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root, videos=6, seed=0)     # 4 TRAIN, 1 VAL, 1 TEST
    return root


def _run(args):
    """`python ARGS` (a training script, or -m echogen ...) run in this process (tests/scripts.py)."""
    return run_cli(args[2:]) if args[:2] == ["-m", "echogen"] else run_script(args[0], args[1:])


@pytest.fixture(scope="module")
def bundle(phantom, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    bundle = runs / "bundle"
    for stage in ("base", "spatial", "temporal"):
        r = _run(["train/train_stage.py", "--data", str(phantom), "--preset", "tiny", "--stage", stage,
                  "--out", str(runs / stage), "--steps", "2", "--log-every", "1", "--ckpt-every", "2",
                  "--sample-every", "2", "--bundle", str(bundle), "--threads", "1"])
        assert r.returncode == 0, r.stderr[-2000:]
    return runs, bundle


def test_each_stage_trains_exports_and_resumes(phantom, bundle):
    runs, b = bundle
    man = json.loads((b / "manifest.json").read_text())
    assert man["preset"] == "tiny" and set(man["stages"]) == {"base", "spatial", "temporal"}
    for stage in ("base", "spatial", "temporal"):
        run = runs / stage
        for f in ("config.json", "log.txt", "loss.csv", f"{stage}.safetensors", "ckpt/state.json",
                  "ckpt/optim.safetensors", "samples/step0000002.gif"):
            assert (run / f).is_file(), (stage, f)
        assert json.loads((run / "ckpt/state.json").read_text())["step"] == 2
    # resume: continues from step 2 to 3, not from scratch
    r = _run(["train/train_stage.py", "--data", str(phantom), "--preset", "tiny", "--stage", "base",
              "--out", str(runs / "base"), "--steps", "3", "--log-every", "1", "--sample-every", "0", "--threads", "1"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed" in (runs / "base" / "log.txt").read_text()
    assert json.loads((runs / "base/ckpt/state.json").read_text())["step"] == 3
    assert not list((runs / "base").rglob("*.pt")) and not list((runs / "base").rglob("*.pkl"))
    # an in-run anneal applies on resume past its step, once
    r = _run(["train/train_stage.py", "--data", str(phantom), "--preset", "tiny", "--stage", "base",
              "--out", str(runs / "base"), "--steps", "5", "--log-every", "1", "--sample-every", "0", "--threads", "1",
              "--anneal-at", "3", "--anneal-lr", "1e-5", "--anneal-ema-half-life", "100"])
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in (runs / "base" / "log.txt").read_text().splitlines() if "annealed" in ln]
    assert len(lines) == 1 and "step 3: annealed to lr 1e-05, EMA half-life 100 samples" in lines[0], lines


def test_evaluate_end_to_end(phantom, bundle, tmp_path):
    import torch

    from echogen.nets.regressor import EFRegressor, get_regressor_preset, save_regressor
    from echogen.weights.bundle import update_manifest

    _, b = bundle
    cfg = get_regressor_preset("tiny")
    torch.manual_seed(0)
    save_regressor(b / "regressor.safetensors", EFRegressor(cfg), cfg)
    update_manifest(b, regressor="regressor.safetensors")
    out = tmp_path / "eval"
    r = _run(["-m", "echogen", "evaluate", "--data", str(phantom), "--weights", str(b), "--split", "TEST",
              "--n", "1", "--samples", "2", "--steps", "2", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("regressor_on_real", "counterfactual_single", "counterfactual_best_of_2", "factual_single",
                "factual_best_of_2"):
        assert set(summary[key]) >= {"r2", "mae", "rmse"}, key
    assert 0 <= summary["factual_single"]["ssim"] <= 1
    assert summary["factual_best_of_2"]["ssim"] >= summary["factual_single"]["ssim"]
    assert summary["counterfactual_best_of_2"]["mae"] <= summary["counterfactual_single"]["mae"] + 1e-9
    rows = (out / "per_video.csv").read_text().splitlines()
    assert len(rows) == 2 and "counterfactual_ef_1" in rows[0]
    assert "| counterfactual | best of 2 |" in r.stdout and "| counterfactual | single sample |" in r.stdout
    assert summary["seconds_per_video"] > 0
