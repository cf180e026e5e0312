"""Data-parallel training with torchrun on 2 CPU ranks (gloo), issue 26.

For each stage type (base, spatial SR, temporal SR of the tiny cascade; the spatio-temporal SR stage of
a test-sized imagen3d cascade): 2 ranks at batch 2 give the same loss curve and weights as 1 process at
batch 4; a checkpoint written under torchrun resumes under torchrun onto the same curve; only rank 0
writes; the bundle exported by the torchrun run loads and generates. Then two single-process "nodes"
joined by a c10d rendezvous, each with its own run folder (no shared filesystem): the node of rank 0
alone writes, and resuming works from that node's checkpoint. The same for train/train_regressor.py and
train/train_tracer.py.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from scripts import run_script

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "train" / "train_stage.py"
REGRESSOR = ROOT / "train" / "train_regressor.py"
STEPS = 6          # seed 0: step index 2 is an image step (temporal layers skipped on every rank)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from echogen.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root, videos=6, seed=0)     # 4 TRAIN, 1 VAL, 1 TEST
    return root


@pytest.fixture(scope="module")
def imagen_preset(tmp_path_factory):
    """A two-stage cascade of test-sized imagen3d networks (the paper's layers): 8x8x4 -> 16x16x8."""
    from echogen.config import CascadeConfig, imagen_test_stage

    base = imagen_test_stage(False, 4, size=8)
    base.fps, base.batch_size = 4.0, 2
    sr = imagen_test_stage(True, 8, size=16)
    sr.name, sr.fps, sr.batch_size = "spatiotemporal", 8.0, 2
    path = tmp_path_factory.mktemp("imagen") / "imagen_tiny.json"
    path.write_text(json.dumps(CascadeConfig("imagen-tiny", [base, sr]).to_dict()))
    return path


@pytest.fixture(scope="module")
def shared_bundle(tmp_path_factory):
    return tmp_path_factory.mktemp("bundle") / "tiny"


@pytest.fixture(scope="module")
def one_process(phantom, tmp_path_factory):
    """The single-process reference run of a stage (STEPS steps at batch 4), trained once per module: the tiny
    base's is shared by the torchrun test and the two-node test (one launch less)."""
    runs = {}

    def run(preset, stage):
        if (preset, stage) not in runs:
            out = tmp_path_factory.mktemp(f"one_{stage}")
            _run(STAGE, _stage_args(phantom, preset, stage, out, STEPS, 4))
            runs[preset, stage] = out
        return runs[preset, stage]
    return run


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(script, args, nproc=1, timeout=240):
    """One process: in this one (tests/scripts.py); more: torchrun with nproc CPU ranks."""
    if nproc == 1:
        r = run_script(script, args)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
                f"--master_port={_free_port()}"]
    cmd = [sys.executable] + launcher + [str(script)] + [str(a) for a in args]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _two_nodes(script, args_of_node, static=False, expect_ok=True, timeout=240):
    """Two torchrun launchers of one process each on 127.0.0.1 (two "nodes"): a c10d rendezvous (node
    ranks assigned at the rendezvous), or static=True: the static rendezvous, node i gets --node_rank=i."""
    port = _free_port()
    procs, logs = [], []
    for i, node_args in enumerate(args_of_node):
        rdzv = [f"--node_rank={i}", "--master_addr=127.0.0.1", f"--master_port={port}"] if static else \
            ["--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=test{port}"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", *rdzv,
               str(script)] + [str(a) for a in node_args]
        # output to files, not pipes: waiting on one launcher while the other fills an undrained 64 KiB pipe
        # (progress bars: more of them the slower the box) blocked that one inside a collective -> both hung
        logs.append(tempfile.TemporaryFile("w+"))
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=logs[-1], stderr=subprocess.STDOUT,
                                      text=True))

    def output(i):
        procs[i].wait()
        logs[i].seek(0)
        return logs[i].read()
    if expect_ok:
        deadline = time.monotonic() + timeout
        try:
            for p in procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError("two-node run hung:\n" + "\n---\n".join(output(i)[-3000:] for i in range(len(procs))))
        outs = [output(i) for i in range(len(procs))]
    else:   # a failure is expected: once a node's launcher has exited, the other gets a grace period. The workers
        # stop with their message; torchelastic's launcher of the master node can outlive its failed peer,
        # waiting for a rendezvous that never comes (seen once in a fresh-clone run on an idle box): killed then.
        outs, grace = [None] * len(procs), None
        deadline = time.monotonic() + timeout
        while any(o is None for o in outs):
            for i, p in enumerate(procs):
                if outs[i] is None and p.poll() is not None:
                    outs[i] = output(i)
                    grace = grace or time.monotonic() + 60
            if time.monotonic() > min(deadline, grace or deadline):
                for i, p in enumerate(procs):
                    if outs[i] is None:
                        p.kill()
                        outs[i] = output(i) + "\n[killed: outlived its failed peer]"
            time.sleep(0.2)
        return procs, outs
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return procs, outs


def _losses(run):
    rows = [ln.split(",") for ln in (Path(run) / "loss.csv").read_text().splitlines()[1:]]
    return {int(s): float(v) for s, v in rows}


def _tensors(path):
    from safetensors.torch import load_file
    return load_file(str(path))


def _close(a, b, atol):
    assert a.keys() == b.keys()
    worst, key = max(((a[k].float() - b[k].float()).abs().max().item(), k) for k in a)
    assert worst < atol, (worst, key)


def _same_training(a, b):
    """Weights of two runs that saw the same data: all but a sliver of elements within 1e-4. Adam divides by
    sqrt(v), so for a parameter whose gradient is ~0 (e.g. the perceiver's latent norms) float rounding in
    the gradient all-reduce can flip an update's sign: up to ~lr per step for those few elements (measured
    once: 1e-3 on imagen3d spatiotemporal after 6 steps). A different batch, a missed gradient or a
    different dropout moves most elements apart."""
    assert a.keys() == b.keys()
    n = sum(v.numel() for v in a.values())
    off = sum(int(((a[k].float() - b[k].float()).abs() > 1e-4).sum()) for k in a)
    assert off <= 0.005 * n, f"{off} of {n} weights differ by more than 1e-4"


def _stage_args(phantom, preset, stage, out, steps, batch, **extra):
    args = ["--data", phantom, "--preset", preset, "--stage", stage, "--out", out, "--steps", steps,
            "--batch", batch, "--log-every", 1, "--sample-every", 0, "--threads", 1, "--ckpt-every", steps]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", v]
    return args


def test_image_steps_are_shared_and_drawn_as_the_paper_says():
    from echogen.data.batches import GlobalBatches
    from echogen.rng import step_generator

    image = [s for s in range(4000) if torch.rand((), generator=step_generator(0, s)) < 0.25]
    assert 2 in image and abs(len(image) / 4000 - 0.25) < 0.03       # 25 % of the steps, one draw per step
    # 2 ranks x 2 slots hold exactly the 4 slots of one process at batch 4, with the same seeds
    one = GlobalBatches(4, 4, seed=0, start_step=3).step_items(3)
    two = GlobalBatches(4, 2, 2, 0, seed=0).step_items(3) + GlobalBatches(4, 2, 2, 1, seed=0).step_items(3)
    assert one == two and sorted(i for i, _ in one) == [0, 1, 2, 3]  # one epoch per step: each video once


@pytest.mark.parametrize("preset,stage", [("tiny", "base"), ("tiny", "spatial"), ("tiny", "temporal"),
                                          ("imagen", "spatiotemporal")])
def test_two_ranks_equal_one_process_resume_and_export(phantom, imagen_preset, shared_bundle, one_process, tmp_path,
                                                       preset, stage):
    resume = stage in ("base", "spatiotemporal")   # checkpointing is stage-type free: resumed on a tiny + an imagen
    preset = str(imagen_preset) if preset == "imagen" else preset
    one, two = one_process(preset, stage), tmp_path / "two"
    bundle = shared_bundle if preset == "tiny" else tmp_path / "bundle"
    # torchrun: 4 steps (checkpoint + bundle + preview at 4), then resume to 6 under torchrun again (each launch
    # is ~3 torch imports; the SR stages of the tiny preset run the 6 steps in one launch)
    _run(STAGE, _stage_args(phantom, preset, stage, two, 4 if resume else STEPS, 2, bundle=bundle, sample_every=4),
         nproc=2)
    if resume:
        _run(STAGE, _stage_args(phantom, preset, stage, two, STEPS, 2, bundle=bundle), nproc=2)
    log = (two / "log.txt").read_text()
    assert ("resumed from" in log and "at step 4" in log) == resume and "batch 2 x 2" in log
    # only rank 0 logs / writes: each step's loss once
    for s in range(1, STEPS + 1):
        assert sum(f"step {s} loss " in ln for ln in log.splitlines()) == 1, s
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for s in a:
        assert abs(a[s] - b[s]) <= 1e-4 * max(1.0, abs(a[s])), (s, a[s], b[s])
    _same_training(_tensors(one / "ckpt/model.safetensors"), _tensors(two / "ckpt/model.safetensors"))
    _same_training(_tensors(one / f"{stage}.safetensors"), _tensors(bundle / f"{stage}.safetensors"))
    assert json.loads((two / "ckpt/state.json").read_text()) == {"step": STEPS, "seen": STEPS * 4}
    assert (two / "samples/step0000004.gif").is_file()
    assert json.loads((bundle / "manifest.json").read_text())["stages"][stage] == f"{stage}.safetensors"


def test_bundle_trained_under_torchrun_generates(shared_bundle):
    from echogen.diffusion.cascade import Cascade

    if not all((shared_bundle / f"{s}.safetensors").is_file() for s in ("base", "spatial", "temporal")):
        pytest.skip("needs the three tiny stages of test_two_ranks_equal_one_process_resume_and_export")
    out = Cascade.load(shared_bundle).sample(torch.rand(1, 1, 32, 32), 50.0, steps={"base": 2, "spatial": 2,
                                                                                    "temporal": 2}, seed=0)
    assert tuple(out[-1].video.shape[-3:]) == (8, 16, 16) and torch.isfinite(out[-1].video).all()


def test_two_nodes_without_shared_filesystem(phantom, one_process, tmp_path):
    """c10d rendezvous, one process per "node", each node with its own --out: only rank 0's folder is
    written. Resuming with the node that holds the folder as node 0 continues the single-process curve
    (the other node gets the state by broadcast); with the empty node as rank 0 every rank stops with a
    message instead of silently restarting the run."""
    one = one_process("tiny", "base")
    nodes = [tmp_path / "node_a", tmp_path / "node_b"]
    _two_nodes(STAGE, [_stage_args(phantom, "tiny", "base", n, 3, 2) for n in nodes])
    made = [n for n in nodes if n.exists()]
    assert len(made) == 1, made                            # the other node wrote nothing
    run, empty = made[0], [n for n in nodes if n != made[0]][0]
    procs, outs = _two_nodes(STAGE, [_stage_args(phantom, "tiny", "base", n, STEPS, 2) for n in (empty, run)],
                             static=True, expect_ok=False)
    assert all(p.returncode != 0 for p in procs) and "sees a checkpoint at step 3" in "".join(outs)
    _two_nodes(STAGE, [_stage_args(phantom, "tiny", "base", n, STEPS, 2) for n in (run, empty)], static=True)
    assert not empty.exists()
    assert "resumed from" in (run / "log.txt").read_text() and "batch 2 x 2" in (run / "log.txt").read_text()
    a, b = _losses(one), _losses(run)
    assert sorted(b) == list(range(1, STEPS + 1))
    assert all(abs(a[s] - b[s]) <= 1e-4 * max(1.0, abs(a[s])) for s in a), (a, b)
    _close(_tensors(one / "ckpt/model.safetensors"), _tensors(run / "ckpt/model.safetensors"), 1e-4)


def _one_process_then_two_nodes(script, phantom, tmp_path):
    """The single-process reference (4 steps at batch 2); a run of its first 2 steps in one process, resumed to 4
    steps by two "nodes" (own --out each, batch 1 per rank: the same global batch) from rank 0's folder after the
    empty node as rank 0 was refused; returns (one, run, log). (The c10d rendezvous and a fresh two-node start are
    script-independent: test_two_nodes_without_shared_filesystem runs them with train_stage.py.)"""
    common = ["--data", phantom, "--preset", "tiny", "--eval-every", 2, "--log-every", 1, "--threads", 1,
              "--test-videos", 0]
    one, run, empty = tmp_path / "one", tmp_path / "node_a", tmp_path / "node_b"
    _run(script, common + ["--out", one, "--steps", 4, "--batch", 2])
    _run(script, common + ["--out", run, "--steps", 2, "--batch", 2])
    procs, outs = _two_nodes(script, [common + ["--out", n, "--steps", 4, "--batch", 1] for n in (empty, run)],
                             static=True, expect_ok=False)
    assert all(p.returncode != 0 for p in procs) and "sees a checkpoint at step 2" in "".join(outs)
    _two_nodes(script, [common + ["--out", n, "--steps", 4, "--batch", 1] for n in (run, empty)], static=True)
    assert not empty.exists()
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and "at step 2" in log and "batch 1 x 2" in log
    assert json.loads((run / "state.json").read_text())["seen"] == 4 * 2
    return one, run, log


def test_regressor_two_nodes_equal_one_process_and_resume(phantom, tmp_path):
    one, run, log = _one_process_then_two_nodes(REGRESSOR, phantom, tmp_path)
    def curve(text):  # "step 3 train RMSE 24.291" and "step 2 VAL MAE ..." lines, without time stamps
        return [ln.split(" ", 2)[2].split(" (")[0] for ln in text.splitlines() if "RMSE" in ln]
    assert curve((one / "log.txt").read_text()) == curve(log)
    a = {k: v for k, v in _tensors(one / "ckpt.safetensors").items() if k.startswith(("model.", "ema."))}
    b = {k: v for k, v in _tensors(run / "ckpt.safetensors").items() if k.startswith(("model.", "ema."))}
    _close(a, b, 1e-4)


TRACER = ROOT / "train" / "train_tracer.py"


def test_tracer_two_nodes_equal_one_process_and_resume(phantom, tmp_path):
    """train_tracer.py as train_regressor.py: only rank 0's folder is written, a resume from it continues the
    single-process curve (the empty node gets the state by broadcast), the empty node as rank 0 is refused."""
    one, run, log = _one_process_then_two_nodes(TRACER, phantom, tmp_path)
    def curve(text):  # "step 3 loss 0.9 lr ..." lines, without time stamps
        return [ln.split(" ", 2)[2].split(" lr")[0].split() for ln in text.splitlines() if " loss " in ln]
    a_curve, b_curve = curve((one / "log.txt").read_text()), curve(log)
    assert len(a_curve) == len(b_curve) == 4
    for x, y in zip(a_curve, b_curve):
        assert x[:3] == y[:3] and abs(float(x[3]) - float(y[3])) < 1e-3, (x, y)
    a = {k: v for k, v in _tensors(one / "ckpt.safetensors").items() if k.startswith("model.")}
    b = {k: v for k, v in _tensors(run / "ckpt.safetensors").items() if k.startswith("model.")}
    _close(a, b, 1e-4)
