"""Input loading and preprocessing: every DICOM photometric kind, images, clips, and bad input."""
import json

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from echogen.cli.main import main as cli_main
from echogen.data.inputs import InputError, count_frames, load_frames, prepare_array, prepare_frame
from echogen.data.phantom import make_video
from echogen.data.video_io import write_video


def dcm(name):
    p = get_testdata_file(name)
    if p is None:
        pytest.skip(f"pydicom test file {name} not available")
    return p


@pytest.fixture(scope="module")
def phantom_frame():
    _, tr, v = make_video(2, 0)
    return v[tr[0][5]]


def check_prepared(out, size=112):
    assert out.shape == (size, size) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.max() > 0.2


@pytest.mark.parametrize("name,photometric,frames", [
    ("examples_ybr_color.dcm", "YBR_FULL_422", 30),     # real apical echo, JPEG baseline
    ("examples_palette.dcm", "PALETTE COLOR", 1),
    ("examples_rgb_color.dcm", "RGB", 1),
    ("examples_jpeg2k.dcm", "YBR_RCT", 1),                # JPEG 2000
    ("MR_small.dcm", "MONOCHROME2", 1),                    # 16-bit
    ("MR_small_RLE.dcm", "MONOCHROME2", 1),               # RLE
    ("SC_rgb_rle_2frame.dcm", "RGB", 2),                  # RLE colour, multi-frame
    ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422", 1),
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "YBR_FULL", 1),        # JPEG, YBR_FULL
])
def test_dicom_kinds(name, photometric, frames):
    arr, info = load_frames(dcm(name))
    assert info["kind"] == "dicom" and info["photometric"] == photometric
    assert arr.dtype == np.uint8 and arr.shape[0] == frames == info["n_frames"] == count_frames(dcm(name))
    out, pinfo = prepare_frame(dcm(name), frame=frames - 1)
    check_prepared(out)
    assert pinfo["frame"] == frames - 1 and len(pinfo["crop"]) == 4


def test_ybr_decoded_once_to_rgb():
    ref, _ = load_frames(dcm("SC_rgb_dcmtk_+eb+cr.dcm"))
    for name in ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_ybr_full_422_uncompressed.dcm"):
        a, _ = load_frames(dcm(name))
        assert np.abs(a.astype(int) - ref.astype(int)).mean() < 12  # no double conversion (green cast)


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(dcm("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    for k in ("WindowCenter", "WindowWidth"):
        if k in ds:
            del ds[k]
    p = tmp_path / "mono1.dcm"
    ds.save_as(p)
    m2, _ = load_frames(dcm("MR_small.dcm"))
    m1, info = load_frames(p)
    assert info["photometric"] == "MONOCHROME1"
    assert np.corrcoef(m1.ravel(), m2.ravel())[0, 1] < -0.9


def test_real_echo_sector_and_privacy(tmp_path, capsys):
    p = dcm("examples_ybr_color.dcm")
    ds = pydicom.dcmread(p)
    out, info = prepare_frame(p, frame=5)
    check_prepared(out)
    assert info["sector"] == "image-analysis" and "regions_ignored" in info  # its regions exceed the image
    assert out[0, :20].max() < 0.1 and out[:, :3].max() < 0.3  # no marker / text in the corners
    secrets = [str(ds.get(k, "")) for k in ("PatientName", "PatientID", "InstitutionName", "StudyDate")]
    text = json.dumps(info, default=str)
    assert cli_main(["prepare", "--image", p, "--frame", "3", "--out", str(tmp_path / "f.png")]) == 0
    said = capsys.readouterr().out
    assert "sector found in the image" in said, said      # the words the app says too, not the raw label
    text += said
    for s in secrets:
        if len(s) > 3:
            assert s not in text
    assert np.asarray(Image.open(tmp_path / "f.png")).shape == (112, 112)


def test_dicom_regions_used_when_valid(tmp_path):
    ds = pydicom.dcmread(dcm("examples_ybr_color.dcm"))
    r = ds.SequenceOfUltrasoundRegions[0]
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = 40, 15, 280, 215
    p = tmp_path / "regions.dcm"
    ds.save_as(p)
    out, info = prepare_frame(p)
    check_prepared(out)
    x0, y0, x1, y1 = info["crop"]
    assert info["sector"] == "dicom-regions" and y0 >= 15 and y1 <= 216


def screenshot(frame, rgba=False):
    """A phantom frame placed on a bigger screen with burned-in text and an ECG-like trace."""
    big = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_CUBIC)
    img = np.zeros((300, 360), np.uint8)
    img[40:264, 68:292] = big
    cv2.putText(img, "ID 12345 DOE^JOHN", (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    xs = np.arange(0, 360)
    img[285 + (6 * np.sin(xs / 6)).astype(int), xs] = 230
    return img


def test_images_all_formats(tmp_path, phantom_frame):
    scr = screenshot(phantom_frame)
    ref = prepare_array(phantom_frame)
    rgb = np.repeat(scr[..., None], 3, -1)
    variants = {
        "grey.png": Image.fromarray(scr), "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full(scr.shape, 255, np.uint8)])),
        "g16.png": Image.fromarray(scr.astype(np.uint16) * 257),
        "shot.jpg": Image.fromarray(rgb), "shot.bmp": Image.fromarray(rgb), "shot.tif": Image.fromarray(scr),
    }
    for name, im in variants.items():
        p = tmp_path / name
        im.save(p)
        out, info = prepare_frame(p)
        check_prepared(out)
        assert info["kind"] == "image" and info["masked_pixels"] > 50, name  # text and trace masked
        blur = lambda a: cv2.GaussianBlur(a, (0, 0), 2.0).ravel()  # noqa: E731  (anatomy, not speckle)
        assert np.corrcoef(blur(out), blur(ref))[0, 1] > 0.8, name


def test_clips_and_npy(tmp_path):
    _, _, v = make_video(4, 1)
    v = v[::8][:12]  # distinct frames (GIF writers merge identical ones)
    for ext in (".avi", ".mp4", ".gif", ".npy"):
        p = write_video(tmp_path / f"clip{ext}", v, 50)
        assert count_frames(p) == 12
        out, info = prepare_frame(p, frame=11)
        check_prepared(out)
        assert info["n_frames"] == 12
    np.save(tmp_path / "one.npy", v[0].astype(np.float32) / 255)
    assert count_frames(tmp_path / "one.npy") == 1


def write_bytes(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def bad_inputs(tmp_path):
    mr = open(dcm("MR_small.dcm"), "rb").read()
    us = open(dcm("examples_ybr_color.dcm"), "rb").read()
    tiny, huge = tmp_path / "tiny.png", tmp_path / "huge.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tiny)
    Image.fromarray(np.zeros((16, 9000), np.uint8)).save(huge)
    return {
        "truncated pixel data": (dcm("MR_truncated.dcm"), "truncated"),
        "truncated header": (write_bytes(tmp_path, "cut.dcm", mr[:300]), "DICOM"),
        # a real clip cut short (an interrupted copy): the header of an image without its image
        "cut before its pixel data": (write_bytes(tmp_path, "cut_us.dcm", us[:3000]), "truncated or corrupt DICOM"),
        "cut in its pixel data": (write_bytes(tmp_path, "cut_us2.dcm", us[:len(us) * 6 // 10]), "truncated"),
        "non-image DICOM": (dcm("rtplan.dcm"), "no image"),
        "empty": (write_bytes(tmp_path, "empty.png", b""), "empty"),
        "not an image": (write_bytes(tmp_path, "notes.png", b"hello, this is text\n" * 20), "not an image"),
        "tiny": (tiny, "too small"),
        "huge": (huge, "too large"),
        "missing": (tmp_path / "nope.png", "not found"),
    }


def test_bad_inputs_raise_one_line(tmp_path):
    for what, (p, words) in bad_inputs(tmp_path).items():
        with pytest.raises(InputError) as e:
            prepare_frame(p)
        msg = str(e.value)
        assert words in msg and "\n" not in msg, (what, msg)
    with pytest.raises(InputError, match="out of range"):
        prepare_frame(dcm("examples_ybr_color.dcm"), frame=30)
    with pytest.raises(InputError, match="out of range"):
        prepare_frame(dcm("MR_small.dcm"), frame=-1)
    with pytest.raises(InputError, match="too small"):
        prepare_array(np.zeros((10, 300), np.uint8))


def test_bad_inputs_cli_exit_2(tmp_path, capsys):
    cases = list(bad_inputs(tmp_path).values())[:5]
    for p, _ in cases:
        capsys.readouterr()
        assert cli_main(["prepare", "--image", str(p), "--out", str(tmp_path / "o.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.strip().count("\n") == 0 and "Traceback" not in err
    assert cli_main(["prepare", "--image", dcm("examples_ybr_color.dcm"), "--frame", "99",
                     "--out", str(tmp_path / "o.png")]) == 2
    assert "out of range" in capsys.readouterr().err
