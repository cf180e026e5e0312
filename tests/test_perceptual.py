"""LPIPS / FID-Inception / I3D-FVD from user-supplied weights (echogen/perceptual, docs/METRICS.md).

Parity: tests/fixtures/perceptual holds inputs and outputs of the reference implementations (the lpips
package, pytorch-fid, piergiaj/pytorch-i3d; made by bench/make_perceptual_fixtures.py) with backbone
weights from tests/fixtures/published/detfill.py (a function of key name and shape). Here the same
weights are regenerated in the reference key layout, written as the .pth files a user would have,
converted with `python -m echogen convert`, and EchoGen's networks must reproduce the outputs."""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from echogen.cli.main import main as cli_main
from echogen.eval.evaluate import markdown_table
from echogen.eval.metrics import frechet_distance
from echogen.eval.perceptual import load_perceptual
from echogen.eval.perceptual.convert import convert_i3d, convert_inception, convert_lpips
from echogen.weights.bundle import WeightsError, read_metadata

FIX = Path(__file__).parent / "fixtures" / "perceptual"
DETFILL = Path(__file__).parent / "fixtures" / "published" / "detfill.py"


def _close(ours, ref, rtol=1e-4):
    """|ours - ref| <= rtol * max|ref| elementwise (float32 networks, two torch versions)."""
    ours, ref = ours.double(), ref.double()
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err <= rtol * ref.abs().max().item() + 1e-7, f"max abs diff {err:.3g} (max |ref| {ref.abs().max():.3g})"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Inception / I3D at full size: one intra-op thread (on a busy 2-core box a second thread made the
    convolutions ~10x slower); the suite's setting is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fix():
    return load_file(str(FIX / "perceptual.safetensors")), json.loads((FIX / "perceptual.json").read_text())


@pytest.fixture(scope="module")
def user_files(fix, tmp_path_factory):
    """The .pth files a user would have (reference key layouts, detfill weights), converted once."""
    t, meta = fix
    spec = importlib.util.spec_from_file_location("detfill", DETFILL)
    detfill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detfill)
    tmp = tmp_path_factory.mktemp("perceptual")
    src, out = {}, {}
    for name, keys in meta["keys"].items():
        sd = detfill.fill_state(keys)
        vals = [v.double() for v in sd.values() if v.is_floating_point()]
        # the weights must be the ones the fixture's outputs were made with
        assert [float(sum(v.sum() for v in vals)), float(sum(v.abs().sum() for v in vals))] == \
            pytest.approx(meta["checksum"][name], rel=1e-9), f"detfill stream changed for {name}"
        # the trunks' ImageNet classifiers (58 M / 124 M values) are ignored by the converter: small stand-ins
        sd.update({k: torch.zeros(2) for k in meta["ignored_keys"].get(name, {})})
        src[name] = tmp / f"{name}.pth"
        torch.save(sd, src[name])
    for b in ("alex", "vgg"):
        src[f"{b}_lin"] = tmp / f"{b}_lin.pth"
        torch.save({k.split(".", 1)[1]: v for k, v in t.items() if k.startswith(f"lin_{b}.")}, src[f"{b}_lin"])
        out[b] = convert_lpips(src[f"{b}_trunk"], src[f"{b}_lin"], tmp / "out")
    out["inception"] = convert_inception(src["inception"], tmp / "out")
    out["i3d"] = convert_i3d(src["i3d"], tmp / "out")
    yield src, out
    shutil.rmtree(tmp, ignore_errors=True)                             # ~0.4 GB of weights


# ---------------------------------------------------------------------------------------------
# Parity with the references, and the metric properties
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["alex", "vgg"])
def test_lpips_parity_identity_symmetry(fix, user_files, backbone):
    t, _ = fix
    net = load_perceptual(user_files[1][backbone], "lpips")
    a, b = t["in.lpips_a"], t["in.lpips_b"]
    with torch.no_grad():
        d, d_rev = net(a, b), net(b, a)
    _close(d, t[f"ref.lpips_{backbone}"])
    assert d[2] == 0 and t[f"ref.lpips_{backbone}"][2] == 0          # pair 2 is identical: exactly 0
    assert (d[:2] > 1e-3).all()                                        # different frames: clearly > 0
    torch.testing.assert_close(d, d_rev, rtol=1e-6, atol=1e-9)         # symmetric
    assert net.video_distance(a[:, 0], a[:, 0]) == 0
    assert net.video_distance(a[:, 0], b[:, 0]) == pytest.approx(float(d.double().mean()), rel=1e-5)


def test_inception_parity_and_fid_of_identical_sets(fix, user_files):
    t, _ = fix
    net = load_perceptual(user_files[1]["inception"], "fid")
    x = t["in.inception_x"]                                            # (3, 1, 40, 40), resized to 299 inside
    f = net.features(x)
    assert f.shape == (3, 2048)
    _close(f, t["ref.inception"])
    perm = net.features(x[[2, 0, 1]], batch_size=2)                    # another order and batching
    torch.testing.assert_close(perm[[1, 2, 0]], f, rtol=1e-5, atol=1e-5)
    assert frechet_distance(f, perm) < 1e-6 * float(torch.cov(f.double().T).trace())


def test_i3d_parity_and_fvd_of_identical_sets(fix, user_files):
    t, _ = fix
    net = load_perceptual(user_files[1]["i3d"], "fvd")
    assert net.cfg.frames == 16 and net.cfg.size == 224 and net.cfg.num_classes == 400
    x = t["in.i3d_x"]                                                  # (2, 16, 24, 24) greyscale in [0, 1]
    with torch.no_grad():
        logits, pooled = net(net.preprocess(x))
    _close(logits.mean(2), t["ref.i3d_logits"])                        # the 400-d FVD features
    _close(pooled.mean(2), t["ref.i3d_pool"])
    perm = net.features(x[[1, 0]], batch_size=1)
    torch.testing.assert_close(perm[[1, 0]], logits.mean(2), rtol=1e-5, atol=1e-5)
    assert frechet_distance(logits.mean(2), perm) < 1e-6 * float(torch.cov(perm.double().T).trace())


def test_i3d_preprocessing_resamples_time_and_space():
    from echogen.eval.perceptual.i3d import I3D, I3DConfig, same_pad
    net = I3D(I3DConfig())
    clip = torch.arange(8.0)[None, :, None, None].expand(1, 8, 20, 20) / 8   # frame k is constant k / 8
    x = net.preprocess(clip)
    assert x.shape == (1, 3, 16, 224, 224)
    assert torch.allclose(x[0, 0, :, 0, 0], torch.arange(16) // 2 / 8 * 2 - 1)   # 8 -> 16 frames: each twice
    x = net.preprocess(torch.arange(32.0)[None, :, None, None].expand(1, 32, 20, 20) / 32)
    assert torch.allclose(x[0, 1, :, 5, 5], torch.arange(0, 32, 2) / 32 * 2 - 1)  # 32 -> 16: every 2nd
    # TensorFlow 'SAME': 7-tap stride 2 over 224 pads 2 before and 3 after; stride 1 over 3 pads 1 and 1
    assert same_pad(torch.ones(1, 1, 16, 224, 224), (7, 7, 7), (2, 2, 2)).shape == (1, 1, 21, 229, 229)
    p = same_pad(torch.ones(1, 1, 1, 4, 4), (1, 3, 3), (1, 1, 1))
    assert p.shape == (1, 1, 1, 6, 6) and p[0, 0, 0, 0].sum() == 0 and p[0, 0, 0, 1, 1] == 1
    with pytest.raises(ValueError, match="frames"):
        I3DConfig(frames=8)


# ---------------------------------------------------------------------------------------------
# Converter: round trip, metadata, bad files
# ---------------------------------------------------------------------------------------------

def test_converter_round_trip_and_metadata(user_files):
    src, out = user_files
    assert {p.name for p in out.values()} == {"lpips_alex.safetensors", "lpips_vgg.safetensors",
                                              "inception_fid.safetensors", "i3d.safetensors"}
    meta = read_metadata(out["alex"])
    assert meta["echogen_kind"] == "lpips" and json.loads(meta["echogen_config"]) == {"backbone": "alex",
                                                                                      "version": "0.1"}
    assert [p["source"] for p in json.loads(meta["provenance"])] == ["alex_trunk.pth", "alex_lin.pth"]
    trunk, conv = torch.load(src["alex_trunk"], weights_only=True), load_file(str(out["alex"]))
    assert torch.equal(conv["convs.1.weight"], trunk["features.3.weight"])          # torchvision index 3 = conv 2
    assert torch.equal(conv["lins.4.weight"], torch.load(src["alex_lin"], weights_only=True)["lin4.model.1.weight"])
    for name in ("inception", "i3d"):
        sd, conv = torch.load(src[name], weights_only=True), load_file(str(out[name]))
        kept = [k for k in sd if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
        assert len(kept) > 250 and all(torch.equal(conv[k], sd[k]) for k in kept), name
    assert json.loads(read_metadata(out["i3d"])["echogen_config"]) == {"frames": 16, "num_classes": 400, "size": 224}


def _fails(fn, *match):
    with pytest.raises(WeightsError) as e:
        fn()
    for m in match:
        assert m in str(e.value), str(e.value)


def test_bad_files_give_clear_messages(user_files, tmp_path):
    src, out = user_files
    trunk = torch.load(src["alex_trunk"], weights_only=True)
    _fails(lambda: convert_lpips(tmp_path / "nope.pth", src["alex_lin"], tmp_path), "not found", "nope.pth")
    torch.save({"features.0.weight": argparse.Namespace(a=1)}, tmp_path / "pickled.pth")
    _fails(lambda: convert_inception(tmp_path / "pickled.pth", tmp_path), "refused", "pickled Python objects")
    with warnings.catch_warnings():                                     # torch.jit.script is deprecated
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "script.pt"))
    _fails(lambda: convert_i3d(tmp_path / "script.pt", tmp_path), "TorchScript")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    _fails(lambda: convert_i3d(tmp_path / "junk.pth", tmp_path), "not a readable PyTorch checkpoint")
    # a missing and an unexpected key, both named
    bad = {k: v for k, v in trunk.items() if k != "features.8.bias"} | {"features.99.weight": torch.zeros(1)}
    torch.save(bad, tmp_path / "bad_trunk.pth")
    _fails(lambda: convert_lpips(tmp_path / "bad_trunk.pth", src["alex_lin"], tmp_path),
           "missing 1 key(s): features.8.bias", "unexpected 1 key(s): features.99.weight", "AlexNet")
    torch.save(trunk | {"features.3.weight": torch.zeros(192, 64, 3, 3)}, tmp_path / "shape.pth")
    _fails(lambda: convert_lpips(tmp_path / "shape.pth", src["alex_lin"], tmp_path), "features.3.weight",
           "(192, 64, 3, 3)", "(192, 64, 5, 5)")
    _fails(lambda: convert_lpips(src["alex_trunk"], src["vgg_lin"], tmp_path), "lin1.model.1.weight",
           "weights/v0.1/alex.pth")
    _fails(lambda: convert_lpips(src["alex_lin"], src["alex_lin"], tmp_path), "neither torchvision's AlexNet")
    torch.save({"AuxLogits.fc.weight": torch.zeros(2), "fc.weight": torch.zeros(1000, 2)}, tmp_path / "tv_inc.pth")
    _fails(lambda: convert_inception(tmp_path / "tv_inc.pth", tmp_path), "torchvision's ImageNet Inception-v3")
    torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(64, 2, 7, 7, 7)}, tmp_path / "flow.pt")
    _fails(lambda: convert_i3d(tmp_path / "flow.pt", tmp_path), "optical-flow")
    torch.save({"state_dict": {"module.Mixed_3b.b0.conv3d.weight": torch.zeros(1)}}, tmp_path / "few.pt")
    _fails(lambda: convert_i3d(tmp_path / "few.pt", tmp_path), "missing", "Conv3d_1a_7x7.bn.running_mean",
           "Mixed_3b.b0.conv3d.weight: file (1,)")
    _fails(lambda: load_perceptual(out["i3d"], "fid"), "--fid", "'i3d'", "--fid-inception")
    assert not list(tmp_path.glob("*.safetensors"))                    # nothing written by failed conversions


def test_convert_cli(user_files, tmp_path, capsys):
    src, _ = user_files
    rc = cli_main(["convert", "--lpips-backbone", str(src["alex_trunk"]), "--lpips-lin", str(src["alex_lin"]),
                   "--out", str(tmp_path)])
    assert rc == 0 and (tmp_path / "lpips_alex.safetensors").is_file()
    assert f"--lpips {tmp_path / 'lpips_alex.safetensors'}" in capsys.readouterr().out
    assert cli_main(["convert", "--lpips-backbone", str(src["alex_trunk"]), "--out", str(tmp_path)]) == 2
    assert "needs both --lpips-backbone" in capsys.readouterr().err
    assert cli_main(["convert", "--i3d", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights file not found") and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# evaluate end to end
# ---------------------------------------------------------------------------------------------

def test_evaluate_with_perceptual_metrics(user_files, tmp_path, capsys):
    from echogen.data.phantom import write_phantom
    from echogen.nets.regressor import EFRegressor, get_regressor_preset, save_regressor
    _, out = user_files
    data = tmp_path / "phantom"
    write_phantom(data, videos=6, seed=0)                              # 4 TRAIN videos
    cfg = get_regressor_preset("tiny")
    torch.manual_seed(0)
    save_regressor(tmp_path / "regressor.safetensors", EFRegressor(cfg), cfg)
    base = ["evaluate", "--data", str(data), "--random-init", "--preset", "tiny", "--regressor",
            str(tmp_path / "regressor.safetensors"), "--split", "TRAIN", "--samples", "2", "--steps", "2"]
    # a wrong file is refused before anything is generated
    assert cli_main(base + ["--n", "2", "--fid", str(out["alex"]), "--out", str(tmp_path / "x")]) == 2
    assert "holds a 'lpips' model" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert cli_main(base + ["--n", "1", "--fvd", str(out["i3d"]), "--out", str(tmp_path / "x")]) == 2
    assert "--n 2 or more" in capsys.readouterr().err

    rc = cli_main(base + ["--n", "2", "--lpips", str(out["alex"]), "--fid", str(out["inception"]),
                          "--fvd", str(out["i3d"]), "--out", str(tmp_path / "eval")])
    assert rc == 0
    stdout = capsys.readouterr().out
    s = json.loads((tmp_path / "eval" / "summary.json").read_text())
    single, best = s["factual_single"], s["factual_best_of_2"]
    assert 0 < best["lpips"] <= single["lpips"] < 1                    # best of K = the smaller LPIPS
    assert single["fid"] > 0 and single["fvd"] > 0 and "fid" not in best and "fvd" not in best
    assert "lpips" not in s["counterfactual_single"]
    assert s["perceptual"]["fvd"]["weights"] == str(out["i3d"])
    assert s["perceptual"]["lpips"]["config"]["backbone"] == "alex"
    with open(tmp_path / "eval" / "per_video.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    lp = np.array([[float(r["factual_lpips_0"]), float(r["factual_lpips_1"])] for r in rows])
    assert single["lpips"] == pytest.approx(lp[:, 0].mean()) and best["lpips"] == pytest.approx(lp.min(1).mean())
    assert "| FD (regressor feats) | LPIPS | FID | FVD | s/video |" in stdout
    assert f"| {single['lpips']:.4f} | {single['fid']:.2f} | {single['fvd']:.2f} |" in stdout
    assert (tmp_path / "eval" / "summary.md").read_text().strip() in stdout
    # without the networks the table keeps its old columns
    for key in ("factual_single", "factual_best_of_2"):
        for m in ("lpips", "fid", "fvd"):
            s[key].pop(m, None)
    assert "LPIPS" not in markdown_table(s) and "| FD (regressor feats) | s/video |" in markdown_table(s)
