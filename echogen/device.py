"""Device choice: CUDA when present, else CPU float32. `--device` overrides."""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys

import torch

_MALLOC_TUNED: bool | None = None


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU on this machine")
    return dev


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")   # torch.compile modes (echogen.diffusion.cascade.compile_network)


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """fp32 | bf16 | fp16: what `precision` means on `device`. auto: float32 everywhere (on CUDA torch's
    default TF32 convolutions): on an H200 at one video, bf16 autocast was no faster than float32 for any paper
    preset (1SCM 18.6 vs 15.7 s, 2SCM 36.3 vs 35.0 s, 4SCM 72.6 vs 65.8 s per video; docs/RESULTS.md "GPU").
    bf16 runs on CUDA or the CPU (slow on CPUs without native bf16); fp16 is CUDA only (ValueError otherwise,
    as for an unknown name)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        return "fp32"
    if precision == "fp16" and not cuda:
        raise ValueError("fp16 autocast needs a CUDA device; on the CPU use fp32 or bf16")
    return precision


def autocast(device: torch.device, precision: str = "auto"):
    """The sampling precision (resolve_precision) as an autocast context; parameters stay float32."""
    p = resolve_precision(device, precision)
    if p == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)


def tune_cpu_malloc() -> bool:
    """Let glibc keep freed activation buffers for reuse instead of handing them back to the OS.

    torch's CPU tensors are plain malloc/free. By default glibc serves every large block with a fresh
    mmap and unmaps it on free, so each big activation of a forward pass is page-faulted (and zeroed by
    the kernel) again: 10-15 % of a paper-size forward on these CPUs (docs/PERF.md change 12). This
    serves all blocks from the heap (no per-block mmap; glibc still maps memory itself when the heap
    cannot grow) and never trims it, so the process keeps its peak footprint and reuses it.
    Process-wide; once per process; glibc Linux only (elsewhere, or with ECHOGEN_MALLOC=0, nothing is
    changed and False is returned)."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:
        return _MALLOC_TUNED
    _MALLOC_TUNED = False
    if os.environ.get("ECHOGEN_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    _MALLOC_TUNED = bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)
                         and mallopt(M_TOP_PAD, 64 << 20))
    return _MALLOC_TUNED


def trim_memory() -> bool:
    """Hand freed heap memory back to the OS now (glibc malloc_trim(0): the heap's top and every free
    page inside it). tune_cpu_malloc keeps freed memory for reuse within a request; a server calls this
    after each request so a big one does not leave the process at its peak. False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(resident MB now, peak resident MB) of a process from /proc (Linux); (nan, nan) elsewhere."""
    try:
        text = open(f"/proc/{pid}/status").read()
    except OSError:
        return float("nan"), float("nan")
    kb = {k: float(v.split()[0]) for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)
          if k in ("VmRSS", "VmHWM")}
    return kb.get("VmRSS", float("nan")) / 1024, kb.get("VmHWM", float("nan")) / 1024


def malloc_tuned() -> bool:
    """Whether tune_cpu_malloc has changed glibc's settings in this process."""
    return bool(_MALLOC_TUNED)
