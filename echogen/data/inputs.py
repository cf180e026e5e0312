"""Load what clinicians have (DICOM, images, clips, .npy) and turn one frame into the model's input.

Preprocessing follows EchoNet-Dynamic: find the ultrasound sector, blank everything outside it
(burned-in text, rulers, ECG traces, logos), crop to it, greyscale, and resize to 112x112 with area
interpolation. The sector comes from the DICOM SequenceOfUltrasoundRegions when it holds a usable
2-D region, else from image analysis (largest bright, textured, convex blob).

Privacy: nothing read from a DICOM header other than image geometry, frame timing and region bounds
reaches `info`; header values are never printed or written.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MIN_SIDE, MAX_SIDE = 16, 8192
VIDEO_EXTS = {".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
DICOM_EXTS = {".dcm", ".dicom", ".dic"}


class InputError(RuntimeError):
    """The input cannot be used; the message names the file and the problem in one line."""


def _check_size(name: str, h: int, w: int) -> None:
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{name}: image is too small ({w}x{h} px; need at least {MIN_SIDE} px a side)")
    if max(h, w) > MAX_SIDE:
        raise InputError(f"{name}: image is too large ({w}x{h} px; at most {MAX_SIDE} px a side)")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8, scaling by its own range when it is not already 8-bit."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    f = a.astype(np.float32)
    if not np.isfinite(f).all():
        f = np.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0)
    if np.issubdtype(a.dtype, np.floating) and f.min() >= 0.0 and f.max() <= 1.0:
        return (f * 255.0 + 0.5).astype(np.uint8)
    lo, hi = float(f.min()), float(f.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return ((f - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_EXTS:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


# ---------------------------------------------------------------------------------------------- DICOM
def _regions(ds) -> list[dict]:
    out = []
    for r in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            out.append({"x0": int(r.RegionLocationMinX0), "y0": int(r.RegionLocationMinY0),
                        "x1": int(r.RegionLocationMaxX1), "y1": int(r.RegionLocationMaxY1),
                        "spatial_format": int(r.get("RegionSpatialFormat", 0) or 0),
                        "data_type": int(r.get("RegionDataType", 0) or 0)})
        except (AttributeError, TypeError, ValueError):
            continue
    return out


def _load_dicom(path: Path) -> tuple[np.ndarray, dict]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = path.name
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise InputError(f"{name}: not a DICOM file (no DICOM header)") from None
    except Exception as e:  # truncated headers raise many kinds of errors
        raise InputError(f"{name}: unreadable DICOM ({type(e).__name__}: the file looks truncated or corrupt)") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{name}: DICOM file holds no image (no pixel data; e.g. a report or plan)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(name, rows, cols)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        arr = ds.pixel_array
    except (RuntimeError, NotImplementedError) as e:
        msg = str(e)
        plugins = [p for p in ("pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pylibjpeg", "gdcm")
                   if p in msg]
        tsn = getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "unknown")
        need = f"; install {' or '.join(plugins)}" if plugins else ""
        raise InputError(f"{name}: cannot decode {tsn} pixel data{need}") from None
    except Exception as e:
        raise InputError(f"{name}: DICOM pixel data is truncated or corrupt ({type(e).__name__})") from None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames == 1:
        arr = arr[None]
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        spp = 3
    voi_note = None
    if photometric in ("MONOCHROME1", "MONOCHROME2") and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        from pydicom.pixels import apply_voi_lut

        try:
            arr = apply_voi_lut(arr, ds)
        except (ValueError, TypeError, KeyError, IndexError) as e:  # a malformed window: use raw values, say so
            voi_note = f"VOI LUT/window not applied ({type(e).__name__}); raw pixel values min-max scaled"
    arr = _to_uint8(np.asarray(arr)) if arr.dtype != np.uint8 or spp == 1 else arr
    if photometric == "PALETTE COLOR" and np.asarray(arr).max() > 255:
        arr = _to_uint8(arr)
    if photometric == "MONOCHROME1":
        arr = 255 - arr  # MONOCHROME1: low values are white
    if spp == 3 and arr.ndim == 3:
        arr = arr[None]
    fps = 0.0
    for key in ("RecommendedDisplayFrameRate", "CineRate"):
        if ds.get(key):
            fps = float(ds.get(key))
            break
    if not fps and ds.get("FrameTime"):
        fps = 1000.0 / float(ds.FrameTime)
    info = {"kind": "dicom", "n_frames": int(arr.shape[0]), "photometric": photometric,
            "transfer_syntax": getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "unknown"),
            "regions": _regions(ds), "size": [int(arr.shape[2]), int(arr.shape[1])]}
    if fps:
        info["fps"] = fps
    if voi_note:
        info["note"] = voi_note
    return np.ascontiguousarray(arr), info


# ------------------------------------------------------------------------------- images, clips, arrays
def _load_image(path: Path) -> tuple[np.ndarray, dict]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    name = path.name
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image, DICOM or video file") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name}: image is too large (more than {MAX_SIDE} px a side)") from None
    except OSError as e:
        raise InputError(f"{name}: unreadable image ({e})") from None
    _check_size(name, im.height, im.width)
    frames = []
    try:
        for page in ImageSequence.Iterator(im):
            mode = page.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                a = _to_uint8(np.asarray(page))
            elif mode == "RGBA" or mode == "LA" or (mode == "P" and "transparency" in page.info):
                rgba = np.asarray(page.convert("RGBA")).astype(np.float32)
                a = (rgba[..., :3] * (rgba[..., 3:] / 255.0) + 0.5).astype(np.uint8)  # over black
            elif mode in ("L", "1"):
                a = np.asarray(page.convert("L"))
            else:
                a = np.asarray(page.convert("RGB"))
            frames.append(a)
    except (OSError, ValueError) as e:
        raise InputError(f"{name}: image data is truncated or corrupt ({e})") from None
    if len({f.ndim for f in frames}) > 1:  # pages in grey and in colour (e.g. GIF palettes): all RGB
        frames = [np.repeat(f[..., None], 3, -1) if f.ndim == 2 else f for f in frames]
    frames = [f for f in frames if f.shape == frames[0].shape]  # pages of another size are not frames
    info = {"kind": "image", "n_frames": len(frames), "format": im.format, "mode": im.mode,
            "size": [im.width, im.height]}
    if len(frames) > 1 and im.info.get("duration"):
        info["fps"] = 1000.0 / float(im.info["duration"])
    return np.stack(frames), info


def _load_video(path: Path) -> tuple[np.ndarray, dict]:
    from echogen.data.video_io import VideoError, read_video

    try:
        v, fps = read_video(path, grey=False)
    except VideoError as e:
        raise InputError(str(e).replace(str(path), path.name)) from None
    _check_size(path.name, v.shape[1], v.shape[2])
    return v, {"kind": "clip", "n_frames": int(len(v)), "fps": float(fps), "size": [v.shape[2], v.shape[1]]}


def _load_npy(path: Path) -> tuple[np.ndarray, dict]:
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{path.name}: not a plain numpy array ({e})") from None
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4):
        a = a[None]
    if a.ndim == 4 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (3, 4) or a.shape[0] < 1 or not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{path.name}: expected a (H,W), (N,H,W) or (N,H,W,3) numeric array, got {a.shape} {a.dtype}")
    _check_size(path.name, a.shape[1], a.shape[2])
    return _to_uint8(a), {"kind": "array", "n_frames": int(a.shape[0]), "size": [a.shape[2], a.shape[1]]}


def load_frames(path) -> tuple[np.ndarray, dict]:
    """All frames of an input as uint8 (N, H, W) or (N, H, W, 3), and an info dict (kind, n_frames,
    fps for clips, DICOM ultrasound regions). Raises InputError with one line for unusable input."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: file is empty")
    ext = path.suffix.lower()
    if _is_dicom(path):
        return _load_dicom(path)
    if ext == ".npy":
        return _load_npy(path)
    if ext in VIDEO_EXTS:
        return _load_video(path)
    return _load_image(path)


def count_frames(path) -> int:
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0 and _is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "PixelData" in ds or "NumberOfFrames" in ds:
                return int(ds.get("NumberOfFrames", 1) or 1)
        except Exception:
            pass  # load_frames gives the precise error
    return int(load_frames(path)[1]["n_frames"])


# ------------------------------------------------------------------------------------- preprocessing
def _grey(img: np.ndarray) -> tuple[np.ndarray, float]:
    """Luminance and the fraction of coloured (e.g. Doppler, annotation) pixels."""
    if img.ndim == 2:
        return img, 0.0
    rgb = img[..., :3].astype(np.int16)
    sat = rgb.max(-1) - rgb.min(-1)
    grey = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    return grey, float((sat > 40).mean())


def _usable_region(regions, h: int, w: int):
    """The largest 2-D region lying inside the image (a few pixels of slack), or None."""
    best = None
    for r in regions or []:
        if isinstance(r, dict):
            x0, y0, x1, y1 = r["x0"], r["y0"], r["x1"], r["y1"]
            fmt = r.get("spatial_format", 1)
        else:
            (x0, y0, x1, y1), fmt = r[:4], 1
        if fmt not in (1, 0) or x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
            continue
        if x0 < -2 or y0 < -2 or x1 > w + 2 or y1 > h + 2:
            continue
        box = (max(0, int(x0)), max(0, int(y0)), min(w, int(x1) + 1), min(h, int(y1) + 1))
        if best is None or (box[2] - box[0]) * (box[3] - box[1]) > (best[2] - best[0]) * (best[3] - best[1]):
            best = box
    return best


def find_sector(grey: np.ndarray) -> np.ndarray | None:
    """Mask (uint8 0/1) of the ultrasound sector by image analysis, or None if nothing sector-like.

    Bright pixels are opened (removes thin text, rulers and ECG strokes), closed (joins speckle into
    one blob); the largest blob's convex hull is the sector (fans and rectangles are convex)."""
    h, w = grey.shape
    thr = max(6.0, 0.05 * float(np.percentile(grey, 99)))
    m = (grey > thr).astype(np.uint8)
    k_close = max(3, min(h, w) // 50) | 1   # joins speckle grains
    k_open = max(5, min(h, w) // 20) | 1    # removes text, rulers, ECG strokes and markers
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_close, k_close)))
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_open, k_open)))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return None
    i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[i, cv2.CC_STAT_AREA] < 0.02 * h * w:
        return None
    pts = cv2.findNonZero((lab == i).astype(np.uint8))
    hull = cv2.convexHull(pts)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def _square(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """Square box of side = sector height (apex at the top), centred horizontally: a wide fan loses its
    far lateral corners, as in EchoNet-Dynamic's frames; a narrow one is padded at the sides, a very
    wide one keeps its width and is padded below."""
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2.0
    side = h if w <= 1.5 * h else w  # very wide (curvilinear) fans: keep the width, pad below
    nx0 = int(round(cx - side / 2.0))
    return nx0, y0, nx0 + side, y0 + side


def _prepare(img: np.ndarray, size: int = 112, regions=None, name: str = "image") -> tuple[np.ndarray, dict]:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise InputError(f"{name}: expected an (H,W) or (H,W,3) frame, got shape {img.shape}")
    _check_size(name, img.shape[0], img.shape[1])
    img = _to_uint8(img)
    grey, colour = _grey(img)
    if colour > 0:  # markers, header bars, Doppler: not B-mode tissue
        sat = img[..., :3].max(-1).astype(np.int16) - img[..., :3].min(-1)
        grey = np.where(sat > 40, 0, grey).astype(np.uint8)
    h, w = grey.shape
    info: dict = {"colour_fraction": round(colour, 4)}
    box = _usable_region(regions, h, w)
    if box is not None:
        x0, y0, x1, y1 = box
        sub = find_sector(grey[y0:y1, x0:x1])  # the fan inside the region's rectangle
        mask = np.zeros((h, w), np.uint8)
        if sub is None:
            mask[y0:y1, x0:x1] = 1
        else:
            mask[y0:y1, x0:x1] = sub
        info["sector"] = "dicom-regions"
    else:
        if regions:
            info["regions_ignored"] = "ultrasound regions lie outside the image"
        mask = find_sector(grey)
        info["sector"] = "image-analysis"
        if mask is None:
            mask = np.ones((h, w), np.uint8)
            info["sector"] = "whole-image (no sector found)"
    outside = (mask == 0) & (grey > 20)
    info["masked_pixels"] = int(outside.sum())  # burned-in text, rulers, ECG blanked
    grey = grey * mask
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    sx0, sy0, sx1, sy1 = _square(x0, y0, x1, y1)
    side = sx1 - sx0
    canvas = np.zeros((side, side), np.uint8)
    cx0, cx1 = max(sx0, 0), min(sx1, w)
    cy0, cy1 = max(sy0, 0), min(sy1, h)
    canvas[cy0 - sy0:cy1 - sy0, cx0 - sx0:cx1 - sx0] = grey[cy0:cy1, cx0:cx1]
    info["crop"] = [sx0, sy0, sx1, sy1]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    out = cv2.resize(canvas, (size, size), interpolation=interp)
    return out.astype(np.float32) / 255.0, info


def prepare_array(img: np.ndarray, size: int = 112, regions=None) -> np.ndarray:
    """One in-memory frame (H, W) or (H, W, 3) -> the model's conditioning frame, float32 (size, size) in [0, 1]."""
    return _prepare(img, size, regions)[0]


def prepare_frame(path, frame: int = 0, size: int = 112) -> tuple[np.ndarray, dict]:
    """Frame `frame` of an input file -> (float32 (size, size) in [0, 1], info on what was done)."""
    frames, info = load_frames(path)
    n = len(frames)
    if not -n <= frame < n or (frame < 0):
        raise InputError(f"{Path(path).name}: frame {frame} out of range (the input has {n} frame"
                         f"{'s' if n != 1 else ''}: 0..{n - 1})")
    out, pinfo = _prepare(frames[frame], size, info.get("regions"), Path(path).name)
    info = {k: v for k, v in info.items() if k != "regions"} | {"frame": int(frame)} | pinfo
    return out, info
