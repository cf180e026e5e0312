"""Same seed and inputs -> the same loop (issue 27), at the library level.

The sampler draws all its noise from per-call torch.Generators (echogen/diffusion/cascade.py), so a sample must not
depend on, or disturb, the global torch RNG, on what else the process did before, or on another thread
sampling at the same time. The H.264 writer must give the same bytes for the same frames whatever the
heap held before (libx264's mbtree read uninitialised memory: the app's loops differed, issue 27).
Different torch thread counts may change the float sums in the last bits (measured on the demo bundle:
~2e-6); that tolerance is asserted here and stated in the README.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

from echogen.diffusion.cascade import DEFAULT_WEIGHTS, Cascade  # noqa: E402
from echogen.config import get_preset  # noqa: E402

FRAME = np.random.default_rng(0).random((112, 112), dtype=np.float32)


def _tiny_cascade(seed: int = 0) -> Cascade:
    """The tiny preset with every parameter non-trivial (random init zeroes the output layers, which would
    make the networks' part of a sample trivially equal) and a stochastic Heun base stage (S_churn > 0:
    fresh noise at every step), so every random draw of sample() is exercised."""
    cfg = get_preset("tiny")
    stages = list(cfg.stages)
    stages[0] = dataclasses.replace(stages[0], sampler="heun", S_churn=2.0, S_tmin=0.0, S_tmax=float("inf"))
    casc = Cascade.random(dataclasses.replace(cfg, stages=stages), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for den in casc.denoisers.values():
            for p in den.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return casc


STEPS = {"base": 2, "spatial": 1, "temporal": 1}


def _videos(casc: Cascade, seed: int = 7, ef: float = 45, **kw) -> list[torch.Tensor]:
    return [r.video.clone() for r in casc.sample(FRAME, ef, seed=seed, **{"steps": STEPS, **kw})]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b)):
        same = torch.equal(x, y)
        assert same, f"stage {k} differs: max |diff| {float((x - y).abs().max()):.3g}"


@pytest.fixture
def global_rng_restored():
    """The test reseeds torch's global RNG; later tests get the state they would have had."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def test_same_seed_same_sample_after_other_work_and_beside_another_thread(global_rng_restored):
    casc, other = _tiny_cascade(), _tiny_cascade()        # a model is not re-entrant: one per thread
    ref = _videos(casc)
    assert ref[0].std() > 0.01                             # a real video, not a constant

    # other work in between: other seeds, EFs and stage choices; the global RNG reseeded and consumed
    assert not torch.equal(_videos(casc, seed=8)[-1], ref[-1])          # the seed matters
    _videos(casc, seed=7, ef=70, stages=["temporal"])
    torch.manual_seed(1234)
    torch.rand(10_000)
    state = torch.get_rng_state()
    _assert_same(_videos(casc), ref)
    assert torch.equal(torch.get_rng_state(), state)       # sample() leaves the global RNG alone

    # a second "user" sampling in another thread (and drawing from the global RNG) at the same time
    stop, errors = threading.Event(), []

    def busy():
        try:
            while not stop.is_set():
                other.sample(FRAME, 60, seed=3, steps=STEPS)
                torch.randn(1000)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=busy)
    t.start()
    try:
        again = [_videos(casc) for _ in range(2)]
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    for v in again:
        _assert_same(v, ref)


@pytest.mark.skipif(not (DEFAULT_WEIGHTS / "manifest.json").is_file(), reason="bundled demo weights absent")
def test_thread_count_changes_the_last_bits_only_and_is_restored_exactly():
    """The trained demo bundle's base stage (2 steps; the later stages replaced by upsampling): bit-identical
    at the same thread count after running at another one; across thread counts within 1e-4 (float32 sums
    split differently over threads; measured 1.8e-6)."""
    casc = Cascade.load(DEFAULT_WEIGHTS)
    kw = dict(stages=[], steps={"base": 2})
    n0 = torch.get_num_threads()
    n1 = 1 if n0 > 1 else 2
    ref = _videos(casc, **kw)
    try:
        torch.set_num_threads(n1)
        other = _videos(casc, **kw)
    finally:
        torch.set_num_threads(n0)
    _assert_same(_videos(casc, **kw), ref)
    for x, y in zip(other, ref):
        assert float((x - y).abs().max()) < 1e-4


MP4_SCRIPT = r"""
import ctypes, hashlib, sys
import numpy as np
from echogen.device import tune_cpu_malloc
from echogen.data.video_io import write_video
assert tune_cpu_malloc()                    # as app.py and the CLI: large buffers from the reused heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
rng = np.random.default_rng(1)
v = np.repeat(np.repeat(np.random.default_rng(0).random((8, 16, 16), dtype=np.float32), 14, 1), 14, 2)
out = sys.argv[2]
for i in range(int(sys.argv[1])):
    blocks = []                             # leave random bytes in freed heap memory
    for n in (4096, 65536, 200000, 1 << 20, 3 << 20) * 4:
        p = libc.malloc(n)
        ctypes.memmove(p, rng.bytes(n), n)
        blocks.append(p)
    for p in blocks:
        libc.free(ctypes.c_void_p(p))
    path = write_video(f"{out}/{i}.mp4", v, 25.0)
    print(hashlib.md5(path.read_bytes()).hexdigest(), path)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_mp4_bytes_do_not_depend_on_what_the_heap_held(tmp_path):
    """Before the fix, most of these encodes gave a different bitstream (decoded pixels up to 4 grey levels
    apart); now every one is the same bytes."""
    r = subprocess.run([sys.executable, "-c", MP4_SCRIPT, "12", str(tmp_path)], capture_output=True, text=True,
                       timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "ECHOGEN_MALLOC": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln.split() for ln in r.stdout.splitlines()]
    assert len(lines) == 12
    hashes = {h for h, _ in lines}
    assert len(hashes) == 1, f"{len(hashes)} different MP4s from the same frames"
    import av
    with av.open(lines[0][1]) as c:
        frames = np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])
    assert frames.shape == (8, 224, 224)
