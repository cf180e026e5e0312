"""train/train_regressor.py on a tiny phantom: a few steps, resume, and torchrun with 2 CPU processes."""
import json
from pathlib import Path

import pytest
import torch

from echogen.nets.regressor import load_regressor
from echogen.weights.bundle import load_tensors, read_manifest
from scripts import run_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "train" / "train_regressor.py"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from echogen.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root, videos=6, seed=0)     # 4 TRAIN, 1 VAL, 1 TEST videos at 50 fps
    return root


def _train(args, torchrun=False):
    """One process (in this one) or torchrun with 2 CPU ranks; asserts success."""
    from test_ddp import _run
    return _run(SCRIPT, args, nproc=2 if torchrun else 1, timeout=600)


def test_trains_exports_and_resumes(phantom, tmp_path):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    common = ["--data", phantom, "--preset", "tiny", "--out", run, "--eval-every", 2, "--log-every", 1,
              "--threads", 1, "--bundle", bundle]
    _train(common + ["--steps", 2])
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 2 and state["best_step"] == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "tiny" and cfg["regressor"]["frames"] == 8 and 0 < cfg["regressor"]["mean"] < 1
    assert {"ckpt.safetensors", "regressor.safetensors", "log.txt", "val.csv"} <= {p.name for p in run.iterdir()}
    ck, ck_cfg, meta = load_tensors(run / "ckpt.safetensors", "regressor_checkpoint")
    assert any(k.startswith("optim.p0.exp_avg") for k in ck) and any(k.startswith("ema.") for k in ck)
    assert json.loads(meta["train_state"])["step"] == 2 and ck_cfg == cfg["regressor"]
    _train(common + ["--steps", 3])
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 3 and state["seen"] == 3 * 2       # the counters continued
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and "at step 2" in log
    assert "VAL MAE" in log and "TEST MAE" in log and "R^2" in log
    assert (run / "val.csv").read_text().splitlines()[0] == "step,mae,rmse,r2"
    model, rcfg = load_regressor(run / "regressor.safetensors")
    assert rcfg.frames == 8 and model(torch.rand(1, 1, 8, 112, 112)).shape == (1,)
    assert read_manifest(bundle)["regressor"] == "regressor.safetensors"
    load_regressor(bundle)
    # nothing pickled: every file written is JSON, text or safetensors
    assert not [p for p in run.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".ckpt")]


def test_torchrun_two_cpu_ranks_agree(phantom, tmp_path):
    run = tmp_path / "ddp"
    _train(["--data", phantom, "--preset", "tiny", "--out", run, "--steps", 3, "--batch", 1, "--eval-every", 3,
            "--threads", 1, "--debug-checksum", "--test-videos", 0], torchrun=True)
    c0 = json.loads((run / "checksum_rank0.json").read_text())
    c1 = json.loads((run / "checksum_rank1.json").read_text())
    assert c0["step"] == c1["step"] == 3
    assert c0["sha256"] == c1["sha256"]                      # bit-identical parameters on both ranks
    state = json.loads((run / "state.json").read_text())
    assert state["seen"] == 3 * 1 * 2                         # batch 1 per rank, 2 ranks
    assert "batch 1 x 2" in (run / "log.txt").read_text()


def test_ship_regressor_writes_fp16_with_provenance_and_refuses_a_bad_copy(phantom, tmp_path):
    """train/ship_regressor.py: the fp16 file in the bundle, named in the manifest, loads as float32, carries the
    run's metadata and the given provenance; a threshold fp16 cannot meet writes nothing."""
    import torch

    from echogen.eval.readout import model_provenance
    from echogen.nets.regressor import EFRegressor, get_regressor_preset, load_regressor, save_regressor
    from echogen.weights.bundle import read_manifest, read_metadata
    cfg = get_regressor_preset("tiny")
    torch.manual_seed(0)
    src = save_regressor(tmp_path / "run.safetensors", EFRegressor(cfg), cfg, preset="tiny", steps="7")
    ship = ROOT / "train" / "ship_regressor.py"
    bundle = tmp_path / "bundle"
    bundle.mkdir()                                                                  # no manifest yet
    r = run_script(ship, ["--regressor", str(src), "--data", str(phantom), "--bundle",
                        str(bundle), "--videos", "1", "--trained-on", "unit-test phantom", "--steps", "2"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_manifest(bundle)["provenance"]["trained_steps"] == {"regressor": "2"}
    r = run_script(ship, ["--regressor", str(src), "--data", str(phantom), "--bundle",
                        str(bundle), "--videos", "1", "--trained-on", "unit-test phantom", "--steps", "7 + 3"])
    assert r.returncode == 0, r.stdout + r.stderr
    out = bundle / "regressor.safetensors"
    assert read_manifest(bundle)["regressor"] == "regressor.safetensors"
    assert read_manifest(bundle)["provenance"]["trained_steps"] == {"regressor": "7 + 3"}   # the replaced label gone
    assert out.stat().st_size < src.stat().st_size * 0.75                         # fp16 on disk
    model, got = load_regressor(bundle)
    assert all(p.dtype == torch.float32 for p in model.parameters()) and got.widths == cfg.widths
    meta = read_metadata(out)
    assert meta["preset"] == "tiny" and "fp16" in meta["stored_as"]
    assert model_provenance(bundle) == "EF regressor 'tiny' (7 + 3 steps) trained on unit-test phantom"
    out.unlink()
    r = run_script(ship, ["--regressor", str(src), "--data", str(phantom), "--bundle",
                        str(bundle), "--videos", "1", "--max-ef-change", "0"])
    assert r.returncode != 0 and "not shipped" in r.stderr and not out.exists()
