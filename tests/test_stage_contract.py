"""One stage contract: a training preview (train/train_stage.py) and Cascade.sample hand a stage the same
conditioning, the same sampler settings and the same noise for the same arguments."""
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import echogen.diffusion.stage as stage_mod
from echogen.diffusion.cascade import Cascade

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_training_preview_and_cascade_sample_give_a_stage_the_same_inputs(tmp_path, monkeypatch):
    from echogen.data.echonet import EchoNetDataset
    from echogen.data.phantom import write_phantom
    write_phantom(tmp_path / "data", 6, seed=4, workers=1, sim="v1")
    calls = []
    real = stage_mod.sample_stage

    def spy(denoiser, stage, diffusion, cond, settings, generator, lowres=None, callback=None):
        calls.append((stage.name, {k: v.clone() for k, v in cond.items()}, dict(settings), generator.get_state()))
        return real(denoiser, stage, diffusion, cond, settings, generator, lowres=lowres, callback=callback)

    monkeypatch.setattr(stage_mod, "sample_stage", spy)
    import echogen.diffusion.cascade as cascade_mod
    monkeypatch.setattr(cascade_mod, "sample_stage", spy)
    import echogen.diffusion.preview as preview_mod    # the training previews (train_stage.py, distill.py)
    monkeypatch.setattr(preview_mod, "sample_stage", spy)
    # the training script's preview (1 step, preview at step 1), base stage of the tiny preset
    argv = ["train_stage.py", "--data", str(tmp_path / "data"), "--preset", "tiny", "--stage", "base",
            "--out", str(tmp_path / "run"), "--steps", "1", "--batch", "1", "--sample-every", "1",
            "--threads", "1", "--augment", "off"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "train" / "train_stage.py"), run_name="__main__")
    preview = [c for c in calls if c[0] == "base"]
    assert len(preview) == 1
    # the app's path: the same frame (the VAL clip's first frame), EFs 20/50/80, seed 0
    cfg = __import__("echogen.config", fromlist=["get_preset"]).get_preset("tiny").stage("base")
    val = EchoNetDataset(tmp_path / "data", "VAL", frames=cfg.frames, fps=cfg.fps, size=cfg.size, random_start=False,
                         cond_frame="first", max_videos=4)
    frame = val[0]["frame"][None].expand(3, -1, -1, -1)
    calls.clear()
    Cascade.random("tiny").sample(frame, [20.0, 50.0, 80.0], stages=["base"], seed=0)
    app = [c for c in calls if c[0] == "base"]
    assert len(app) == 1
    (_, c1, s1, g1), (_, c2, s2, g2) = preview[0], app[0]
    assert s1 == s2                                                   # sampler, steps, guidance, sigma_start
    assert c1.keys() == c2.keys() and all(torch.equal(c1[k], c2[k]) for k in c1)
    assert torch.equal(g1, g2)                                        # the same noise follows
    assert np.isclose(float(c1["ef"][1]), 0.5)                        # EF / 100, once
