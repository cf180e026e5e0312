"""Sampling precision and torch.compile (issue 7): echogen.device.autocast, Cascade.set_speed, the CLI flags.

On this CPU-only CI the checks are: bf16 autocast runs both network families (autocast leaves in-place
products alone, so echogen/nets/kernels.py must give them one dtype) and stays close to float32; dynamo traces
both networks in ONE graph (fullgraph, backend "eager": no C++ build, same ops) with unchanged outputs.
Inductor itself is timed on a GPU by bench/gpu_check.sh, not here (minutes per network on this CPU)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from echogen.diffusion.cascade import Cascade, build_denoiser
from echogen.cli.main import main as cli_main
from echogen.config import StageConfig, get_preset, imagen_test_stage
from echogen.device import autocast, resolve_precision
from echogen.eval.bench import stage_inputs
from echogen.diffusion.guidance import GuidedDenoiser


def _demo_stage() -> StageConfig:
    st = get_preset("tiny").stages[2]          # temporal SR stage of the demo network family
    return dataclasses.replace(st, unet=dataclasses.replace(st.unet), guidance=3.0)


def _denoiser(st: StageConfig):
    torch.manual_seed(0)
    den = build_denoiser(st, get_preset("tiny").diffusion).eval()
    with torch.no_grad():   # random init zeroes output layers; give every parameter a non-trivial value
        for p in den.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return den


STAGES = {"imagen-base-4fr": lambda: imagen_test_stage(False, 4),      # temporal conv: in-place GEMM path
          "imagen-sr-9fr": lambda: imagen_test_stage(True, 9),         # temporal conv: Conv2d path
          "demo-temporal": _demo_stage}


def _call(den, st, precision="fp32"):
    inp = stage_inputs(st, batch=1)
    model = GuidedDenoiser(den, inp["cond"], st.guidance)
    with torch.no_grad(), autocast(torch.device("cpu"), precision):
        return model(inp["x"] * 0.8, 0.8)


def test_autocast_choices():
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto") == "fp32" and resolve_precision(cpu, "bf16") == "bf16"
    with autocast(cpu, "auto"):
        assert not torch.is_autocast_enabled("cpu")          # float32 on the CPU by default
    with autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        autocast(cpu, "fp16")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        autocast(cpu, "fp8")
    with pytest.raises(ValueError, match="fp16"):
        Cascade.random("tiny").set_speed("fp16")


@pytest.mark.parametrize("name", list(STAGES))
def test_bf16_autocast_runs_and_stays_close(name):
    st = STAGES[name]()
    den = _denoiser(st)
    ref, got = _call(den, st, "fp32"), _call(den, st, "bf16")
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert not torch.equal(got, ref)                            # bf16 really ran
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.05, f"bf16 relative error {rel:.3g}"


@pytest.mark.parametrize("name", list(STAGES))
def test_networks_trace_as_one_graph(name):
    st = STAGES[name]()
    den = _denoiser(st)
    ref = _call(den, st)
    torch._dynamo.reset()
    den.net.compile(backend="eager", fullgraph=True, dynamic=False)   # a graph break raises here
    torch.testing.assert_close(_call(den, st), ref, rtol=1e-5, atol=1e-5)
    assert den.state_dict().keys() == _denoiser(st).state_dict().keys()   # weights save as before


def test_set_speed_compiles_and_samples_the_same():
    casc = Cascade.random("tiny", seed=0)
    for den in casc.denoisers.values():
        with torch.no_grad():
            for p in den.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    frame, kw = torch.rand(16, 16), dict(steps={"base": 2}, stages=["base"], seed=3)   # SR stages: upsampled
    ref = casc.sample(frame, 40.0, **kw)
    torch._dynamo.reset()
    casc.set_speed("fp32", compile="default", backend="eager")
    assert casc.compiled == {"backend": "eager", "mode": "default"}
    got = casc.sample(frame, 40.0, **kw)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b.video, a.video, rtol=1e-5, atol=1e-5)
    bf = casc.sample(frame, 40.0, precision="bf16", **kw)
    assert not torch.equal(bf[-1].video, ref[-1].video)
    assert (bf[-1].video - ref[-1].video).abs().mean() < 0.02


def test_cli_precision(tmp_path, capsys):
    img = tmp_path / "f.npy"
    np.save(img, np.random.default_rng(0).random((112, 112)).astype(np.float32))
    base = ["generate", "--image", str(img), "--ef", "40", "--random-init", "--preset", "tiny"]
    assert cli_main(base + ["--out", str(tmp_path / "a.npy"), "--precision", "fp16"]) == 2
    assert "fp16 autocast needs a CUDA device" in capsys.readouterr().err
    assert cli_main(base + ["--out", str(tmp_path / "b.npy"), "--precision", "bf16"]) == 0
    js = tmp_path / "bench.json"
    assert cli_main(["bench", "--preset", "tiny", "--stages", "base", "--repeats", "1", "--no-memory",
                     "--precision", "bf16", "--json", str(js)]) == 0
    out = json.loads(js.read_text())
    assert out["precision"] == "bf16" and out["stages"][0]["precision"] == "bf16"
    assert out["stages"][0]["warmup_s"] > 0
    assert cli_main(["bench", "--preset", "tiny", "--compile", "--warmup", "0"]) == 2
    assert "--compile needs --warmup >= 1" in capsys.readouterr().err
