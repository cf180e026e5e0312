"""Checkpoint hygiene: half-precision Adam moments resume, and a fresh run can start from a bundle alone."""
import torch

from echogen.diffusion.cascade import Cascade
from echogen.weights.checkpoint import init_from_bundle, load_checkpoint, save_checkpoint


def _trained(seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        m(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
    return m, opt


def test_bf16_moments_round_trip_and_resume(tmp_path):
    m, opt = _trained()
    save_checkpoint(tmp_path, m, m, opt, {"step": 3}, {"what": "test"}, moments_dtype=torch.bfloat16)
    from safetensors.torch import load_file
    moments = load_file(tmp_path / "ckpt" / "optim.safetensors")
    assert {v.dtype for k, v in moments.items() if "exp_avg" in k} == {torch.bfloat16}
    m2, opt2 = _trained(seed=1)
    assert load_checkpoint(tmp_path, m2, m2, opt2) == {"step": 3}
    for p, q in zip(m.parameters(), m2.parameters()):
        assert torch.equal(p, q)
        a, b = opt.state[p]["exp_avg_sq"], opt2.state[q]["exp_avg_sq"]
        assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-2, atol=1e-12)
    opt2.step()   # resumes with float32 moments


def test_init_from_bundle_loads_the_stage(tmp_path):
    src = Cascade.random("tiny", seed=1)
    src.save(tmp_path / "bundle")
    fresh = Cascade.random("tiny", seed=2)
    net = fresh.denoisers["spatial"].net
    init_from_bundle(tmp_path / "bundle", "spatial", net)
    for (k, a), b in zip(net.state_dict().items(), src.denoisers["spatial"].net.state_dict().values()):
        assert torch.equal(a, b), k
    import pytest
    from echogen.weights.bundle import WeightsError
    with pytest.raises(WeightsError, match="no weights for stage 'nope'"):
        init_from_bundle(tmp_path / "bundle", "nope", net)
