"""Load what clinicians have (DICOM, images, clips, .npy) and turn one frame into the model's input.

Preprocessing follows EchoNet-Dynamic: find the ultrasound sector, blank everything outside it
(burned-in text, rulers, ECG traces, logos), crop to it, greyscale, and resize to 112x112 with area
interpolation. The sector comes from the DICOM SequenceOfUltrasoundRegions when it holds a usable
2-D region, else from image analysis (largest bright, textured, convex blob).

Privacy: nothing read from a DICOM header other than image geometry, frame timing and region bounds
reaches `info`; header values are never printed or written.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MIN_SIDE, MAX_SIDE = 16, 8192
VIDEO_EXTS = {".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
DICOM_EXTS = {".dcm", ".dicom", ".dic"}
# where a frame's sector came from: the label written into info["sector"] -> what a user is told
SECTOR_REGIONS, SECTOR_FOUND, SECTOR_NONE = "dicom-regions", "image-analysis", "whole-image (no sector found)"
SECTOR_SAID = {SECTOR_REGIONS: "sector from the DICOM's ultrasound regions",
               SECTOR_FOUND: "sector found in the image",
               SECTOR_NONE: "no sector found: the whole image used"}


class InputError(RuntimeError):
    """The input cannot be used; the message names the file and the problem in one line."""


@dataclass(frozen=True)
class Limits:
    """What one input may cost, checked before its pixels are decoded (the app and the CLI).

    A frame's size comes from the header (image size, DICOM Rows x Columns, the video stream), so an
    over-large frame is refused before it is decoded; frames past `max_frames` are never read; every
    frame is shrunk to at most `work_side` px a side as it is decoded, before any analysis.
    Environment: ECHOGEN_MAX_FILE_MB, ECHOGEN_MAX_MEGAPIXELS, ECHOGEN_MAX_FRAMES, ECHOGEN_WORK_SIDE."""
    max_file_mb: float = 256.0       # file size
    max_megapixels: float = 8.3      # pixels of one frame (a 4K screen, 3840 x 2160, is 8.3 Mpx)
    max_frames: int = 600            # frames read from one input (a clip's later frames are not read)
    work_side: int = 1024            # frames are shrunk to this side before the sector is searched

    def __post_init__(self):
        for k in ("max_file_mb", "max_megapixels", "max_frames", "work_side"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and v > 0 and v == v):
                raise ValueError(f"input limit {k} must be a positive number, got {v!r}")

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)

    @staticmethod
    def from_env(env=None, **overrides) -> "Limits":
        env = os.environ if env is None else env
        kw = {}
        for key, name, cast in (("ECHOGEN_MAX_FILE_MB", "max_file_mb", float),
                                ("ECHOGEN_MAX_MEGAPIXELS", "max_megapixels", float),
                                ("ECHOGEN_MAX_FRAMES", "max_frames", int), ("ECHOGEN_WORK_SIDE", "work_side", int)):
            if env.get(key):
                try:
                    kw[name] = cast(env[key])
                except ValueError:
                    raise ValueError(f"{key}={env[key]!r}: not a number") from None
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return Limits(**kw)


_LIMITS: Limits | None = None


def get_limits() -> Limits:
    """The process-wide limits (from the environment until set_limits is called)."""
    global _LIMITS
    if _LIMITS is None:
        _LIMITS = Limits.from_env()
    return _LIMITS


def set_limits(limits: Limits) -> Limits:
    global _LIMITS
    _LIMITS = limits
    return limits


def _check_size(name: str, h: int, w: int, limits: Limits | None = None) -> None:
    lim = limits or get_limits()
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{name}: image is too small ({w}x{h} px; need at least {MIN_SIDE} px a side)")
    if max(h, w) > MAX_SIDE:
        raise InputError(f"{name}: image is too large ({w}x{h} px; at most {MAX_SIDE} px a side)")
    if int(h) * int(w) > lim.max_pixels:
        raise InputError(f"{name}: image is too large ({w}x{h} px = {h * w / 1e6:.1f} Mpx a frame; "
                         f"at most {lim.max_megapixels:g} Mpx)")


def _check_file(name: str, path: Path, limits: Limits) -> None:
    mb = path.stat().st_size / 2 ** 20
    if mb > limits.max_file_mb:
        raise InputError(f"{name}: file is too large ({mb:.0f} MB; at most {limits.max_file_mb:g} MB)")


def _shrink(frame: np.ndarray, side: int | None) -> tuple[np.ndarray, float]:
    """Area-downscale so the longer side is at most `side` (never upscales); returns (frame, scale)."""
    h, w = frame.shape[:2]
    if not side or max(h, w) <= side:
        return frame, 1.0
    s = side / max(h, w)
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    return cv2.resize(np.ascontiguousarray(frame), size, interpolation=cv2.INTER_AREA), s


def _wanted(i: int, index) -> bool:
    return index is None or i == index


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


def _scale_regions(regions: list[dict], s: float) -> list[dict]:
    if s == 1.0:
        return regions
    return [{**r, **{k: int(round(r[k] * s)) for k in ("x0", "y0", "x1", "y1")}} for r in regions]


def _load_dicom(path: Path, limits: Limits, index=None, shrink=None) -> tuple[list, dict]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array

    name = path.name
    try:
        with warnings.catch_warnings(record=True) as said:   # pydicom warns (not raises) at an early end of file
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise InputError(f"{name}: not a DICOM file (no DICOM header)") from None
    except Exception as e:  # truncated headers raise many kinds of errors
        raise InputError(f"{name}: unreadable DICOM ({type(e).__name__}: the file looks truncated or corrupt)") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        # an early end of file, or an image's header (its SOP class, its size) without the image: cut short
        sop = str(getattr(ds.get("SOPClassUID"), "name", "") or "")
        if any("end of file" in str(w.message).lower() for w in said) or "Image Storage" in sop or "Rows" in ds:
            raise InputError(f"{name}: truncated or corrupt DICOM (the file ends before its pixel data)")
        raise InputError(f"{name}: DICOM file holds no image (no pixel data; e.g. a report or plan)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(name, rows, cols, limits)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        n_total = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        n_total = 1
    n_read = min(n_total, limits.max_frames)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    tsn = getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "unknown")
    voi_note, scale, frames = None, 1.0, []
    for k in ([index] if index is not None and 0 <= index < n_read else [] if index is not None else range(n_read)):
        try:   # one frame at a time: a long clip is never decoded whole
            arr = pixel_array(ds, index=k)
        except (RuntimeError, NotImplementedError) as e:
            msg = str(e)
            plugins = [p for p in ("pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pylibjpeg", "gdcm")
                       if p in msg]
            need = f"; install {' or '.join(plugins)}" if plugins else ""
            raise InputError(f"{name}: cannot decode {tsn} pixel data{need}") from None
        except Exception as e:
            raise InputError(f"{name}: DICOM pixel data is truncated or corrupt ({type(e).__name__})") from None
        fspp = spp
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
            fspp = 3
        if photometric in ("MONOCHROME1", "MONOCHROME2") and ("WindowCenter" in ds or "VOILUTSequence" in ds):
            from pydicom.pixels import apply_voi_lut

            try:
                arr = apply_voi_lut(arr, ds)
            except (ValueError, TypeError, KeyError, IndexError) as e:  # a malformed window: raw values, say so
                voi_note = f"VOI LUT/window not applied ({type(e).__name__}); raw pixel values min-max scaled"
        arr = np.asarray(arr)
        arr = _to_uint8(arr) if arr.dtype != np.uint8 or fspp == 1 else arr
        if photometric == "MONOCHROME1":
            arr = 255 - arr  # MONOCHROME1: low values are white
        arr, scale = _shrink(arr, shrink)
        frames.append(np.ascontiguousarray(arr))
    fps = 0.0
    try:
        for key in ("RecommendedDisplayFrameRate", "CineRate"):
            if ds.get(key):
                fps = float(ds.get(key))
                break
        if not fps and ds.get("FrameTime"):
            fps = 1000.0 / float(ds.FrameTime)
    except (TypeError, ValueError, ZeroDivisionError):
        fps = 0.0
    info = {"kind": "dicom", "n_frames": n_read, "photometric": photometric, "transfer_syntax": tsn,
            "regions": _scale_regions(_regions(ds), scale), "size": [cols, rows]}
    if n_total > n_read:
        info["truncated"] = f"only the first {n_read} of {n_total} frames were read (limit)"
    if fps:
        info["fps"] = fps
    if voi_note:
        info["note"] = voi_note
    return frames, info


# ------------------------------------------------------------------------------- images, clips, arrays
def _page_array(page) -> np.ndarray:
    mode = page.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _to_uint8(np.asarray(page))
    if mode == "RGBA" or mode == "LA" or (mode == "P" and "transparency" in page.info):
        rgba = np.asarray(page.convert("RGBA")).astype(np.float32)
        return (rgba[..., :3] * (rgba[..., 3:] / 255.0) + 0.5).astype(np.uint8)  # over black
    if mode in ("L", "1"):
        return np.asarray(page.convert("L"))
    return np.asarray(page.convert("RGB"))


def _load_image(path: Path, limits: Limits, index=None, shrink=None) -> tuple[list, dict]:
    from PIL import Image, UnidentifiedImageError

    name = path.name
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image, DICOM or video file") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name}: image is too large (more than {MAX_SIDE} px a side)") from None
    except OSError as e:
        raise InputError(f"{name}: unreadable image ({e})") from None
    with im:
        _check_size(name, im.height, im.width, limits)   # from the header: nothing decoded yet
        try:
            n_total = int(getattr(im, "n_frames", 1) or 1)  # GIF/APNG/TIFF: counted without decoding
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"{name}: image data is truncated or corrupt ({e})") from None
        n_read = min(n_total, limits.max_frames)
        frames, first_shape = [], None
        try:
            for k in ([index] if index is not None and 0 <= index < n_read else [] if index is not None
                      else range(n_read)):
                im.seek(k)
                _check_size(name, im.height, im.width, limits)
                a = _page_array(im)
                if first_shape is None:
                    first_shape = a.shape
                elif a.shape != first_shape:
                    continue  # pages of another size (or colour) are not frames of the same clip
                frames.append(_shrink(a, shrink)[0])
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"{name}: image data is truncated or corrupt ({e})") from None
        info = {"kind": "image", "n_frames": n_read if index is not None else len(frames), "format": im.format,
                "mode": im.mode, "size": [im.width, im.height]}
        if n_total > n_read:
            info["truncated"] = f"only the first {n_read} of {n_total} frames were read (limit)"
        if n_total > 1 and im.info.get("duration"):
            info["fps"] = 1000.0 / float(im.info["duration"])
    return frames, info


def _load_video(path: Path, limits: Limits, index=None, shrink=None) -> tuple[list, dict]:
    name = path.name
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f"{name}: not a readable video (OpenCV could not open it)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w and h:
            _check_size(name, h, w, limits)               # from the stream header: nothing decoded yet
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames, i, truncated = [], 0, False
        while True:
            if i >= limits.max_frames:
                truncated = cap.grab()                    # is there more? (never kept)
                break
            if index is not None and i < index:
                if not cap.grab():                        # skipped frames are not converted or kept
                    break
                i += 1
                continue
            ok, f = cap.read()
            if not ok:
                break
            if i == 0 or index is not None:
                _check_size(name, f.shape[0], f.shape[1], limits)
            frames.append(_shrink(np.ascontiguousarray(f[..., ::-1]), shrink)[0])
            i += 1
            if index is not None:
                break
    finally:
        cap.release()
    if not frames and index is None:
        raise InputError(f"{name}: no frames could be decoded")
    n = len(frames) if index is None else (min(declared, limits.max_frames) if declared else i + len(frames))
    info = {"kind": "clip", "n_frames": int(n), "fps": fps, "size": [w, h]}
    if truncated:
        info["truncated"] = f"only the first {limits.max_frames} frames were read (limit)"
    return frames, info


def _load_npy(path: Path, limits: Limits, index=None, shrink=None) -> tuple[list, dict]:
    name = path.name
    try:
        a = np.load(path, allow_pickle=False, mmap_mode="r")   # the header only; frames read one by one
    except ValueError as e:
        raise InputError(f"{name}: not a plain numpy array ({e})") from None
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4):
        a = a[None]
    if a.ndim not in (3, 4) or a.shape[0] < 1 or not np.issubdtype(a.dtype, np.number) \
            or (a.ndim == 4 and a.shape[-1] not in (1, 3, 4)):
        raise InputError(f"{name}: expected a (H,W), (N,H,W) or (N,H,W,3) numeric array, got {a.shape} {a.dtype}")
    _check_size(name, a.shape[1], a.shape[2], limits)
    n_read = min(int(a.shape[0]), limits.max_frames)
    sel = a[:n_read] if index is None else a[index:index + 1] if 0 <= index < n_read else a[:0]
    sel = np.asarray(sel)
    if sel.ndim == 4:
        sel = sel[..., :3] if sel.shape[-1] == 4 else sel[..., 0] if sel.shape[-1] == 1 else sel
    u8 = _to_uint8(sel) if len(sel) else sel.astype(np.uint8)
    info = {"kind": "array", "n_frames": n_read, "size": [int(a.shape[2]), int(a.shape[1])]}
    if a.shape[0] > n_read:
        info["truncated"] = f"only the first {n_read} of {a.shape[0]} frames were read (limit)"
    return [_shrink(f, shrink)[0] for f in u8], info


def _open_checked(path, limits: Limits) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: file is empty")
    _check_file(path.name, path, limits)
    return path


def _read(path, limits: Limits, index=None, shrink=None) -> tuple[list, dict]:
    path = _open_checked(path, limits)
    ext = path.suffix.lower()
    if _is_dicom(path):
        return _load_dicom(path, limits, index, shrink)
    if ext == ".npy":
        return _load_npy(path, limits, index, shrink)
    if ext in VIDEO_EXTS:
        return _load_video(path, limits, index, shrink)
    return _load_image(path, limits, index, shrink)


def load_frames(path, limits: Limits | None = None, shrink: int | None = -1) -> tuple[np.ndarray, dict]:
    """The frames of an input as uint8 (N, H, W) or (N, H, W, 3), and an info dict (kind, n_frames,
    fps for clips, DICOM ultrasound regions). Raises InputError with one line for unusable input.

    Bounded by `limits` (default: get_limits()): the file size and each frame's pixels are checked
    before anything is decoded, at most max_frames frames are read (info["truncated"] says so), and
    every frame is area-downscaled to at most `shrink` px a side as it is decoded (default: the limits'
    work_side; None keeps full size)."""
    lim = limits or get_limits()
    shrink = lim.work_side if shrink == -1 else shrink
    frames, info = _read(path, lim, None, shrink)
    if not frames:
        raise InputError(f"{Path(path).name}: no frames could be decoded")
    if len({f.ndim for f in frames}) > 1:  # pages in grey and in colour (e.g. GIF palettes): all RGB
        frames = [np.repeat(f[..., None], 3, -1) if f.ndim == 2 else f for f in frames]
    frames = [f for f in frames if f.shape == frames[0].shape]
    info["n_frames"] = len(frames)
    return np.stack(frames), info


def load_frame(path, index: int = 0, limits: Limits | None = None, shrink: int | None = None) -> tuple[np.ndarray, dict]:
    """Only frame `index` of an input (earlier frames of a clip are skipped, later ones never read):
    (uint8 (H, W) or (H, W, 3), info with n_frames = the frames the input has, up to max_frames)."""
    lim = limits or get_limits()
    name = Path(path).name
    if int(index) < 0:
        _open_checked(path, lim)
        raise InputError(f"{name}: frame {index} out of range (frames count from 0)")
    frames, info = _read(path, lim, int(index), shrink)
    n = int(info["n_frames"])
    if not frames:
        if n and index >= lim.max_frames:
            raise InputError(f"{name}: frame {index} out of range (only the first {lim.max_frames} frames are read)")
        raise InputError(f"{name}: frame {index} out of range (the input has {n} frame"
                         f"{'s' if n != 1 else ''}: 0..{max(n - 1, 0)})")
    return frames[0], info


def count_frames(path, limits: Limits | None = None) -> int:
    """Frames of an input that would be read (up to max_frames), without decoding a whole clip."""
    path = Path(path)
    lim = limits or get_limits()
    if path.is_file() and path.stat().st_size > 0 and _is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "PixelData" in ds or "NumberOfFrames" in ds:
                return min(int(ds.get("NumberOfFrames", 1) or 1), lim.max_frames)
        except Exception:
            pass  # load_frames gives the precise error
    return int(load_frames(path, lim, shrink=64)[1]["n_frames"])


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


def fan_shape(mask: np.ndarray) -> dict:
    """Shape of a sector mask (find_sector): widths of horizontal bands as fractions of its height from the top.
    taper: top band (0-15 %) over a lower one (60-90 %): a fan (apex at the top) is narrow at the top, << 0.8.
    apex_down: bottom band (85-100 %) over an upper one (10-40 %).
    ends: top band over bottom band: < 1 for an upright fan, a zoomed one (apex cropped off) too; > 1 upside down.
    off_centre: how far the narrow top lies from the middle, as a fraction of the width."""
    ys, xs = np.nonzero(mask)
    y0, y1 = ys.min(), ys.max()
    rows = lambda a, b: mask[int(y0 + a * (y1 - y0)):int(y0 + b * (y1 - y0)) + 1].sum(1).mean()  # noqa: E731
    top = ys <= y0 + 0.05 * (y1 - y0)
    return {"taper": float(rows(0.0, 0.15) / max(rows(0.6, 0.9), 1.0)),
            "apex_down": float(rows(0.85, 1.0) / max(rows(0.1, 0.4), 1.0)),
            "ends": float(rows(0.0, 0.15) / max(rows(0.85, 1.0), 1.0)),
            "off_centre": float(abs(xs[top].mean() - xs.mean()) / max(xs.max() - xs.min(), 1))}


def is_apex_down(shape: dict) -> bool:
    """A fan shown upside down (its apex at the bottom, as some labs display apical views): wider at the top than
    below it (taper) and than at its bottom (ends). Upright fans, zoomed ones whose apex is cropped off, rectangles
    and discs are not. Measured on simulator TEST sectors (v1 60 + v2 60 + v2 200 clips; max projections and 8
    frames each, as written and after an 8 fps / 16-frame / JPEG q50 export; docs/RESULTS.md, session 18): no
    upright clip turned and 4 of 5,120 single frames (dim v2 clips whose sector edge the sector finder misses);
    636 of 640 upside-down clips and 98 % of frames caught. The real SonoSite clip: upright ends <= 0.54, upside
    down taper >= 0.90 and ends >= 1.8 (every frame)."""
    return shape["taper"] > 0.75 and shape["ends"] > 1.2


def apex_at_bottom(frames) -> bool:
    """Is this frame (H, W) or clip (T, H, W) (uint8 or float [0, 1]; greyscale, e.g. prepared model frames) a fan
    with its apex at the bottom? Judged on the sector of the maximum projection (find_sector)."""
    a = np.asarray(frames)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    grey = a.reshape(-1, *a.shape[-2:]).max(0)
    mask = find_sector(grey)
    return mask is not None and is_apex_down(fan_shape(mask))


def _square(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """Square box of side = sector height (apex at the top), centred horizontally: a wide fan loses its
    far lateral corners, as in EchoNet-Dynamic's frames; a narrow one is padded at the sides, a very
    wide one keeps its width and is padded below."""
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2.0
    side = h if w <= 1.5 * h else w  # very wide (curvilinear) fans: keep the width, pad below
    nx0 = int(round(cx - side / 2.0))
    return nx0, y0, nx0 + side, y0 + side


def _prepare(img: np.ndarray, size: int = 112, regions=None, name: str = "image",
             limits: Limits | None = None) -> tuple[np.ndarray, dict]:
    lim = limits or get_limits()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise InputError(f"{name}: expected an (H,W) or (H,W,3) frame, got shape {img.shape}")
    _check_size(name, img.shape[0], img.shape[1], lim)
    img = _to_uint8(img)
    # shrink first: the sector finder's filters grow with the image, the output is size x size anyway
    img, scale = _shrink(img, max(lim.work_side, size))
    if scale != 1.0 and regions:
        regions = _scale_regions([r for r in regions if isinstance(r, dict)], scale)
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
        info["sector"] = SECTOR_REGIONS
    else:
        if regions:
            info["regions_ignored"] = "ultrasound regions lie outside the image"
        mask = find_sector(grey)
        info["sector"] = SECTOR_FOUND
        if mask is None:
            mask = np.ones((h, w), np.uint8)
            info["sector"] = SECTOR_NONE
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
    info["crop"] = [int(round(v / scale)) for v in (sx0, sy0, sx1, sy1)]   # in the input's pixels
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    out = cv2.resize(canvas, (size, size), interpolation=interp)
    return out.astype(np.float32) / 255.0, info


def prepare_array(img: np.ndarray, size: int = 112, regions=None) -> np.ndarray:
    """One in-memory frame (H, W) or (H, W, 3) -> the model's conditioning frame, float32 (size, size) in [0, 1]."""
    return _prepare(img, size, regions)[0]


def prepare_frame(path, frame: int = 0, size: int = 112, limits: Limits | None = None) -> tuple[np.ndarray, dict]:
    """Frame `frame` of an input file -> (float32 (size, size) in [0, 1], info on what was done).
    Only that frame is decoded, shrunk to the working side before the sector is searched."""
    lim = limits or get_limits()
    img, info = load_frame(path, int(frame), lim, shrink=max(lim.work_side, size))
    out, pinfo = _prepare(img, size, info.get("regions"), Path(path).name, lim)
    if "crop" in pinfo and info.get("size") and max(img.shape[:2]) < max(info["size"]):
        s = max(info["size"]) / max(img.shape[:2])        # crop back in the file's own pixels
        pinfo["crop"] = [int(round(v * s)) for v in pinfo["crop"]]
    info = {k: v for k, v in info.items() if k != "regions"} | {"frame": int(frame)} | pinfo
    return out, info
