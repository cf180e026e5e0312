"""Hostile inputs for tests and the load check (bench/load_app.py): tiny files that would cost a naive
reader gigabytes or minutes. Made on the fly, never stored: a ~1 KB GIF whose frames are 4096x4096 on
screen, an 8192x8192 RGBA PNG (~260 KB), a ~45 KB MP4 holding 3000 frames."""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np


def hostile_gif(path, side=4096, n=40) -> Path:
    """A GIF of `n` frames on a side x side screen, each frame a 1x1 image: ~1 KB on disk, but every
    frame decodes to the full screen (n * side^2 * 3 bytes)."""
    b = bytearray(b"GIF89a" + struct.pack("<HH", side, side) + bytes([0x80, 0, 0]) + bytes([0, 0, 0, 255, 255, 255]))
    b += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for i in range(n):
        b += b"\x21\xf9\x04\x00\x04\x00\x00\x00"                       # 40 ms, no disposal
        b += b"\x2c" + struct.pack("<HHHH", i % 16, 0, 1, 1) + b"\x00"  # a 1x1 image on the big screen
        b += b"\x02\x02\x44\x01\x00"                                   # LZW: clear, pixel 0, end
    b += b"\x3b"
    Path(path).write_bytes(bytes(b))
    return Path(path)


def huge_png(path, side=8192) -> Path:
    from PIL import Image
    Image.fromarray(np.zeros((side, side, 4), np.uint8)).save(path, compress_level=9)
    return Path(path)


def long_mp4(path, n=3000, side=64) -> Path:
    """A few tens of KB of H.264 holding `n` black frames."""
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(50))
        s.width = s.height = side
        s.pix_fmt, s.options = "yuv420p", {"crf": "51", "preset": "ultrafast"}
        f = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
        for _ in range(n):
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path)
