"""`python -m echogen synth` (issue 25): EF distributions, the plan, merge, privacy columns (fast); the
tiny cascade end to end: EchoNet round trip, filter counts, resume, and 2 CPU ranks under torchrun (slow)."""
import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from echogen.data import synth
from scripts import run_cli

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ fast
def test_target_efs_distributions(tmp_path):
    u = synth.target_efs("uniform:10,90", 200, seed=1)
    assert len(u) == 200 and min(u) >= 10 and max(u) <= 90
    assert u == synth.target_efs("uniform:10,90", 200, seed=1) != synth.target_efs("uniform:10,90", 200, seed=2)
    b = synth.target_efs("balanced", 80, seed=0)
    counts = np.histogram(b, bins=np.arange(10, 91, 10))[0]
    assert counts.tolist() == [10] * 8
    p = tmp_path / "efs.csv"
    p.write_text("FileName,EF\na,20\nb,70\n")
    assert synth.target_efs(str(p), 5) == [20, 70, 20, 70, 20]
    for bad in ("uniform:90,10", "uniform:x", "gauss", str(tmp_path / "missing.csv"), "uniform:1,50"):
        with pytest.raises(ValueError):
            synth.target_efs(bad, 3)


def test_plan_is_deterministic_and_shards_cover_it():
    srcs = [synth.Source(f"V{i}", Path(f"V{i}.png")) for i in range(5)]
    plan = synth.make_plan(srcs, 12, "balanced", seed=3, samples_per_frame=2)
    again = synth.make_plan(srcs, 12, "balanced", seed=3, samples_per_frame=2)
    assert [(it.name, it.source.name, it.target_ef, it.seed) for it in plan] == \
           [(it.name, it.source.name, it.target_ef, it.seed) for it in again]
    assert all(plan[2 * k].source.name == plan[2 * k + 1].source.name for k in range(6))
    assert len({it.seed for it in plan}) == 12 and len({it.name for it in plan}) == 12
    shards = [synth.shard(plan, r, 3) for r in range(3)]
    assert sorted(it.index for s in shards for it in s) == list(range(12))
    # a longer run starts with the same items (resume with a larger --n)
    longer = synth.make_plan(srcs, 20, "uniform:10,90", seed=3)
    assert [it.seed for it in longer[:12]] == [it.seed for it in synth.make_plan(srcs, 12, "uniform:10,90", seed=3)]


def test_merge_splits_kept_and_rejected_and_dedups(tmp_path):
    (tmp_path / "Videos").mkdir()
    for name in ("A", "C"):
        (tmp_path / "Videos" / f"{name}.avi").write_bytes(b"x")
    rows = [dict(FileName="A", EF="30", Accepted="1", Index="0", Reason=""),
            dict(FileName="B", EF="40", Accepted="0", Index="1", Reason="ef"),
            dict(FileName="C", EF="50", Accepted="1", Index="2", Reason=""),
            dict(FileName="D", EF="60", Accepted="0", Index="3", Reason="near-copy")]
    synth.append_row(synth.rank_file(tmp_path, 1), rows[1])
    synth.append_row(synth.rank_file(tmp_path, 1), rows[3])
    synth.append_row(synth.rank_file(tmp_path, 0), rows[2])
    synth.append_row(synth.rank_file(tmp_path, 0), rows[0])
    synth.append_row(synth.rank_file(tmp_path, 0), rows[0])          # written twice: one row
    counts = synth.merge(tmp_path)
    assert counts == {"total": 4, "kept": 2, "rejected": 2, "reasons": {"ef": 1, "near-copy": 1}}
    kept = synth.read_rows(tmp_path / "FileList.csv")
    assert [r["FileName"] for r in kept] == ["A", "C"]
    assert list(kept[0])[:9] == ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                                 "NumberOfFrames", "Split"]
    assert [r["FileName"] for r in synth.read_rows(tmp_path / "Rejected.csv")] == ["B", "D"]


def _tiny_regressor():
    from echogen.nets.regressor import EFRegressor, get_regressor_preset

    torch.manual_seed(0)
    cfg = get_regressor_preset("tiny")
    return EFRegressor(cfg).eval(), cfg


def test_combine_links_videos_and_carries_the_tracings(tmp_path):
    """combine: two EchoNet-format folders -> one (the rows chosen, symlinked videos, and the VolumeTracings.csv
    rows of exactly those videos, so the LV tracer trains on the mix); a name in two parts is refused."""
    from echogen.data.echonet import read_filelist
    from echogen.data.phantom import write_phantom

    write_phantom(tmp_path / "a", videos=3, seed=1, sim="v1")
    write_phantom(tmp_path / "b", videos=3, seed=2, sim="v2")
    ra, rb = read_filelist(tmp_path / "a"), read_filelist(tmp_path / "b")
    n = synth.combine(tmp_path / "mix", [(tmp_path / "a", ra[:2]), (tmp_path / "b", rb)])
    rows = read_filelist(tmp_path / "mix")
    names = {r["FileName"] for r in rows}
    assert n == 5 and names == {r["FileName"] for r in ra[:2] + rb}
    assert all((tmp_path / "mix" / "Videos" / f"{x}.avi").is_symlink() for x in names)
    with open(tmp_path / "mix" / "VolumeTracings.csv", newline="") as f:
        traced = [r["FileName"][:-4] for r in csv.DictReader(f)]
    assert set(traced) == names                                       # the third video of `a` is not there
    with open(tmp_path / "a" / "VolumeTracings.csv", newline="") as f:
        want = sum(1 for r in csv.DictReader(f) if r["FileName"][:-4] in names)
    with open(tmp_path / "b" / "VolumeTracings.csv", newline="") as f:
        want += sum(1 for r in csv.DictReader(f) if r["FileName"][:-4] in names)
    assert len(traced) == want
    with pytest.raises(synth.SynthError, match="twice"):
        synth.combine(tmp_path / "dup", [(tmp_path / "a", ra), (tmp_path / "a", ra[:1])])


def test_privacy_nearest_finds_a_copy(tmp_path):
    from echogen.data.video_io import write_video

    rng = np.random.default_rng(0)
    root = tmp_path / "ref"
    (root / "Videos").mkdir(parents=True)
    vids = {}
    with open(root / "FileList.csv", "w") as f:
        f.write("FileName,EF,Split,FPS\n")
        for i in range(4):
            v = (rng.random((12, 112, 112)) * 0.2 + np.linspace(0, 0.8, 112)[None, None, :] * (i % 2)
                 + np.linspace(0, 0.8, 112)[None, :, None] * (i // 2)).clip(0, 1)
            write_video(root / "Videos" / f"R{i}.avi", v, 25.0)
            vids[f"R{i}"] = v
            f.write(f"R{i},50,TRAIN,25\n")
    reg = _tiny_regressor()
    index = synth.build_privacy_index(synth.list_sources(root, "TRAIN"), reg)
    assert index.names == ["R0", "R1", "R2", "R3"] and index.feats.shape[0] == 4
    near = synth.nearest(index, vids["R2"], 25.0, reg)
    assert near["NearestSSIMVideo"] == "R2" and near["NearestSSIM"] > 0.9
    assert near["NearestFeatVideo"] == "R2" and near["NearestFeatDist"] < 0.5
    far = synth.nearest(index, rng.random((12, 112, 112)).astype(np.float32) * 0.1, 25.0, reg)
    assert far["NearestSSIM"] < 0.5
    index.save(tmp_path / "i.pt")
    assert synth.PrivacyIndex.load(tmp_path / "i.pt").names == index.names


# ------------------------------------------------------------------------------------------ slow
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from echogen.data.phantom import write_phantom
    from echogen.nets.regressor import save_regressor

    root = tmp_path_factory.mktemp("synth")
    write_phantom(root / "ph", videos=8, seed=0)          # 6 TRAIN, 1 VAL, 1 TEST
    model, cfg = _tiny_regressor()
    save_regressor(root / "reg.safetensors", model, cfg)
    return root


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _synth(data, out, *extra, torchrun=False):
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={_free_port()}"] if torchrun else []
    # "--": torchrun's own argparse would take synth's --n for an ambiguous abbreviation of its --nnodes etc.
    cmd = [sys.executable, *launcher, "-m", "echogen", *(["--"] if torchrun else []), "synth",
           "--frames", str(data / "ph"), "--out", str(out),
           "--random-init", "--preset", "tiny", "--regressor", str(data / "reg.safetensors"), "--steps", "2",
           *[str(a) for a in extra]]
    # one process: in this one (tests/scripts.py); torchrun: real processes
    r = run_cli(cmd[3:]) if not torchrun else subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                                                             timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_synth_round_trip_filter_counts_and_resume(data, tmp_path):
    from echogen.data.echonet import EchoNetDataset

    out = tmp_path / "all"
    log = _synth(data, out, "--n", 4, "--ef", "uniform:20,80", "--filter-tolerance", 100, "--samples-per-frame", 2)
    assert "4 kept, 0 rejected of 4" in log
    rows = _rows(out / "FileList.csv")
    assert [r["FileName"] for r in rows] == [f"SY0000X{i:06d}" for i in range(4)]
    for r in rows:
        assert r["EF"] == r["TargetEF"] and r["ReadEF"] and r["Accepted"] == "1" and r["Split"] == "TRAIN"
        assert r["NearestSSIMVideo"].startswith("PH") and 0 <= float(r["NearestSSIM"]) <= 1
        assert r["NearestFeatVideo"].startswith("PH") and float(r["NearestFeatDist"]) >= 0 and r["NearCopy"] in "01"
        assert (int(r["NumberOfFrames"]), int(r["FrameHeight"]), float(r["FPS"])) == (8, 16, 4.0)
    assert rows[0]["SourceVideo"] == rows[1]["SourceVideo"] != rows[2]["SourceVideo"] == rows[3]["SourceVideo"]
    # the EchoNet reader that train/train_regressor.py uses reads the output unchanged
    ds = EchoNetDataset(out, "TRAIN", frames=8, fps=25.0, size=16)
    item = ds[0]
    assert len(ds) == 4 and item["video"].shape == (1, 8, 16, 16) and float(item["video"].max()) > 0
    assert abs(float(item["ef"]) - float(rows[0]["EF"])) < 1e-3
    # resume: nothing is made again; a larger --n makes only the new items
    mtime = (out / "Videos" / "SY0000X000000.avi").stat().st_mtime_ns
    log = _synth(data, out, "--n", 5, "--ef", "uniform:20,80", "--filter-tolerance", 100, "--samples-per-frame", 2)
    assert "1 to make, 4 already made" in log and "5 kept" in log
    assert (out / "Videos" / "SY0000X000000.avi").stat().st_mtime_ns == mtime
    # --overlap on (a worker thread reads EF, checks privacy and writes item k while item k+1 samples; the GPU
    # default): the same rows, in the same order, and byte-identical videos
    out_ov = tmp_path / "overlap"
    log = _synth(data, out_ov, "--n", 5, "--ef", "uniform:20,80", "--filter-tolerance", 100, "--samples-per-frame", 2,
                 "--overlap", "on")
    assert "overlap the next sample" in log and "5 kept" in log
    assert _rows(out_ov / "FileList.csv") == _rows(out / "FileList.csv")
    for r in _rows(out / "FileList.csv"):
        assert (out_ov / "Videos" / f"{r['FileName']}.avi").read_bytes() == \
               (out / "Videos" / f"{r['FileName']}.avi").read_bytes()
    # filter counts: the same items (same seeds -> same ReadEF) with a tolerance between the errors
    errs = sorted(abs(float(r["ReadEF"]) - float(r["TargetEF"])) for r in _rows(out / "FileList.csv"))
    tol = (errs[1] + errs[2]) / 2
    out2 = tmp_path / "filtered"
    log = _synth(data, out2, "--n", 5, "--ef", "uniform:20,80", "--filter-tolerance", tol, "--samples-per-frame", 2,
                 "--drop-near-copies", "--copy-ssim", 2.0)
    assert f"2 kept, 3 rejected of 5 (ef: 3)" in log
    rej = _rows(out2 / "Rejected.csv")
    assert len(rej) == 3 and all(r["Reason"] == "ef" and r["Accepted"] == "0" for r in rej)
    assert all((out2 / "Rejected" / f"{r['FileName']}.avi").is_file() for r in rej)
    assert not any((out2 / "Videos" / f"{r['FileName']}.avi").exists() for r in rej)
    kept = {r["FileName"]: r["ReadEF"] for r in _rows(out2 / "FileList.csv")}
    assert all(kept[k] == v for k, v in ((r["FileName"], r["ReadEF"]) for r in _rows(out / "FileList.csv"))
               if k in kept)
    # every video a near-copy (threshold -1): all dropped
    out3 = tmp_path / "copies"
    log = _synth(data, out3, "--n", 2, "--filter-tolerance", -1, "--drop-near-copies", "--copy-ssim", -1)
    assert "0 kept, 2 rejected of 2 (near-copy: 2)" in log


@pytest.mark.slow
def test_synth_torchrun_two_ranks_and_merge(data, tmp_path):
    out = tmp_path / "tr"
    log = _synth(data, out, "--n", 5, "--ef", "balanced", "--filter-tolerance", 100, "--no-privacy", torchrun=True)
    r0, r1 = _rows(out / "FileList.rank0.csv"), _rows(out / "FileList.rank1.csv")
    assert [int(r["Index"]) for r in r0] == [0, 2, 4] and [int(r["Index"]) for r in r1] == [1, 3]
    assert {r["Rank"] for r in r0} == {"0"} and {r["Rank"] for r in r1} == {"1"}
    merged = _rows(out / "FileList.csv")
    assert [int(r["Index"]) for r in merged] == list(range(5)) and "5 kept" in log
    # the same items as one process makes (per-item seeds): byte-identical videos and equal ReadEF
    single = tmp_path / "single"
    _synth(data, single, "--n", 5, "--ef", "balanced", "--filter-tolerance", 100, "--no-privacy")
    one = _rows(single / "FileList.csv")
    assert [(r["FileName"], r["ReadEF"], r["Seed"]) for r in one] == \
           [(r["FileName"], r["ReadEF"], r["Seed"]) for r in merged]
    for r in one:
        assert (single / "Videos" / f"{r['FileName']}.avi").read_bytes() == \
               (out / "Videos" / f"{r['FileName']}.avi").read_bytes()
    # --merge redoes only the merge
    (out / "FileList.csv").unlink()
    _synth(data, out, "--merge")
    assert _rows(out / "FileList.csv") == merged
