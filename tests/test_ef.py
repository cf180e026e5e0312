"""One EF rule for the whole project (echogen.ef) and one EF-of-a-video function (echogen.eval.reading)."""
import numpy as np
import pytest
import torch

from echogen.ef import EF_MAX, EF_MIN, EFError, check_ef, check_efs, parse_efs, to_network


def test_parse_efs_accepts_lists_and_separators():
    assert parse_efs("20, 35;50") == [20.0, 35.0, 50.0]
    assert parse_efs([20, "80"]) == [20.0, 80.0]


@pytest.mark.parametrize("bad", ["", "abc", "0, 50", "50, 100", "nan", "inf", "20,,x"])
def test_parse_efs_rejects_with_a_valueerror_naming_the_list(bad):
    with pytest.raises(ValueError, match="--efs"):
        parse_efs(bad, what="--efs")


def test_parse_efs_count_limit():
    assert len(parse_efs("10,20,30,40,50", max_count=5)) == 5
    with pytest.raises(EFError, match="at most 5"):
        parse_efs("10,20,30,40,50,60", max_count=5)


def test_ef_zero_is_not_an_ef():
    """The imagen3d networks read EF 0 as 'no EF' (the guidance null): never accepted as a request."""
    with pytest.raises(EFError):
        check_ef(0)
    assert check_ef(EF_MIN) == EF_MIN and check_ef(EF_MAX) == EF_MAX
    assert torch.equal(check_efs([20, 50]), torch.tensor([20.0, 50.0]))
    assert torch.allclose(to_network(torch.tensor([50.0])), torch.tensor([0.5]))


def test_cascade_and_cli_use_the_same_rule(tmp_path):
    from echogen.cli.main import main
    from echogen.diffusion.cascade import Cascade
    c = Cascade.random("tiny")
    with pytest.raises(EFError):
        c.sample(np.full((16, 16), 0.5, np.float32), 0.0, steps={"base": 1})
    img = tmp_path / "f.npy"
    np.save(img, np.full((32, 32), 0.5, np.float32))
    assert main(["generate", "--image", str(img), "--ef", "99", "--out", str(tmp_path / "o.npy"),
                 "--random-init", "--preset", "tiny"]) == 2


class _FixedRegressor(torch.nn.Module):
    """EF = 100 * mean brightness of the clip: lets the reading's resizing be checked exactly."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg, self.w = cfg, torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x.flatten(1).mean(1) * 100 * self.w


def test_video_ef_reads_any_size_and_dtype():
    from echogen.eval.reading import video_ef
    from echogen.nets.regressor import get_regressor_preset
    cfg = get_regressor_preset("tiny")
    reg = (_FixedRegressor(cfg), cfg)
    v = np.full((40, 64, 64), 0.4, np.float32)
    ef, clips = video_ef(reg, v, 50.0)
    assert ef == pytest.approx(40.0, abs=1e-3) and len(clips) >= 1
    ef8, _ = video_ef(reg, (v * 255).round().astype(np.uint8), 50.0)
    assert ef8 == pytest.approx(40.0, abs=0.2)
    assert video_ef(reg, torch.from_numpy(v)[None, None], 50.0)[0] == pytest.approx(ef)
    assert video_ef(None, v, 50.0) is None
    with pytest.raises(ValueError, match="square"):
        video_ef(reg, np.zeros((8, 32, 40), np.float32), 50.0)
