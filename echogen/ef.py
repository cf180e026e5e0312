"""The ejection fraction as the project handles it: one valid range, one scaling, one list parser.

EF is given in percent everywhere a person sees it. Networks take EF / 100 (`to_network`); 0 is never a
valid EF because the paper's networks read an all-zero EF as "no EF" (the classifier-free null).
Every error is an EFError, a ValueError, so callers catch ValueError and show its one line.
"""
from __future__ import annotations

import numpy as np
import torch

EF_MIN, EF_MAX = 5.0, 95.0          # what a request may ask for (EchoNet-Dynamic's EFs lie in ~7-97 %)
SWEEP_MAX = 5                       # EFs in one side-by-side sweep (the app's sweep, one batch)
EF_BIN_EDGES = (0, 35, 50, 65, 100)  # the EF bins errors and counts are reported in: <35, 35-50, 50-65, >=65


class EFError(ValueError):
    """An EF (or a list of EFs) that EchoGen cannot use; the message is one line for the user."""


def check_ef(value, what: str = "EF") -> float:
    """One EF in % -> float, or EFError naming the problem."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise EFError(f"{what} must be a number of percent, got {value!r}") from None
    if not np.isfinite(v) or not EF_MIN <= v <= EF_MAX:
        raise EFError(f"{what} must be between {EF_MIN:g} and {EF_MAX:g} %, got {value!r}")
    return v


def check_efs(values, what: str = "EF") -> torch.Tensor:
    """A scalar or sequence of EFs in % -> (N,) float32 tensor, each checked."""
    arr = np.atleast_1d(np.asarray(values.cpu() if torch.is_tensor(values) else values, dtype=object))
    if arr.size == 0:
        raise EFError(f"{what}: no value given")
    return torch.tensor([check_ef(v, what) for v in arr.ravel()], dtype=torch.float32)


def parse_efs(text, max_count: int | None = None, what: str = "EF list") -> list[float]:
    """'20, 35; 50' (or a list) -> [20.0, 35.0, 50.0]; each in [EF_MIN, EF_MAX], 1..max_count values."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [v.strip() for v in str(text or "").replace(";", ",").split(",") if v.strip()]
    if not items:
        raise EFError(f"{what}: give at least one EF (numbers separated by commas), got {text!r}")
    if max_count is not None and len(items) > max_count:
        raise EFError(f"{what}: at most {max_count} EFs, got {len(items)}")
    return [check_ef(v, f"{what}: EF") for v in items]


def to_network(ef_percent: torch.Tensor) -> torch.Tensor:
    """EF in % -> the network's EF input (a fraction)."""
    return ef_percent.float() / 100
