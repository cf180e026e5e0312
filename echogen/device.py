"""Device choice: CUDA when present, else CPU float32. `--device` overrides."""
from __future__ import annotations

import contextlib

import torch


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU on this machine")
    return dev


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); a no-op on CPU (float32 there)."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
