"""Video files in and out.

Arrays: (T, H, W) greyscale or (T, H, W, 3) RGB, uint8, or float in [0, 1] (converted).
- .mp4 : H.264 (libx264, yuv420p, +faststart) through PyAV, so it plays in browsers.
- .gif : looping GIF through Pillow.
- .avi : Motion-JPEG through OpenCV (EchoNet-Dynamic's container).
- .npy : float32 array in [0, 1], shape (T, H, W).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoError(RuntimeError):
    """A video could not be read or written; the message names the file and the problem."""


def to_uint8(video) -> np.ndarray:
    v = np.asarray(video)
    if v.dtype == np.uint8:
        return v
    return (np.clip(v.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _rgb(v: np.ndarray) -> np.ndarray:
    return np.repeat(v[..., None], 3, axis=-1) if v.ndim == 3 else v


def write_video(path, video, fps: float, loop: bool = False) -> Path:
    """Write a video by file extension (.mp4, .gif, .avi, .npy).

    loop=True (an .mp4 that is played as a loop, e.g. a seamless loop from echogen.data.loops): every frame
    is a key frame. With predicted frames the encoder smooths speckle from frame to frame but not across
    the wrap (the first frame is coded on its own), so the wrap would show a jump the loop does not have."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    v = np.asarray(video)
    if v.ndim not in (3, 4) or v.shape[0] < 1:
        raise VideoError(f"{path}: expected (T,H,W[,3]) frames, got shape {v.shape}")
    ext = path.suffix.lower()
    if ext == ".npy":
        f = v.astype(np.float32) / 255.0 if v.dtype == np.uint8 else v.astype(np.float32)
        np.save(path, f)
    elif ext == ".mp4":
        _write_mp4(path, _rgb(to_uint8(v)), fps, intra=loop)
    elif ext == ".gif":
        _write_gif(path, to_uint8(v), fps)
    elif ext == ".avi":
        _write_avi(path, _rgb(to_uint8(v)), fps)
    else:
        raise VideoError(f"{path}: unsupported output type '{ext}' (use .mp4, .gif, .avi or .npy)")
    return path


# libx264 settings: same frames -> same bytes (issue 27). With x264's macroblock tree (mbtree, on by default)
# the bitstream of these short clips depended on what the heap held before the encode (an uninitialised
# memory read; measured, one encoder thread: with the heap's freed memory filled with random bytes about every
# second encode was a new bitstream, decoded pixels up to 4 grey levels apart; in a fresh process 0-5 of 60;
# mbtree=0, rc-lookahead=0 or bframes=0 made every encode identical). echogen.device.tune_cpu_malloc (app.py,
# the CLI) serves large buffers from the reused heap instead of fresh zeroed pages, which is why the app's
# loops differed most of the time. mbtree=0 costs ~1.5x the file size at the same CRF
# (decoded frames 1.7 vs 1.6 grey levels from the input on a noise clip). One encoder thread keeps the bytes
# independent of the machine's core count (x264's frame threads change its decisions); a 32-frame 224x224
# loop still encodes in ~25 ms.
MP4_OPTIONS = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}


def _write_mp4(path: Path, v: np.ndarray, fps: float, intra: bool = False) -> None:
    import av
    from fractions import Fraction

    t, h, w, _ = v.shape
    # yuv420p needs even sizes: pad by one black row/column if odd
    ph, pw = h + (h % 2), w + (w % 2)
    if (ph, pw) != (h, w):
        v = np.pad(v, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)))
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        s.width, s.height, s.pix_fmt = pw, ph, "yuv420p"
        opts = dict(MP4_OPTIONS)
        if intra:   # every frame a key frame: a loop's wrap decodes as cleanly as its inside (seamless loops)
            opts["x264-params"] += ":keyint=1:min-keyint=1:scenecut=0"
        s.options = opts
        for frame in v:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def _write_gif(path: Path, v: np.ndarray, fps: float) -> None:
    from PIL import Image

    mode = "L" if v.ndim == 3 else "RGB"
    frames = [Image.fromarray(f, mode=mode) for f in v]
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                   duration=max(20, int(round(1000.0 / fps))), optimize=False)


def _write_avi(path: Path, v: np.ndarray, fps: float) -> None:
    import cv2

    t, h, w, _ = v.shape
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (w, h))
    if not wr.isOpened():
        raise VideoError(f"{path}: OpenCV could not open an MJPG AVI writer")
    for frame in v:
        wr.write(np.ascontiguousarray(frame[..., ::-1]))
    wr.release()


def read_video(path, grey: bool = True) -> tuple[np.ndarray, float]:
    """Read a whole clip. Returns (frames uint8 (T,H,W) if grey else (T,H,W,3), fps).

    .npy arrays are taken as float in [0,1] (or uint8) with fps reported as 0 (unknown)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty")
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise VideoError(f"{path}: not a plain numpy array ({e})") from None
        if a.ndim == 4 and a.shape[-1] in (1, 3) and grey:
            a = a.mean(-1) if a.shape[-1] == 3 else a[..., 0]
        if a.ndim != 3:
            raise VideoError(f"{path}: expected a (T,H,W) array, got shape {a.shape}")
        return to_uint8(a), 0.0
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"{path}: not a readable video (OpenCV could not open it)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) if grey else f[..., ::-1])
    cap.release()
    if not frames:
        raise VideoError(f"{path}: no frames could be decoded")
    return np.stack(frames), fps
