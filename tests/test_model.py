"""The space-time UNet, the cascade, weights round trips and one training step per stage."""
import json

import pytest
import torch

from echogen.diffusion.cascade import Cascade, build_denoiser
from echogen.config import CascadeConfig, get_preset
from echogen.nets.layers import TemporalAttention, TemporalConv
from echogen.data.resample import lowres_from_target, resample_time, upsample_video
from echogen.diffusion.training import stage_loss
from echogen.nets.unet import SpaceTimeUNet
from echogen.weights.bundle import WeightsError, load_tensors, save_tensors


def _inputs(stage, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, t = stage.size, stage.frames
    kw = dict(x=torch.randn(b, 1, t, s, s, generator=g), c_noise=torch.randn(b, generator=g),
              frame=torch.rand(b, 1, s, s, generator=g), ef=torch.rand(b, generator=g))
    if not stage.is_base:
        kw.update(lowres=torch.randn(b, 1, t, s, s, generator=g), aug=torch.rand(b, generator=g))
    return kw


def test_temporal_conv_is_exact_identity_at_init():
    conv = TemporalConv(6, 3)
    x = torch.randn(2, 6, 7, 5, 5)
    assert torch.equal(conv(x), x)


def test_fresh_video_unet_equals_its_image_model():
    # temporal convs are identities and temporal attention outputs start at zero
    for stage in get_preset("tiny").stages:
        net = SpaceTimeUNet(stage.unet).eval()
        temporal = {id(p) for m in net.modules() if isinstance(m, (TemporalConv, TemporalAttention))
                    for p in m.parameters()}
        with torch.no_grad():
            for p in net.parameters():  # make the zero-initialised spatial layers non-trivial
                if id(p) not in temporal and p.abs().sum() == 0:
                    p.normal_(0, 0.02)
        kw = _inputs(stage)
        with torch.no_grad():
            a, b = net(**kw), net(**kw, ignore_time=True)
        assert torch.allclose(a, b, atol=1e-6), stage.name


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_unet_shapes(preset):
    for stage in get_preset(preset).stages:
        net = SpaceTimeUNet(stage.unet)
        kw = _inputs(stage, b=1)
        if preset == "demo":
            kw = {k: v[..., :4, :, :] if k in ("x", "lowres") else v for k, v in kw.items()}
        with torch.no_grad():
            out = net(**kw)
        assert out.shape == kw["x"].shape


def test_sr_stage_requires_lowres():
    stage = get_preset("tiny").stage("spatial")
    kw = _inputs(stage)
    kw.pop("lowres")
    with pytest.raises(ValueError, match="lowres"):
        SpaceTimeUNet(stage.unet)(**kw)


def test_config_json_round_trip():
    for name in ["demo", "tiny", "1SCM", "2SCM", "4SCM"]:
        c = get_preset(name)
        assert CascadeConfig.from_dict(json.loads(c.to_json())) == c


def test_paper_presets_match_paper():
    assert [(s.size, s.frames, s.fps) for s in get_preset("4SCM").stages] == \
        [(56, 16, 8.0), (56, 32, 16.0), (56, 64, 32.0), (112, 64, 32.0)]
    assert [(s.size, s.frames) for s in get_preset("2SCM").stages] == [(56, 16), (112, 64)]
    assert [s.steps for s in get_preset("4SCM").stages] == [32, 32, 32, 64]
    assert not get_preset("4SCM").stages[-1].unet.mid_attn
    for name in ["1SCM", "2SCM", "4SCM"]:
        for s in get_preset(name).stages:
            assert s.unet.base_width == 64 and s.unet.channel_mult == (1, 2, 4) and s.guidance == 5.0


def test_demo_output_covers_a_heartbeat():
    last = get_preset("demo").stages[-1]
    assert last.size == 112 and last.frames >= 32 and last.frames / last.fps >= 1.2  # 50 bpm beat


def test_time_resampling_aligns_frames():
    v = torch.arange(8.0).reshape(1, 1, 8, 1, 1)                      # frame k holds value k (fps 4)
    up = resample_time(v, 16, 0.5)                                   # to fps 8: frame j at position j/2
    assert torch.allclose(up[0, 0, :15, 0, 0], torch.arange(15) / 2)
    lo = lowres_from_target(up, 8.0, 8, 4.0, 1)                      # back: pick every 2nd frame
    assert torch.allclose(lo, v)
    assert upsample_video(v, 4.0, 16, 8.0, 3).shape == (1, 1, 16, 3, 3)


def test_cascade_random_demo_shapes_and_stage_switch():
    c = Cascade.random("demo")
    steps = {n: 1 for n in c.config.stage_names}
    res = c.sample(torch.rand(112, 112), 40.0, steps=steps, seed=3)
    assert [r.name for r in res] == ["base", "spatial", "temporal"]
    assert res[0].video.shape == (1, 1, 16, 28, 28)
    assert res[1].video.shape == (1, 1, 16, 112, 112)
    assert res[2].video.shape == (1, 1, 32, 112, 112) and res[2].fps == 25.0
    assert all(r.sampled for r in res)
    off = c.sample(torch.rand(112, 112), 40.0, steps=steps, seed=3, stages=["base", "temporal"])
    assert not off[1].sampled and "switched off" in off[1].note
    assert off[2].video.shape == res[2].video.shape


def test_sigma_start_keeps_the_upsampled_lowres_video():
    """SDEdit start for the SR stages: from sigma_start ~ 0 an SR stage returns its input (the
    previous stage's output, upsampled) whatever its network; with sigma_start 0 (from pure noise at
    sigma_max) it does not."""
    c = Cascade.random("tiny", seed=2)
    f = torch.rand(16, 16)
    plain = c.sample(f, [30, 70], seed=4, stages=["base"])                 # SR stages: plain upsampling
    tiny = c.sample(f, [30, 70], seed=4, sigma_start={"spatial": 1e-3, "temporal": 1e-3})
    full = c.sample(f, [30, 70], seed=4, sigma_start={"spatial": 0.0, "temporal": 0.0})   # from pure noise
    assert torch.equal(plain[0].video, tiny[0].video)                        # same base sample
    assert (tiny[-1].video - plain[-1].video).abs().max() < 0.01
    assert (full[-1].video - plain[-1].video).abs().max() > 0.1
    for bad in (-1.0, 80.0):
        with pytest.raises(ValueError, match="sigma_start"):
            c.sample(f, 50, sigma_start={"spatial": bad})
    with pytest.raises(ValueError, match="sigma_start: unknown stage 'nope'"):
        c.sample(f, 50, sigma_start={"nope": 0.5})


def test_cascade_same_seed_same_output_and_bad_inputs():
    c = Cascade.random("tiny")
    f = torch.rand(16, 16)
    a = c.sample(f, [30, 70], seed=5)[-1].video
    b = c.sample(f, [30, 70], seed=5)[-1].video
    d = c.sample(f, [30, 70], seed=6)[-1].video
    assert torch.equal(a, b) and not torch.equal(a, d)
    with pytest.raises(ValueError, match="EF"):
        c.sample(f, 150)
    with pytest.raises(ValueError, match="unknown stage"):
        c.sample(f, 50, stages=["base", "nope"])


def test_bundle_round_trip_is_bit_identical(tmp_path):
    c = Cascade.random("tiny", seed=1)
    c.save(tmp_path / "b", note="test")
    c2 = Cascade.load(tmp_path / "b")
    f = torch.rand(16, 16)
    assert torch.equal(c.sample(f, 55, seed=2)[-1].video, c2.sample(f, 55, seed=2)[-1].video)
    _, cfg, meta = load_tensors(tmp_path / "b" / "base.safetensors", kind="stage")
    assert cfg["name"] == "base" and meta["preset"] == "tiny"


def test_bundle_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        Cascade.load(tmp_path / "absent")
    c = Cascade.random("tiny")
    c.save(tmp_path / "b")
    with pytest.raises(WeightsError, match="preset 'tiny', not 'demo'"):
        Cascade.load(tmp_path / "b", preset="demo")
    # a mis-shaped tensor is named
    t, cfg, _ = load_tensors(tmp_path / "b" / "spatial.safetensors")
    t["out.bias"] = torch.zeros(3)
    save_tensors(tmp_path / "b" / "spatial.safetensors", t, "stage", cfg)
    with pytest.raises(WeightsError, match="out.bias"):
        Cascade.load(tmp_path / "b")
    # a missing file
    (tmp_path / "b" / "spatial.safetensors").unlink()
    with pytest.raises(WeightsError, match="not found"):
        Cascade.load(tmp_path / "b")
    # a file that is not safetensors
    (tmp_path / "b" / "spatial.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(WeightsError, match="not a readable"):
        Cascade.load(tmp_path / "b")


@pytest.mark.parametrize("stage_name", ["base", "spatial", "temporal"])
def test_one_training_step_per_stage(stage_name):
    cascade = get_preset("tiny")
    stage = cascade.stage(stage_name)
    torch.manual_seed(0)
    den = build_denoiser(stage, cascade.diffusion)
    opt = torch.optim.Adam(den.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batch = {"video": torch.rand(2, 1, stage.frames, 32, 32), "frame": torch.rand(2, 1, 32, 32),
             "ef": torch.tensor([25.0, 70.0])}
    before = [p.detach().clone() for p in den.parameters()]
    for _ in range(3):  # zero-initialised output layers: gradients reach every layer by step 3
        loss = stage_loss(den, cascade, stage, batch, g, "cpu")
        assert torch.isfinite(loss) and loss.item() > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, den.parameters()))
    assert changed > len(before) // 2


def test_per_stage_cli_values_name_the_bad_option():
    from echogen.diffusion.stage import parse_per_stage
    names = ["base", "spatial", "temporal"]
    assert parse_per_stage("0.25", names, float, "sigma-start") == {n: 0.25 for n in names}
    assert parse_per_stage("spatial=0.25, temporal=0.15", names, float, "sigma-start") == \
        {"spatial": 0.25, "temporal": 0.15}
    with pytest.raises(ValueError, match="--sigma-start: 'abc' is not a valid float"):
        parse_per_stage("spatial=abc", names, float, "sigma-start")
    with pytest.raises(ValueError, match="--steps: unknown stage 'nope'"):
        parse_per_stage("nope=3", names, int, "steps")
