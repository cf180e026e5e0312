"""Metric maths on inputs whose answers are known."""
import math

import numpy as np
import pytest
import torch

from echogen.eval.metrics import (best_of_k, frechet_distance, gaussian_window, mae, r2, regression_metrics, rmse,
                             ssim, ssim_per_frame, ssim_videos)


def test_r2_perfect_mean_and_known_values():
    y = np.array([20.0, 35.0, 50.0, 65.0, 80.0])
    assert r2(y, y) == 1.0
    assert abs(r2(y, np.full_like(y, y.mean()))) < 1e-12     # predicting the mean scores 0
    p = y + np.array([1.0, -1.0, 2.0, -2.0, 0.0])
    assert mae(y, p) == pytest.approx(6.0 / 5)
    assert rmse(y, p) == pytest.approx(math.sqrt(10.0 / 5))
    assert r2(y, p) == pytest.approx(1 - 10.0 / ((y - y.mean()) ** 2).sum())
    m = regression_metrics(torch.tensor(y), torch.tensor(p))
    assert set(m) == {"r2", "mae", "rmse"} and m["mae"] == pytest.approx(1.2)
    assert math.isnan(r2([5.0, 5.0], [4.0, 6.0]))
    with pytest.raises(ValueError):
        mae([1.0, 2.0], [1.0])


def test_best_of_k():
    t = np.array([30.0, 60.0, 45.0])
    p = np.array([[10.0, 31.0, 50.0], [59.0, 70.0, 61.5], [45.0, 45.0, 0.0]])
    chosen, idx = best_of_k(t, p, return_index=True)
    assert chosen.tolist() == [31.0, 59.0, 45.0]
    assert idx.tolist() == [1, 0, 0]
    assert best_of_k(t, p[:, :1]).tolist() == [10.0, 59.0, 45.0]   # K=1 is single-sample
    with pytest.raises(ValueError):
        best_of_k(t, p[:2])


def test_gaussian_window():
    w = gaussian_window()
    assert w.shape == (11, 11) and float(w.sum()) == pytest.approx(1.0)
    assert w[5, 5] == w.max() and torch.allclose(w, w.T)


def test_ssim_identical_is_one_and_decreases_with_noise():
    g = torch.Generator().manual_seed(0)
    v = torch.rand(4, 32, 32, generator=g)
    assert ssim(v, v) == pytest.approx(1.0, abs=1e-12)
    scores = [ssim(v, (v + s * torch.randn(v.shape, generator=g)).clamp(0, 1)) for s in (0.02, 0.1, 0.3)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    # uint8 with data_range 255 gives the same number as [0, 1] floats
    v8 = (v * 255).round().to(torch.uint8)
    n8 = (v8.int() + 10).clamp(0, 255).to(torch.uint8)
    assert ssim(v8, n8, data_range=255) == pytest.approx(ssim(v8.double() / 255, n8.double() / 255), abs=1e-12)


def test_ssim_hand_computation_on_one_window():
    # An 11x11 pair has exactly one valid window position: SSIM is the formula on weighted moments.
    rng = np.random.default_rng(1)
    x, y = rng.random((11, 11)), rng.random((11, 11))
    w = gaussian_window().numpy()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert ssim(x, y) == pytest.approx(want, rel=1e-10)


def test_ssim_video_means_over_frames_and_per_video():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 1, 3, 16, 16, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    per = ssim_per_frame(a, b)
    assert per.shape == (2, 1, 3)
    assert ssim(a, b) == pytest.approx(float(per.mean()))
    vids = ssim_videos(a, b)
    assert vids.shape == (2,) and vids[0] == pytest.approx(ssim(a[0], b[0]))
    with pytest.raises(ValueError):
        ssim(torch.rand(8, 8), torch.rand(8, 8))     # smaller than the window


def test_frechet_distance():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    b = rng.standard_normal((4000, 4)) + shift
    # same covariance (identity) -> distance ~ squared mean shift (5.25), up to sampling error
    assert frechet_distance(a, b) == pytest.approx(float((shift ** 2).sum()), abs=0.2)
    # closed form with different covariances, 1-D: FD(c, 2c) = mean(c)^2 + (sd - 2 sd)^2 = mean^2 + var
    c = rng.standard_normal((500, 1))
    assert frechet_distance(c, 2 * c) == pytest.approx(c.mean() ** 2 + c.var(ddof=1), rel=1e-9)
    assert frechet_distance(torch.tensor(a), torch.tensor(a)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :3])


def test_mae_by_bin_counts_each_true_ef_once():
    from echogen.eval.metrics import mae_by_bin
    y = [10, 34.5, 35, 49, 64.5, 65, 100]
    yh = [12, 34.5, 40, 49, 60.5, 70, 90]
    assert mae_by_bin(y, yh) == [(0, 35, 2, 1.0), (35, 50, 2, 2.5), (50, 65, 1, 4.0), (65, 100, 2, 7.5)]
    assert mae_by_bin([70], [71], edges=(0, 50, 100))[0] == (0, 50, 0, None)
