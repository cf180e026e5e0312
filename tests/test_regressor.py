"""EF regressor: shapes, presets, weights round trip and errors, clip averaging."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from echogen.nets.regressor import (REGRESSOR_PRESETS, EFRegressor, RegressorConfig, clip_starts, extract_features,
                               get_regressor_preset, load_regressor, num_params, predict_ef, predict_ef_batch, short_loop,
                               resample_indices, save_regressor)
from echogen.weights.bundle import WeightsError, save_tensors, update_manifest


def tiny(seed=0):
    torch.manual_seed(seed)
    cfg = get_regressor_preset("tiny")
    return EFRegressor(cfg).eval(), cfg


def test_presets():
    assert {"small", "full"} <= set(REGRESSOR_PRESETS)
    for name in ("small", "full"):
        cfg = REGRESSOR_PRESETS[name]
        assert (cfg.frames, cfg.fps, cfg.size, cfg.bias_init) == (32, 25.0, 112, 55.6)
    with torch.device("meta"):
        n_small = num_params(EFRegressor(REGRESSOR_PRESETS["small"]))
        n_full = num_params(EFRegressor(REGRESSOR_PRESETS["full"]))
    assert 3e5 <= n_small <= 1e6
    assert 2.5e7 <= n_full <= 4e7          # R(2+1)D-18 has ~31 M
    with pytest.raises(KeyError):
        get_regressor_preset("huge")


def test_shape_and_initial_bias():
    model, cfg = tiny()
    x = torch.rand(3, 1, cfg.frames, 112, 112)
    y = model(x)
    assert y.shape == (3,)
    # head bias 55.6 and tiny head weights: the untrained network predicts ~ the population mean
    assert torch.allclose(y, torch.full_like(y, 55.6), atol=1.0)
    assert extract_features(model, x).shape == (3, model.feature_dim)
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, cfg.frames, 112, 112))
    # gradients flow everywhere
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_batchnorm_variant_runs():
    cfg = RegressorConfig(frames=4, stem_width=4, widths=(4, 8), blocks=(1, 1), stem_stride=4, norm="batch")
    m = EFRegressor(cfg)
    assert m(torch.rand(2, 1, 4, 112, 112)).shape == (2,)


def test_save_load_round_trip_bit_identical(tmp_path):
    model, cfg = tiny()
    model.train()
    model(torch.rand(2, 1, cfg.frames, 112, 112))  # move any running statistics away from init
    model.eval()
    path = save_regressor(tmp_path / "r.safetensors", model, cfg, note="test")
    loaded, cfg2 = load_regressor(path)
    assert cfg2 == cfg and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(2, 1, cfg.frames, 112, 112)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # through a bundle folder
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "regressor.safetensors").write_bytes(path.read_bytes())
    update_manifest(bundle, regressor="regressor.safetensors")
    loaded2, _ = load_regressor(bundle)
    with torch.no_grad():
        assert torch.equal(model(x), loaded2(x))


def test_bad_files_raise_weights_error(tmp_path):
    model, cfg = tiny()
    with pytest.raises(WeightsError, match="not found"):
        load_regressor(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not safetensors")
    with pytest.raises(WeightsError):
        load_regressor(junk)
    # a stage file is not a regressor
    save_tensors(tmp_path / "stage.safetensors", {"w": torch.zeros(1)}, "stage", {})
    with pytest.raises(WeightsError, match="expected 'regressor'"):
        load_regressor(tmp_path / "stage.safetensors")
    # weights that do not fit the config
    sd = model.state_dict()
    sd.pop("head.bias")
    save_tensors(tmp_path / "short.safetensors", sd, "regressor", cfg.to_dict())
    with pytest.raises(WeightsError, match="missing 1 key"):
        load_regressor(tmp_path / "short.safetensors")
    bad_cfg = dict(cfg.to_dict(), stem_width=6)
    save_tensors(tmp_path / "shape.safetensors", model.state_dict(), "regressor", bad_cfg)
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_regressor(tmp_path / "shape.safetensors")
    save_tensors(tmp_path / "keys.safetensors", model.state_dict(), "regressor", dict(cfg.to_dict(), colour=1))
    with pytest.raises(WeightsError, match="unknown regressor config"):
        load_regressor(tmp_path / "keys.safetensors")
    # bundles without a regressor, or naming a missing file
    b = tmp_path / "b"
    update_manifest(b, regressor=None)
    with pytest.raises(WeightsError, match="no EF regressor"):
        load_regressor(b)
    update_manifest(b, regressor="gone.safetensors")
    with pytest.raises(WeightsError, match="missing"):
        load_regressor(b)
    with pytest.raises(WeightsError):
        load_regressor(tmp_path)   # a folder that is not a bundle


def test_resample_and_clip_starts():
    assert resample_indices(10, 50.0, 25.0).tolist() == [0, 2, 4, 6, 8]
    assert resample_indices(5, 25.0, 25.0).tolist() == [0, 1, 2, 3, 4]
    assert resample_indices(5, 0.0, 25.0).tolist() == [0, 1, 2, 3, 4]      # unknown fps: keep all
    assert resample_indices(3, 12.5, 25.0).tolist() == [0, 0, 1, 1, 2]     # 2x slower: repeat frames
    assert clip_starts(20, 8, 4) == [0, 4, 8, 12]
    assert clip_starts(21, 8, 4) == [0, 4, 8, 12, 13]                      # last clip ends at the end
    assert clip_starts(5, 8, 4) == [0]


def test_predict_ef_averages_over_clips_of_a_long_video():
    model, cfg = tiny(1)
    g = torch.Generator().manual_seed(0)
    video50 = (torch.rand(42, 112, 112, generator=g) * 255).to(torch.uint8)   # 42 frames @ 50 fps
    mean, per = predict_ef(model, cfg, video50.numpy(), fps=50.0, stride=4)
    v25 = video50[::2].float() / 255                                         # 21 frames @ 25 fps
    starts = clip_starts(21, cfg.frames, 4)
    assert len(per) == len(starts) == 5
    with torch.no_grad():
        want = [float(model(v25[s:s + cfg.frames][None, None])) for s in starts]
    assert np.allclose(per, want, atol=1e-5)
    assert mean == pytest.approx(np.mean(want), abs=1e-5)
    # the batched path gives the same numbers
    clips = torch.stack([v25[s:s + cfg.frames] for s in starts])[:, None]
    assert np.allclose(predict_ef_batch(model, clips, batch_size=2).numpy(), want, atol=1e-5)


def test_predict_ef_pads_short_video_and_checks_size():
    model, cfg = tiny(2)
    short = np.random.default_rng(0).random((3, 112, 112)).astype(np.float32) * 0.2
    short += np.array([0.0, 0.3, 0.6], np.float32)[:, None, None]       # brightens: does not wrap seamlessly
    assert not short_loop(short, cfg.fps, cfg)
    mean, per = predict_ef(model, cfg, short, fps=cfg.fps)
    padded = torch.zeros(1, 1, cfg.frames, 112, 112)
    padded[0, 0, :3] = torch.from_numpy(short)
    with torch.no_grad():
        assert mean == pytest.approx(float(model(padded)), abs=1e-5) and len(per) == 1
    with pytest.raises(ValueError, match="112x112"):
        predict_ef(model, cfg, np.zeros((10, 64, 64), np.uint8), fps=25.0)
    with pytest.raises(ValueError):
        predict_ef_batch(model, torch.zeros(1, cfg.frames, 112, 112))


def test_predict_ef_repeats_a_short_seamless_loop():
    """One generated heart cycle (shorter than the window, repeats without a jump) is read as the loop it is, repeated
    to fill the window at the regressor's rate; the same loop as a longer clip reads the same."""
    model, cfg = tiny(2)
    cfg = dataclasses.replace(cfg, frames=32)                                # the shipped regressor's window
    rng = np.random.default_rng(1)
    base, motion = rng.random((112, 112)).astype(np.float32) * 0.5, rng.random((112, 112)).astype(np.float32) * 0.4
    n = 20                                                                   # one cycle: 20 frames at 25 fps
    loop = base + motion * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))[:, None, None].astype(np.float32)
    assert short_loop(loop, cfg.fps, cfg) and not short_loop(loop[:12], cfg.fps, cfg)
    mean, per = predict_ef(model, cfg, loop, fps=cfg.fps)
    tiled = torch.from_numpy(np.concatenate([loop, loop])[: cfg.frames])[None, None]
    with torch.no_grad():
        assert mean == pytest.approx(float(model(tiled)), abs=1e-5) and len(per) == 1
    # at 50 fps the 40-frame cycle is first repeated, then resampled: the same clip
    loop50 = base + motion * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * n) / (2 * n)))[:, None, None].astype(np.float32)
    assert predict_ef(model, cfg, loop50, fps=50.0)[0] == pytest.approx(mean, abs=1e-4)


def test_ef_command(tmp_path, capsys):
    from echogen.cli.main import main
    from echogen.data.video_io import write_video

    model, cfg = tiny(3)
    wpath = save_regressor(tmp_path / "reg.safetensors", model, cfg)
    rng = np.random.default_rng(0)
    video = (rng.random((40, 112, 112)) * 255).astype(np.uint8)
    np.save(tmp_path / "clip.npy", video.astype(np.float32) / 255)
    assert main(["ef", "--video", str(tmp_path / "clip.npy"), "--weights", str(wpath), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want, per = predict_ef(model, cfg, video, fps=cfg.fps)
    assert out["fps_assumed"] and len(out["regressor"]["clips"]) == len(per) and "clips" not in out
    assert out["ef"] == pytest.approx(want, abs=0.01)
    # an AVI at 50 fps is resampled to 25 fps; a bundle folder works as --weights
    write_video(tmp_path / "clip.avi", video, fps=50)
    update_manifest(tmp_path, regressor="reg.safetensors")
    assert main(["ef", "--video", str(tmp_path / "clip.avi"), "--weights", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("EF ")
    # larger frames are preprocessed to 112x112
    write_video(tmp_path / "big.gif", np.repeat(np.repeat(video[:10], 2, 1), 2, 2), fps=25)
    assert main(["ef", "--video", str(tmp_path / "big.gif"), "--weights", str(wpath)]) == 0
    assert "big.gif: 10 frames @ 25 fps" in capsys.readouterr().out
    # DICOM (a real multi-frame apical echo from pydicom's test data), through echogen.data.inputs
    pytest.importorskip("echogen.data.inputs")
    from pydicom.data import get_testdata_file
    dcm = get_testdata_file("examples_ybr_color.dcm")
    if dcm is not None:
        assert main(["ef", "--video", dcm, "--weights", str(wpath), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["frames"] == 30 and 0 < out["ef"] < 100
    # bad inputs: one line, exit 2
    assert main(["ef", "--video", str(tmp_path / "nope.avi"), "--weights", str(wpath)]) == 2
    (tmp_path / "bad.avi").write_bytes(b"garbage")
    assert main(["ef", "--video", str(tmp_path / "bad.avi"), "--weights", str(wpath)]) == 2
    assert main(["ef", "--video", str(tmp_path / "clip.npy"), "--weights", str(tmp_path / "x.safetensors")]) == 2
    np.save(tmp_path / "one.npy", video[:1])
    assert main(["ef", "--video", str(tmp_path / "one.npy"), "--weights", str(wpath)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "Traceback" not in err


def test_prepare_clip_uses_one_crop_for_the_whole_clip():
    from echogen.data.clips import prepare_clip

    # a bright fan-like blob on a 240x320 RGB canvas with a moving dot inside; text outside is blanked
    t, h, w = 6, 240, 320
    frames = np.zeros((t, h, w, 3), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    fan = ((yy - 20) ** 2 + (xx - 160) ** 2 < 200 ** 2) & (np.abs(xx - 160) < (yy - 20) * 0.9)
    rng = np.random.default_rng(0)
    for i in range(t):
        frames[i][fan] = rng.integers(60, 200, size=(fan.sum(), 1))
        frames[i, 100 + 10 * i:110 + 10 * i, 150:170] = 255
    out = prepare_clip(frames, 112)
    assert out.shape == (t, 112, 112) and out.dtype == np.uint8
    # the static fan edge lands on the same pixels in every frame (one crop for all)
    edges = (out > 0).reshape(t, -1)
    assert (edges[0] ^ edges[-1]).mean() < 0.02


def _pulsing_disc(ef: float, frames: int = 8, size: int = 32, phase: float = 0.0) -> torch.Tensor:
    """(1, T, H, W) a bright disc whose area falls by ef % from 'diastole' to 'systole' and back."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r_ed = size / 3.2
    r_es = r_ed * math.sqrt(1 - ef / 100)
    out = []
    for k in range(frames):
        r = r_es + (r_ed - r_es) * (0.5 + 0.5 * math.cos(2 * math.pi * k / frames + phase))
        out.append(((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r).float() * 0.8)
    return torch.stack(out)[None]


def test_learns_ef_from_motion():
    # Four clips that differ only in how much the "ventricle" contracts: the network must read motion.
    torch.manual_seed(0)
    efs = torch.tensor([20.0, 40.0, 60.0, 80.0])
    x = torch.stack([_pulsing_disc(float(e), size=24, phase=i) for i, e in enumerate(efs)])   # (4, 1, 8, 24, 24)
    cfg = RegressorConfig(frames=8, size=24, stem_width=4, widths=(8, 8), blocks=(1, 1), stem_stride=2,
                          norm="group", groups=4)
    model = EFRegressor(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny convs: extra threads only contend on a shared CPU
    try:
        for _ in range(120):
            loss = torch.nn.functional.mse_loss(model(x), efs)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.sqrt() < 3.0        # from ~23 (the spread of the targets)


def test_load_dispatches_to_echonet_published_architecture(tmp_path):
    from echogen.nets.echonet_r2plus1d import EchoNetConfig, EchoNetR2Plus1D

    torch.manual_seed(0)
    ecfg = EchoNetConfig(frames=4, period=2, widths=(4, 8), blocks=(1, 1), stem_mid=4, clip_stride=3)
    net = EchoNetR2Plus1D(ecfg).eval()
    save_tensors(tmp_path / "echonet.safetensors", net.state_dict(), "regressor", ecfg.to_dict())
    model, cfg = load_regressor(tmp_path / "echonet.safetensors")
    assert isinstance(model, EchoNetR2Plus1D) and cfg == ecfg
    video = np.random.default_rng(0).random((20, 112, 112)).astype(np.float32)
    mean, per = predict_ef(model, cfg, video, fps=50.0)                # its own clip protocol
    assert per == pytest.approx(net.predict_video(torch.from_numpy(video), 50.0), abs=1e-5)
    assert mean == pytest.approx(np.mean(per), abs=1e-5)
    save_tensors(tmp_path / "alien.safetensors", net.state_dict(), "regressor", dict(ecfg.to_dict(), arch="x"))
    with pytest.raises(WeightsError):
        load_regressor(tmp_path / "alien.safetensors")
