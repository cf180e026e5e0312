"""Few-step distillation (issue 24): the target algebra against an exact denoiser, a student that learns a guided
teacher's many-step path in two Euler steps, and train/distill.py end to end on a tiny converted published
bundle (one process, resume, two torchrun ranks == one process at twice the batch)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from echogen.config import DiffusionConfig, StageConfig
from echogen.diffusion.distill import (DistillConfig, distill_loss, euler_target, interval_sigmas, student_sigmas,
                                       teacher_solve)
from echogen.diffusion.guidance import GuidedDenoiser
from echogen.diffusion.samplers import sample_euler
from scripts import run_script

ROOT = Path(__file__).resolve().parent.parent
DISTILL = ROOT / "train" / "distill.py"
DIFF = DiffusionConfig()


class GaussianDenoiser(torch.nn.Module):
    """The exact denoiser of data ~ N(0, s^2 I): D(x; sigma) = x s^2 / (s^2 + sigma^2); with ef_keep False it is
    the exact denoiser of N(0, s_u^2 I) (an 'unconditional' model), so guidance has an exact meaning too."""

    def __init__(self, s=0.5, s_u=0.3):
        super().__init__()
        self.s, self.s_u = s, s_u

    def forward(self, x, sigma, ef_keep=None, **_):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))) if sigma.ndim else sigma
        s = torch.full((x.shape[0],), self.s) if ef_keep is None else torch.where(ef_keep, self.s, self.s_u)
        s2 = s.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return x * s2 / (s2 + sigma ** 2)


def ode_solution(x, sigma, sigma_next, s):
    """Probability-flow ODE of N(0, s^2): x scales with sqrt(s^2 + sigma^2)."""
    return x * ((s ** 2 + sigma_next ** 2) / (s ** 2 + sigma ** 2)) ** 0.5


def test_teacher_solve_follows_the_exact_ode_and_the_euler_target_lands_on_it():
    x = torch.randn(3, 1, 2, 4, 4) * 10.0
    den = GaussianDenoiser()
    for a, b in [(10.0, 1.0), (1.0, 0.05), (0.5, 0.0)]:
        y = teacher_solve(lambda z, sg: den(z, sg), x, a, b, 400, "euler", DIFF)
        exact = ode_solution(x, a, max(b, 0.0), den.s) if b > 0 else ode_solution(x, a, 0.0, den.s)
        torch.testing.assert_close(y, exact, rtol=2e-2, atol=2e-3)
        D = euler_target(x, exact, a, b)          # one Euler step with this D lands exactly on the solution
        torch.testing.assert_close(x + (b - a) * (x - D) / a, exact, rtol=1e-5, atol=1e-5)
    sig = interval_sigmas(5.0, 0.0, 3, DIFF)
    assert sig[0] == 5.0 and sig[-1] == 0 and len(sig) == 4 and abs(float(sig[-2]) - DIFF.sigma_min) < 1e-6
    sig = interval_sigmas(5.0, 1.0, 3, DIFF)
    assert len(sig) == 4 and abs(float(sig[-1]) - 1.0) < 1e-6 and bool((sig[:-1] > sig[1:]).all())


class ScalarStudent(torch.nn.Module):
    """D(x; sigma) = a(sigma) x: for Gaussian data the best one-step map is linear, so this student can match
    the guided teacher's path exactly at its own noise levels."""

    def __init__(self, sigmas):
        super().__init__()
        self.sigmas = list(sigmas)
        self.a = torch.nn.Parameter(torch.full((len(sigmas),), 0.5))

    def forward(self, x, sigma, **_):
        s = float(sigma.flatten()[0]) if torch.is_tensor(sigma) else float(sigma)
        i = min(range(len(self.sigmas)), key=lambda k: abs(self.sigmas[k] - s))
        return self.a[i] * x


@pytest.mark.parametrize("forcing", [True, False])
def test_a_two_step_student_reproduces_the_guided_teacher(forcing):
    stage = StageConfig(name="base", size=4, frames=2, fps=1.0, sampler="euler", steps=64, guidance=3.0,
                        dynamic_threshold=0.0)
    cfg = DistillConfig(steps=2, substeps=64, sigma_min=0.2)
    sig = student_sigmas(stage, cfg, DIFF)
    teacher, student = GaussianDenoiser(), ScalarStudent(sig[:-1])
    cond = {"ef": torch.zeros(64)}
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    for it in range(300):
        x = torch.randn((64, 1, 2, 4, 4), generator=torch.Generator().manual_seed(it)) * sig[0]
        loss, _ = distill_loss(student, teacher, stage, DIFF, cfg, cond, x, forcing)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn((256, 1, 2, 4, 4), generator=torch.Generator().manual_seed(999)) * sig[0]
    guided = GuidedDenoiser(teacher, {"ef": torch.zeros(256)}, stage.guidance)
    ref = x    # the teacher's path as the teacher solves it: 64 of its steps per student step
    for a, b in zip(sig[:-1], sig[1:]):
        ref = teacher_solve(guided, ref, a, b, cfg.substeps, "euler", DIFF)
    with torch.no_grad():
        two = sample_euler(lambda z, s: student(z, s), x, torch.tensor(sig))
    assert float((two - ref).abs().max()) < 0.02 * float(ref.abs().max()), (two - ref).abs().max()
    # without distillation, two Euler steps of the guided teacher are far off
    plain = sample_euler(GuidedDenoiser(teacher, {"ef": torch.zeros(256)}, stage.guidance), x, torch.tensor(sig))
    assert float((plain - ref).abs().max()) > 5 * float((two - ref).abs().max())


# ---- train/distill.py on a tiny converted published bundle ------------------------------------------------
@pytest.fixture(scope="module")
def converted_bundle(tmp_path_factory):
    import test_convert as tc
    from safetensors.torch import load_file
    from echogen.weights.convert import convert_imagen_checkpoint
    t = load_file(str(tc.FIX / "imagen_tiny.safetensors"))
    meta = json.loads((tc.FIX / "imagen_tiny.json").read_text())
    tmp = tmp_path_factory.mktemp("converted")
    ck, cfg = tc._write(tmp, tc._merged(t, meta), tc._config(meta))
    convert_imagen_checkpoint(ck, cfg, tmp / "bundle")
    return tmp / "bundle"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from echogen.data.phantom import write_phantom
    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root, videos=6, seed=0, workers=1, sim="v1")
    return root


def _distill(args, nproc=1):
    from test_ddp import _run
    return _run(DISTILL, args, nproc=nproc)


def _args(bundle, data, out, stage, iters, batch, *extra):
    return ["--teacher", bundle, "--stage", stage, "--data", data, "--out", out, "--iters", iters, "--batch", batch,
            "--log-every", 1, "--ckpt-every", 2, "--sample-every", 0, "--threads", 1, "--lr", 1e-3, *extra]


def _losses(run):
    return [float(r.split(",")[1]) for r in (Path(run) / "loss.csv").read_text().splitlines()[1:]]


@pytest.mark.slow
def test_distill_a_converted_bundle_resume_and_generate(converted_bundle, phantom, tmp_path):
    from echogen.diffusion.cascade import Cascade
    from echogen.diffusion.stage import cascade_nfe
    out = tmp_path / "fast"
    # base: on-the-fly teacher targets (half teacher-forced, half on the student's states), 2 student steps
    _distill(_args(converted_bundle, phantom, tmp_path / "b", "stage1", 3, 2, "--bundle", out, "--steps-student", 2,
                   "--substeps", 2))
    # an SR stage from the trajectory cache, 1 step; 2 iterations, then resumed to 4 = 4 in one go
    sr = ["--bundle", out, "--steps-student", 1, "--substeps", 2, "--trajectories", 4]
    _distill(_args(converted_bundle, phantom, tmp_path / "s", "stage2", 2, 2, *sr))
    _distill(_args(converted_bundle, phantom, tmp_path / "s", "stage2", 4, 2, *sr))
    _distill(_args(converted_bundle, phantom, tmp_path / "s4", "stage2", 4, 2, "--steps-student", 1, "--substeps", 2,
                   "--trajectories", 4))
    a, b = _losses(tmp_path / "s"), _losses(tmp_path / "s4")
    assert len(a) == 4 and a == pytest.approx(b, rel=1e-5, abs=1e-9)
    assert "resumed from" in (tmp_path / "s" / "log.txt").read_text()
    # a warm start from that student (--init-student; lr 0: the export must be the file it started from) ...
    from echogen.weights.bundle import load_tensors
    _distill(_args(converted_bundle, phantom, tmp_path / "w", "stage2", 1, 2, "--steps-student", 1, "--substeps", 2,
                   "--trajectories", 4, "--init-student", tmp_path / "s" / "stage2.safetensors", "--lr", 0))
    w0, w1 = (load_tensors(r / "stage2.safetensors")[0] for r in (tmp_path / "s", tmp_path / "w"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not all(torch.equal(w0[k], v) for k, v in load_tensors(converted_bundle / "stage2.safetensors")[0].items())
    # ... and a student of another schedule is refused with the reason
    r = run_script(DISTILL, _args(converted_bundle, phantom, tmp_path / "w2", "stage2", 1, 2, "--steps-student", 2,
                                  "--substeps", 2, "--init-student", tmp_path / "s" / "stage2.safetensors"))
    assert r.returncode != 0 and "its stage config differs" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "stage1.safetensors", "stage2.safetensors"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["variant"] == "fast" and man["stages"]["stage3"].startswith("..")    # the teacher's file, by reference
    assert set(man["provenance"]["distilled"]) == {"stage1", "stage2"}
    casc = Cascade.load(out)
    st = {s.name: s for s in casc.config.stages}
    assert (st["stage1"].sampler, st["stage1"].steps, st["stage1"].guidance) == ("euler", 2, 1.0)
    assert (st["stage2"].steps, st["stage3"].sampler) == (1, "heun")                 # stage 3 is the teacher's
    assert cascade_nfe(casc.config) == 2 + 1 + (2 * 3 - 1)
    res = casc.sample(torch.rand(16, 16), 40.0, seed=3)
    assert all(torch.isfinite(r.video).all() for r in res) and res[-1].video.shape[-1] == 16


@pytest.mark.slow
def test_distill_two_ranks_equal_one_process(converted_bundle, phantom, tmp_path):
    for mode in (["--substeps", 2], ["--substeps", 2, "--trajectories", 4]):
        one, two = tmp_path / f"one{len(mode)}", tmp_path / f"two{len(mode)}"
        _distill(_args(converted_bundle, phantom, one, "stage1", 3, 2, "--steps-student", 2, *mode))
        _distill(_args(converted_bundle, phantom, two, "stage1", 3, 1, "--steps-student", 2, *mode), nproc=2)
        assert _losses(one) == pytest.approx(_losses(two), rel=1e-4, abs=1e-7), mode
