"""Case pools and blinded review sets from a tiny cascade: complete records, no identifiers, and
real and generated files that differ only by content."""
import json
import re

import numpy as np
import pytest

from echogen.diffusion.cascade import Cascade
from echogen.data.phantom import write_phantom
from echogen.nets.regressor import EFRegressor, get_regressor_preset, load_regressor, save_regressor
from echogen.teaching.pool import add_real_clips, build_pool, load_pool
from echogen.teaching.review import build_review_set, load_review_set
from echogen.weights.bundle import update_manifest

STEPS = {"base": 2, "spatial": 1, "temporal": 1}
HEX = re.compile(r"^[0-9a-f]+$")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    b = tmp_path_factory.mktemp("weights") / "tinybundle"
    c = Cascade.random("tiny", seed=0)
    c.save(b)
    cfg = get_regressor_preset("tiny")
    save_regressor(b / "regressor.safetensors", EFRegressor(cfg), cfg)
    update_manifest(b, regressor="regressor.safetensors")
    return b


@pytest.fixture(scope="module")
def echonet(tmp_path_factory):
    root = tmp_path_factory.mktemp("echonet")
    write_phantom(root, 3, seed=2, workers=1)
    return root


def _probe(path):
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return {"codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt, "w": s.codec_context.width,
                "h": s.codec_context.height, "rate": float(s.average_rate), "frames": n,
                "meta": dict(c.metadata), "stream_meta": dict(s.metadata)}


def test_pool_records_complete_and_anonymous(bundle, echonet, tmp_path):
    cascade = Cascade.load(bundle)
    reg = load_regressor(bundle)
    src = tmp_path / "Patient_Doe_John_1960.png"            # an identifying input file name
    from PIL import Image
    Image.fromarray((np.random.default_rng(0).random((64, 80)) * 255).astype(np.uint8)).save(src)
    frames = [src, np.random.default_rng(1).random((112, 112)).astype(np.float32)]
    seen = []
    pool = build_pool(cascade, reg, frames, [30, 60], per_frame=1, out_dir=tmp_path / "pool", seed=3,
                      progress=lambda f, m: seen.append(f), sample_kwargs={"steps": STEPS},
                      real_clips={"root": echonet, "split": "ALL", "n": 2}, tolerance=None, loops=False)
    assert seen and seen[-1] == pytest.approx(1.0) and all(0 <= f <= 1 for f in seen)
    loaded = load_pool(tmp_path / "pool")
    assert loaded.cases == pool.cases and loaded.id == pool.id
    gen = [c for c in loaded.cases if c["kind"] == "generated"]
    real = [c for c in loaded.cases if c["kind"] == "real"]
    assert len(gen) == 4 and len(real) == 2
    assert sorted(c["ef"] for c in gen) == [30, 30, 60, 60]
    filelist = {round(float(r["EF"]), 2) for r in __import__("csv").DictReader(open(echonet / "FileList.csv"))}
    assert {c["ef"] for c in real} <= filelist
    for c in loaded.cases:
        for k in ("id", "kind", "file", "ef", "ef_source", "ef_regressor", "seed", "source_frame", "source_hash",
                  "fps", "frames", "size"):
            assert k in c, k
        assert isinstance(c["ef_regressor"], float)
        assert HEX.match(c["id"]) and re.match(r"^cases/[0-9a-f]{16}\.mp4$", c["file"])
        assert (loaded.dir / c["source_frame"]).is_file() and len(c["source_hash"]) == 64
        from PIL import Image as I
        assert I.open(loaded.dir / c["source_frame"]).size == (112, 112)
    for c in gen:
        assert c["weights"] == "tinybundle" and isinstance(c["seed"], int)
    # no identifier anywhere in the pool: not in JSON, not in any file name
    text = (loaded.dir / "pool.json").read_text()
    for ident in ("Patient", "Doe", "PH0002", str(tmp_path)):
        assert ident not in text
        assert not any(ident in str(p.relative_to(loaded.dir)) for p in loaded.dir.rglob("*"))
    probes = [_probe(loaded.path(c)) for c in loaded.cases]
    assert all(p == probes[0] for p in probes)
    assert probes[0]["codec"] == "h264" and probes[0]["w"] == 16 and probes[0]["frames"] == 8
    # adding real clips to an existing pool (by path) appends
    add_real_clips(tmp_path / "pool", echonet, "ALL", 1, seed=9, loops=False)
    assert len(load_pool(tmp_path / "pool").cases) == 7
    with pytest.raises(FileExistsError):
        build_pool(cascade, None, frames, [30], out_dir=tmp_path / "pool")


def test_pool_without_regressor_stores_none(bundle, tmp_path):
    pool = build_pool(Cascade.load(bundle), None, [np.full((112, 112), 0.5, np.float32)], [45], out_dir=tmp_path / "p",
                      sample_kwargs={"steps": STEPS}, tolerance=None, loops=False)
    assert [c["ef_regressor"] for c in pool.cases] == [None]
    assert json.loads((tmp_path / "p" / "pool.json").read_text())["regressor"] is False


def test_review_set_indistinguishable(bundle, echonet, tmp_path):
    rs = build_review_set(Cascade.load(bundle), echonet, "ALL", 2, out_dir=tmp_path / "rev", seed=1,
                          sample_kwargs={"steps": STEPS}, loops=False)
    assert len(rs.cases) == 4
    public = json.loads((tmp_path / "rev" / "review.json").read_text())
    assert "truth" not in json.dumps(public["cases"]) and "real" not in json.dumps(public["cases"])
    assert not any("key" in p.name for p in (tmp_path / "rev").rglob("*"))       # key kept outside
    loaded = load_review_set(tmp_path / "rev", need_key=True)
    truths = [loaded.truth(c["id"]) for c in loaded.cases]
    assert sorted(truths) == ["generated", "generated", "real", "real"]
    pairs = {loaded.key[c["id"]]["pair"] for c in loaded.cases}
    assert len(pairs) == 2                                                         # factual pairs
    probes = [_probe(loaded.path(c)) for c in loaded.cases]
    assert all(p == probes[0] for p in probes)
    assert (probes[0]["codec"], probes[0]["w"], probes[0]["h"], probes[0]["frames"], probes[0]["rate"]) == \
        ("h264", 16, 16, 8, 4.0)
    names = [c["file"] for c in loaded.cases]
    assert all(re.match(r"^clips/[0-9a-f]{16}\.mp4$", n) for n in names)
    mtimes = [loaded.path(c).stat().st_mtime_ns for c in loaded.cases]
    assert mtimes == sorted(mtimes)                                                # written in shown order
    assert load_review_set(tmp_path / "rev", key_path=tmp_path / "none.json").key is None


def test_review_set_from_uploaded_clips(bundle, echonet, tmp_path, monkeypatch):
    """A teacher with only clips (no EchoNet folder): the uploads' EF is the regressor's reading; the
    upload's file name is never stored."""
    import shutil

    import echogen.teaching.pool as P
    monkeypatch.setattr(P, "_regressor_reading", lambda reg, video, fps: 42.0)
    up = tmp_path / "uploads"
    up.mkdir()
    for i, f in enumerate(sorted((echonet / "Videos").glob("*.avi"))[:2]):
        shutil.copy(f, up / f"Smith_Jane_{i}.avi")
    rs = build_review_set(Cascade.load(bundle), uploads=sorted(up.iterdir()), regressor=object(), n=2,
                          out_dir=tmp_path / "rev", key_path=tmp_path / "rev.key.json", sample_kwargs={"steps": STEPS},
                          loops=False)
    assert len(rs.cases) == 4 and {r["ef"] for r in rs.key.values()} == {42.0}
    assert {r["ef_source"] for r in rs.key.values()} == {"regressor"}
    assert "Smith" not in (tmp_path / "rev.key.json").read_text()
    with pytest.raises(ValueError, match="no known EF"):
        build_review_set(Cascade.load(bundle), uploads=sorted(up.iterdir()), regressor=None, n=1,
                         out_dir=tmp_path / "rev2", key_path=tmp_path / "rev2.key.json")


def test_review_uploads_are_put_in_the_standard_view(tmp_path, monkeypatch):
    """An organiser's uploaded clip shown apex-down (or mirrored) is read and generated from in the standard view,
    as every other reader sees inputs: the regressor reads the same EF and the factual generation conditions on the
    same first frame as for the upright upload."""
    import echogen.teaching.pool as P
    from echogen.data.phantom.dataset import make_video
    from echogen.data.video_io import write_video
    from echogen.teaching.media import VideoSpec
    from echogen.teaching.review import real_from_uploads
    seen = []
    monkeypatch.setattr(P, "_regressor_reading", lambda reg, video, fps: seen.append(np.asarray(video)) or 50.0)
    row, _, clip = make_video(31, 0, sim="v2")
    fps = float(row["FPS"])
    write_video(tmp_path / "up.avi", clip.astype(np.float32) / 255, fps)
    write_video(tmp_path / "down.avi", np.ascontiguousarray(clip[:, ::-1]).astype(np.float32) / 255, fps)
    spec = VideoSpec(frames=16, fps=25.0, size=112)
    (up,), (down,) = (real_from_uploads([tmp_path / f"{n}.avi"], spec, object()) for n in ("up", "down"))
    assert np.abs(up[2] - down[2]).mean() < 0.01 and np.abs(seen[0] - seen[1]).mean() < 0.01
