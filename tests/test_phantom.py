"""Phantom: EchoNet format, EF from tracings, determinism, EF-dependent wall motion, CLI."""
import csv
import hashlib

import numpy as np
import pytest

from echogen.data import echonet
from echogen.cli.main import main as cli_main
from echogen.data.phantom import make_video, sample_ef, write_phantom
from echogen.data.phantom.anatomy import cycle, lv_size, sample_heart


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph")
    write_phantom(root, 4, seed=3, workers=1)
    return root


def test_format_columns_and_files(tiny):
    with open(tiny / "FileList.csv") as f:
        header = next(csv.reader(f))
    assert header == echonet.FILELIST_COLUMNS
    with open(tiny / "VolumeTracings.csv") as f:
        assert next(csv.reader(f)) == echonet.TRACING_COLUMNS
    rows = echonet.read_filelist(tiny)
    assert len(rows) == 4 and {r["Split"] for r in rows} == {"TRAIN", "VAL", "TEST"}
    for r in rows:
        v, fps = echonet.load_video(tiny, r["FileName"])
        assert v.shape == (r["NumberOfFrames"], 112, 112) and fps == 50
        assert 100 <= r["NumberOfFrames"] <= 250
        assert v[:, 0, 0].max() < 10 and v.mean() > 10  # black outside the sector, an image inside


def test_filelist_ef_matches_tracings(tiny):
    tr = echonet.read_tracings(tiny)
    for r in echonet.read_filelist(tiny):
        frames = tr[r["FileName"]]
        assert len(frames) == 2 and all(c.shape == (21, 4) for c in frames.values())
        ef, edv, esv, ed, es = echonet.ef_from_tracings(frames)
        assert abs(ef - r["EF"]) < 1.0
        assert edv > esv and ed != es


def test_rendered_lv_follows_tracings():
    """The traced LV is dark (blood) inside and the ES cavity is smaller than the ED one."""
    row, tr, video = make_video(5, 0)
    rows = np.array([[float(x) for x in t[1:5]] for t in tr])
    for k in (0, 21):
        c = rows[k + 1:k + 21]
        mids = (c[:, :2] + c[:, 2:]) / 2
        frame = video[tr[k][5]]
        vals = [frame[int(round(y)), int(round(x))] for x, y in mids[3:17]]
        assert np.median(vals) < 60


def test_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_phantom(a, 3, seed=11, workers=1)
    write_phantom(b, 3, seed=11, workers=2)
    for name in ("FileList.csv", "VolumeTracings.csv"):
        assert hashlib.sha256((a / name).read_bytes()).digest() == hashlib.sha256((b / name).read_bytes()).digest()


def test_ef_distribution_is_broad():
    rng = np.random.default_rng(0)
    ef = np.array([sample_ef(rng) for _ in range(4000)])
    assert ef.min() >= 10 and ef.max() <= 85
    assert (ef < 35).mean() > 0.2 and (ef > 65).mean() > 0.1


def test_wall_motion_depends_on_ef():
    rng = np.random.default_rng(1)
    h = sample_heart(rng)
    for ef in (20.0, 70.0):
        h.ef_target = ef
        L0, W0 = lv_size(h, 0.0)
        L1, W1 = lv_size(h, 1.0)
        assert abs(1 - (W1 / W0) ** 2 * (L1 / L0) - ef / 100) < 1e-9
    c, o = cycle(np.arange(0, 3, 0.02), h)
    assert c.min() < 0.01 and c.max() > 0.99 and o.max() > 0.8 and o.min() == 0


def test_cli(tmp_path, capsys):
    assert cli_main(["phantom", "--out", str(tmp_path / "p"), "--videos", "2", "--workers", "1", "--quiet"]) == 0
    assert (tmp_path / "p" / "FileList.csv").is_file()
    assert cli_main(["phantom", "--out", str(tmp_path / "q"), "--videos", "0"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
