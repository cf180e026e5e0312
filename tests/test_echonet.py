"""EchoNet-Dynamic reader and clip Dataset on a tiny phantom."""
import numpy as np
import pytest
import torch

from echogen.data import echonet
from echogen.data.phantom import write_phantom


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("echonet")
    write_phantom(r, 4, seed=1, workers=1)
    return r


def test_volume_of_known_disks():
    # long axis 20 px, 20 disks of diameter 10 px: a cylinder of volume pi 5^2 20
    c = np.zeros((21, 4))
    c[0] = [0, 0, 0, 20]
    c[1:] = [[-5, y, 5, y] for y in np.arange(20) + 0.5]
    assert echonet.volume_from_tracing(c) == pytest.approx(np.pi * 25 * 20)
    assert echonet.volume_from_tracing(c, scale=0.1) == pytest.approx(np.pi * 25 * 20 * 1e-3)
    small = c.copy()
    small[1:, [0, 2]] *= 0.5
    ef, edv, esv, ed, es = echonet.ef_from_tracings({7: small, 3: c})
    assert (ed, es) == (3, 7) and ef == pytest.approx(75.0)


def test_read_filelist_types(root):
    rows = echonet.read_filelist(root)
    r = rows[0]
    assert isinstance(r["EF"], float) and isinstance(r["FPS"], float) and isinstance(r["NumberOfFrames"], int)
    assert not r["FileName"].endswith(".avi") and r["Split"] in ("TRAIN", "VAL", "TEST")
    assert set(echonet.read_tracings(root)) == {x["FileName"] for x in rows}


def test_split_filter(root):
    rows = echonet.read_filelist(root)
    n = {s: sum(r["Split"] == s for r in rows) for s in ("TRAIN", "VAL", "TEST")}
    for s in ("TRAIN", "VAL", "TEST"):
        ds = echonet.EchoNetDataset(root, split=s.lower(), frames=4)
        assert len(ds) == n[s] and all(r["Split"] == s for r in ds.videos())
    assert len(echonet.EchoNetDataset(root, split="all", frames=4)) == 4
    with pytest.raises(ValueError):
        echonet.EchoNetDataset(root, split="nope")


def test_clip_sampling_resamples_time(root):
    ds = echonet.EchoNetDataset(root, split="ALL", frames=8, fps=12.5, random_start=False, cond_frame="first")
    item = ds[0]
    v, fps = echonet.load_video(root, item["filename"])
    assert item["video"].shape == (1, 8, 112, 112) and item["video"].dtype == torch.float32
    assert item["start"] == 0
    idx = echonet.clip_indices(0, 8, fps, 12.5)
    assert list(idx) == list(echonet.clip_indices(0, 8, float(ds.videos()[0]["FPS"]), 12.5))
    if fps == 50.0:
        assert list(idx) == [0, 4, 8, 12, 16, 20, 24, 28]
    assert torch.allclose(item["video"][0, 3], torch.from_numpy(v[idx[3]]).float() / 255)
    assert torch.allclose(item["frame"][0], torch.from_numpy(v[0]).float() / 255)
    assert item["ef"].shape == () and 10 <= float(item["ef"]) <= 85
    assert 0 <= item["ed"] < len(v) and 0 <= item["es"] < len(v)


def test_zero_padding_and_random_start(root):
    ds = echonet.EchoNetDataset(root, split="ALL", frames=80, fps=25, random_start=True)
    for i in range(len(ds)):
        item = ds[i]
        row = ds.videos()[i]
        n = row["NumberOfFrames"]
        idx = echonet.clip_indices(item["start"], 80, float(row["FPS"]), 25)   # each video's own rate (30-80 fps)
        assert item["start"] == 0 or idx[-1] < n
        pad = idx >= n
        if pad.any():
            assert item["video"][0, pad].abs().max() == 0
    starts = {echonet.EchoNetDataset(root, "ALL", frames=4, seed=s)[0]["start"] for s in range(6)}
    assert len(starts) > 1


def test_resize_cond_ed_and_cache(root):
    ds = echonet.EchoNetDataset(root, split="ALL", frames=4, size=32, cond_frame="ed", max_videos=2)
    item = ds[1]
    assert len(ds) == 2 and item["video"].shape == (1, 4, 32, 32) and item["frame"].shape == (1, 32, 32)
    v, _ = ds._video(item["filename"])
    assert torch.allclose(item["frame"][0], torch.from_numpy(v[item["ed"]]).float() / 255)
    assert item["filename"] in ds._videos


def test_clips_and_regressor_cut_frames_by_one_rule():
    # a non-integer frame-rate ratio (30 -> 25 fps) is where round and floor used to disagree
    from echogen.nets.regressor import resample_indices
    assert echonet.clip_indices(0, 6, 30.0, 25.0).tolist() == [0, 1, 2, 3, 4, 6]
    assert resample_indices(7, 30.0, 25.0).tolist() == [0, 1, 2, 3, 4, 6]
    assert echonet.clip_indices(3, 3, 12.5, 25.0).tolist() == [3, 3, 4]
