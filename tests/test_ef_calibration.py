"""EF calibration (echogen.ef.EFCalibration): the inverse of a cascade's measured EF response, stored in a bundle's
manifest for the stage files it was fit on, applied by Cascade.sample and shown in the readouts."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from echogen.diffusion.cascade import Cascade
from echogen.weights.bundle import file_sha256
from echogen.ef import EF_MAX, EF_MIN, EFCalibration, EFError, fit_calibration
from echogen.weights.bundle import read_manifest, update_manifest
from scripts import run_script

ROOT = Path(__file__).resolve().parents[1]
GRID = (10.0, 30.0, 50.0, 70.0, 90.0)


def response(a):
    """A made-up cascade that over-expresses low EF: asked a -> reads 1.2 a - 12 (like the demo on v1 frames)."""
    return 1.2 * np.asarray(a, float) - 12


def test_condition_inverts_the_response_inside_and_stops_at_its_ends():
    cal = EFCalibration(GRID, tuple(response(GRID)))               # reads 0 .. 96
    wanted = torch.tensor([6.0, 25.0, 45.0, 65.0, 80.0, 95.0])
    cond = cal.condition(wanted)
    assert torch.allclose(torch.tensor(response(cond.numpy()), dtype=torch.float32), wanted, atol=1e-4)
    assert cond.dtype == wanted.dtype
    for c in (10.0, 20.0, 61.0, 90.0):                             # response: the fitted curve
        assert cal.response(c) == pytest.approx(float(response(c)))
    # nothing is extrapolated: beyond what the fit read, the end of the measured range (and its reading)
    flat = EFCalibration((20.0, 50.0, 80.0), (25.0, 45.0, 70.0))
    assert torch.equal(flat.condition(torch.tensor([EF_MIN, 15.0, 75.0, EF_MAX])), torch.tensor([20.0, 20.0, 80.0, 80.0]))
    assert flat.response(80.0) == flat.response(95.0) == 70.0 and flat.response(5.0) == 25.0


def test_fit_means_per_grid_ef_and_refuses_what_cannot_be_inverted():
    rng = np.random.default_rng(0)
    asked = np.repeat(GRID, 40)
    read = response(asked) + rng.normal(0, 3, asked.shape)
    read[::17] = np.nan                                           # failed readings are left out
    cal = fit_calibration(asked, read, reader="r", fit_on="f")
    assert cal.asked == GRID
    assert np.allclose(cal.read, response(GRID), atol=1.5)
    assert EFCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == \
        EFCalibration(cal.asked, tuple(round(v, 3) for v in cal.read), "r", "f")
    # saturation at the ends: conditioning beyond the extreme mean readings is cut off the grid
    sat = fit_calibration(np.repeat([10.0, 30.0, 50.0, 70.0, 90.0], 3), np.repeat([14.0, 12.0, 40.0, 80.0, 79.0], 3))
    assert sat.asked == (30.0, 50.0, 70.0) and sat.read == (12.0, 40.0, 80.0)
    with pytest.raises(EFError, match="increase strictly"):          # no response between 30 and 50, in the middle
        fit_calibration(np.repeat([10.0, 30.0, 50.0, 70.0], 3), np.repeat([5.0, 20.0, 19.0, 40.0], 3))
    with pytest.raises(EFError, match="only 2 readings"):
        fit_calibration([10, 10, 50, 50, 50], [1, 2, 40, 41, 42])
    with pytest.raises(EFError, match="malformed"):
        EFCalibration.from_dict({"asked": [10, 20]})


def _bundle(tmp_path, seed=0) -> Path:
    return Cascade.random("tiny", seed=seed).save(tmp_path / "b")


def _calibrate(bundle: Path) -> EFCalibration:
    man = read_manifest(bundle)
    cal = EFCalibration(GRID, tuple(response(GRID)), "regressor of test", "test frames",
                        {s: file_sha256(bundle / f) for s, f in man["stages"].items()})
    update_manifest(bundle, ef_calibration=cal.to_dict())
    return cal


def test_a_bundle_calibration_is_applied_exactly_as_the_conditioning_ef(tmp_path):
    bundle = _bundle(tmp_path)
    raw = Cascade.load(bundle)
    assert raw.ef_calibration is None and raw.calibration_note == ""
    assert "no EF calibration" in raw.describe_conditioning(25)
    cal = _calibrate(bundle)
    c = Cascade.load(bundle)
    assert c.ef_calibration == cal
    frame, steps = torch.rand(16, 16), {"base": 2, "spatial": 1, "temporal": 1}
    cond = float(cal.condition(torch.tensor([25.0]))[0])
    assert cond == pytest.approx(37 / 1.2 * 1.0, abs=1e-4)              # 1.2 c - 12 = 25
    got = c.sample(frame, 25.0, seed=3, steps=steps)[-1].video
    assert torch.equal(got, raw.sample(frame, cond, seed=3, steps=steps)[-1].video)
    assert torch.equal(c.sample(frame, 25.0, seed=3, steps=steps, calibrate=False)[-1].video,
                       raw.sample(frame, 25.0, seed=3, steps=steps)[-1].video)
    import echogen.diffusion.cascade as cascade_mod                # what every stage is conditioned on
    seen, real = [], cascade_mod.stage_condition
    monkey = pytest.MonkeyPatch()
    monkey.setattr(cascade_mod, "stage_condition", lambda st, f, ef, *a: seen.append(ef.clone()) or real(st, f, ef, *a))
    c.sample(frame, [25.0, 65.0], seed=3, steps=steps)
    c.sample(frame, 25.0, seed=3, steps=steps, calibrate=False)
    monkey.undo()
    cal_efs = cal.condition(torch.tensor([25.0, 65.0]))
    assert all(torch.equal(e, cal_efs) for e in seen[:3]) and all(torch.equal(e, torch.tensor([25.0])) for e in seen[3:])
    line = c.describe_conditioning(25)
    assert f"given EF {cond:.1f} %" in line and "read 25 % on average" in line
    assert "switched off" in c.describe_conditioning(25, calibrate=False)
    assert "read 95 % on average" in c.describe_conditioning(95)   # 89.2 % from the fit: inside the measured range
    c.ef_calibration = EFCalibration(GRID, (10.0, 30.0, 50.0, 60.0, 70.0))
    line = c.describe_conditioning(85)
    assert "end of their calibrated range" in line and "about 70 %" in line and "90.0 %" in line


def test_a_calibration_never_outlives_its_weights(tmp_path):
    bundle = _bundle(tmp_path)
    _calibrate(bundle)
    other = Cascade.random("tiny", seed=1)                       # new weights written over one stage file
    fname = read_manifest(bundle)["stages"]["base"]
    from echogen.weights.bundle import load_tensors, save_tensors
    t, cfg, _ = load_tensors(bundle / fname, "stage")
    save_tensors(bundle / fname, other.denoisers["base"].net.state_dict(), "stage", cfg)
    with pytest.warns(UserWarning, match="not applied"):
        c = Cascade.load(bundle)
    assert c.ef_calibration is None and "['base']" in c.calibration_note
    assert "not applied" in c.describe_conditioning(40)
    c.save(bundle)                                               # saving weights drops the old calibration
    assert read_manifest(bundle).get("ef_calibration") is None
    update_manifest(bundle, ef_calibration={"asked": [10, 20], "read": [30, 20]})
    from echogen.weights.bundle import WeightsError
    with pytest.raises(WeightsError, match="increase strictly"):
        Cascade.load(bundle)


def test_fit_script_writes_a_loadable_calibration_and_reports(tmp_path):
    """train/fit_ef_calibration.py fit + report on readings laid out as its probe writes them."""
    bundle = _bundle(tmp_path)
    rng = np.random.default_rng(1)
    path = tmp_path / "readings.csv"
    lines = ["data,file,cond_frame,calibrated,asked,conditioned,ef_regressor,ef_tracing"]
    for d in ("data/a", "data/b"):
        for i in range(5):
            for a in GRID:
                r = response(a) + rng.normal(0, 2)
                lines.append(f"{d},V{i},3,0,{a},{a},{r:.3f},{r + 1:.3f}")
    path.write_text("\n".join(lines) + "\n")
    script = ROOT / "train" / "fit_ef_calibration.py"                   # run in this process (tests/scripts.py)
    p = run_script(script, ["fit", "--weights", bundle, "--readings", path])
    assert p.returncode == 0, p.stderr
    c = Cascade.load(bundle)
    assert c.ef_calibration is not None and c.ef_calibration.fit_on.startswith("10 frames of data/a, data/b")
    assert float(c.conditioning_ef(24.0)[0]) == pytest.approx(30.0, abs=2.0)
    p = run_script(script, ["report", "--readings", path])
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    s = rep["data/a | raw | regressor"]
    assert s["slope"] == pytest.approx(1.2, abs=0.1) and s["n"] == 25
    assert s["mean_error_by_asked_bin"]["0-35"] < -3                 # the low-EF bias the calibration removes


def test_one_rule_states_a_generated_loops_ef():
    """echogen.eval.readout.loop_ef: the mean when both readers read the loop, else the one that did (NaN and
    None are no reading); the calibration fit and evaluate's 'mean of both readers' row use that same rule."""
    import importlib.util

    from echogen.eval.evaluate import EvalSettings, markdown_table, summarise
    from echogen.eval.readout import loop_ef
    assert loop_ef(40.0, 50.0) == (45.0, "mean")
    assert loop_ef(40.0, float("nan")) == (40.0, "regressor") and loop_ef(None, 52.0) == (52.0, "tracing")
    assert loop_ef(None, float("nan")) is None
    spec = importlib.util.spec_from_file_location("fit_cal", ROOT / "train" / "fit_ef_calibration.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = {"ef_regressor": "40.0", "ef_tracing": "nan"}
    assert mod.reading(row, "mean") == 40.0 and mod.reading(dict(row, ef_tracing="50"), "mean") == 45.0
    per = [{"ef_true": 50.0, "ef_real_regressed": 50.0, "ef_real_tracing": 50.0, "counterfactual_target": t,
            "counterfactual_ef_0": t - 4, "counterfactual_ef_tracing_0": tr}
           for t, tr in ((20.0, 24.0), (40.0, 44.0), (60.0, float("nan")), (80.0, 84.0))]
    s = summarise(per, EvalSettings(samples=1, tasks=("counterfactual",)))
    m = s["counterfactual_single_mean"]
    assert m["n"] == 4 and m["failed"] == 0 and m["mae"] == pytest.approx((0 + 0 + 4 + 0) / 4)
    assert s["counterfactual_single_tracing"]["failed"] == 1
    s["settings"] = {"samples": 1, "tasks": ["counterfactual"]}
    s["seconds_per_video"] = 1.0
    assert "| counterfactual | single sample, mean of both readers | " in markdown_table(s)
