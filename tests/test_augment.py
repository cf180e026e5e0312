"""echogen.data.augment: determinism, ranges, shapes, masks following the geometry, time degradations."""
import dataclasses

import numpy as np
import pytest
import torch

from echogen.data.augment import (AugmentConfig, augment_clips, augment_video, get_augment_preset, time_indices, _Draw)


def _clip(t=16, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((t, size, size), generator=g) * 0.3
    x[:, 10:30, 15:35] = 0.9                                   # a bright block (moves with the geometry)
    return x


def only(**on) -> AugmentConfig:
    """Every op off except the named probabilities (set to 1)."""
    cfg = get_augment_preset("off")
    return dataclasses.replace(cfg, **{k: 1.0 for k in on if k.startswith("p_")},
                               **{k: v for k, v in on.items() if not k.startswith("p_")})


def test_same_generator_same_output_and_different_seeds_differ():
    x = torch.stack([_clip(seed=i) for i in range(3)])[:, None]            # (B, 1, T, H, W)
    a = augment_clips(x, torch.Generator().manual_seed(5))
    b = augment_clips(x, torch.Generator().manual_seed(5))
    c = augment_clips(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_off_is_identity_and_presets():
    x = torch.stack([_clip(), _clip(seed=1)])                             # (B, T, H, W)
    assert torch.equal(augment_clips(x, torch.Generator().manual_seed(0), get_augment_preset("off")), x)
    with pytest.raises(KeyError):
        get_augment_preset("strong")
    cfg = AugmentConfig()
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"p_nonsense": 1})


def test_wide_preset_changes_most_clips_and_spans_brightness():
    x = _clip()[None].repeat(24, 1, 1, 1)
    y = augment_clips(x, torch.Generator().manual_seed(1))
    changed = [(y[i] - x[i]).abs().mean() > 1e-3 for i in range(24)]
    assert sum(changed) >= 22
    means = y.flatten(1).mean(1)
    assert float(means.max() - means.min()) > 0.08                     # appearance varies clip to clip


def test_gain_gamma_ranges():
    x = torch.full((1, 8, 8), 0.5)
    for seed in range(20):
        y = augment_video(x, torch.Generator().manual_seed(seed), only(p_gamma=1, gamma=(0.5, 2.0)))
        assert 0.5 ** 2.0 - 1e-6 <= float(y.mean()) <= 0.5 ** 0.5 + 1e-6
        y = augment_video(x, torch.Generator().manual_seed(seed), only(p_gain=1, gain=(0.6, 1.5), bias=(0.0, 0.0)))
        assert 0.3 - 1e-6 <= float(y.mean()) <= 0.75 + 1e-6


def test_quantise_levels_and_jpeg():
    x = torch.linspace(0, 1, 32 * 32).view(1, 32, 32)
    y = augment_video(x, torch.Generator().manual_seed(0), only(p_quantise=1, levels=(8, 8)))
    assert len(torch.unique(y)) <= 8
    y = augment_video(x, torch.Generator().manual_seed(0), only(p_jpeg=1, jpeg_quality=(20, 20)))
    assert y.shape == x.shape and 0 < float((y - x).abs().mean()) < 0.05


def test_masks_follow_the_geometry_exactly():
    x = _clip()
    m = torch.zeros_like(x)
    m[:, 10:30, 15:35] = 1.0                                   # the mask is the bright block
    cfg = only(p_affine=1, rotate=(-12.0, 12.0), zoom=(0.85, 1.2), shift=0.08)
    for seed in range(5):
        y, mm, _ = augment_video(x, torch.Generator().manual_seed(seed), cfg, mask=m)
        assert set(torch.unique(mm).tolist()) <= {0.0, 1.0}
        inside, outside = y[mm > 0.5], y[(mm < 0.5) & (y > 0)]
        assert float(inside.mean()) > 0.7 and float(outside.mean()) < 0.4
    # batched call with masks and conditioning frames: same transform for all three
    xb, mb = x[None, None].repeat(2, 1, 1, 1, 1), m[None, None].repeat(2, 1, 1, 1, 1)
    fb = x[:1][None].repeat(2, 1, 1, 1)                                      # (B, 1, H, W)
    y, mm, ff = augment_clips(xb, torch.Generator().manual_seed(3), cfg, masks=mb, frames=fb)
    assert y.shape == xb.shape and mm.shape == mb.shape and ff.shape == fb.shape
    assert torch.allclose(ff[:, 0], y[:, 0, 0], atol=1e-6)    # frame 0 and the conditioning frame agree


def test_time_degradations():
    t = 32
    d = _Draw(torch.Generator().manual_seed(0))
    idx, keep = time_indices(t, 25.0, d, only(p_hold=1, hold_fps=(8.0, 8.0)))
    assert keep == t and len(torch.unique(idx)) == len(np.unique(np.floor(np.floor(np.arange(t) * 8 / 25 + 1e-6) * 25 / 8 + 1e-6)))
    assert len(torch.unique(idx)) <= 11                          # ~8 distinct frames per second at 25 fps
    assert torch.all(idx[1:] >= idx[:-1])
    x = torch.arange(t, dtype=torch.float32)[:, None, None].repeat(1, 4, 4) / t
    y = augment_video(x, torch.Generator().manual_seed(0), only(p_short=1, short_frames=(16, 16)))
    assert torch.all(y[16:] == 0) and torch.all(y[:16] == x[:16])
    y = augment_video(x, torch.Generator().manual_seed(0), only(p_speed=1, speed=(0.75, 0.75)))
    assert torch.equal(y[:, 0, 0], x[torch.floor(torch.arange(t) * 0.75 + 1e-6).long(), 0, 0])
    # single frames: temporal=False leaves the time axis alone
    y = augment_video(x, torch.Generator().manual_seed(0), only(p_short=1, short_frames=(16, 16)), temporal=False)
    assert torch.equal(y, x)


def test_sector_mask_blacks_out_the_corners():
    x = torch.full((2, 64, 64), 0.8)
    y = augment_video(x, torch.Generator().manual_seed(0), only(p_sector=1, sector_angle=(30.0, 30.0)))
    assert float(y[:, 2, 0].max()) == 0.0 and float(y[:, 2, -1].max()) == 0.0   # top corners outside the fan
    assert float(y[:, 40, 32].min()) > 0.7                                # centre inside it


def test_channels_of_a_clip_share_one_draw():
    x = _clip()[None, None].repeat(2, 2, 1, 1, 1)                          # (B=2, C=2, T, H, W), equal channels
    y = augment_clips(x, torch.Generator().manual_seed(4))
    assert torch.equal(y[:, 0], y[:, 1]) and not torch.equal(y[0], y[1])
