"""The ejection fraction as the project handles it: one valid range, one scaling, one list parser.

EF is given in percent everywhere a person sees it. Networks take EF / 100 (`to_network`); 0 is never a
valid EF because the paper's networks read an all-zero EF as "no EF" (the classifier-free null).
Every error is an EFError, a ValueError, so callers catch ValueError and show its one line.
EFCalibration: a trained cascade's measured response to the EF it is conditioned on, and its inverse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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


# ---- EF calibration: what a trained cascade makes of the EF it is conditioned on --------------------------------
@dataclass(frozen=True)
class EFCalibration:
    """A cascade's measured EF response and its inverse.

    asked[i]: an EF (%) the networks were conditioned on during the fit; read[i]: the mean EF read back from the
    videos generated at it (over many frames). `condition` inverts that curve piecewise-linearly, so a request for
    EF e conditions the networks on the EF whose videos read e on average. Fit with train/fit_ef_calibration.py and
    stored in the bundle's manifest ("ef_calibration") with the stage files it was fit for (stages_sha256): it holds
    for those weights only (echogen.diffusion.cascade.Cascade.load checks)."""
    asked: tuple
    read: tuple
    reader: str = ""            # the model that read the EFs back
    fit_on: str = ""            # the frames of the fit: data, split, count
    stages_sha256: dict = field(default_factory=dict)   # stage -> sha256 of the weights file the fit is for

    def __post_init__(self):
        a, r = np.asarray(self.asked, float), np.asarray(self.read, float)
        if a.ndim != 1 or a.shape != r.shape or len(a) < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(r))):
            raise EFError(f"EF calibration needs two equal-length lists of >= 2 finite EFs, got {self.asked!r} / "
                          f"{self.read!r}")
        if np.any(np.diff(a) <= 0) or np.any(np.diff(r) <= 0):
            raise EFError("EF calibration: the asked EFs and the EFs read back must both increase strictly "
                          f"(asked {list(a)}, read {list(np.round(r, 1))}): the cascade does not follow the EF there")

    def condition(self, ef_percent: torch.Tensor) -> torch.Tensor:
        """Requested EF (%) -> the EF (%) to condition the networks on. Only EFs inside the measured range are used:
        a request beyond what the fit read (below read[0] or above read[-1]) gets the end of the range, whose loops
        read read[0] / read[-1] on average (response says so); nothing is extrapolated."""
        a, r = np.asarray(self.asked, float), np.asarray(self.read, float)
        x = ef_percent.detach().cpu().double().numpy()
        return torch.from_numpy(np.clip(np.interp(x, r, a), EF_MIN, EF_MAX)).to(ef_percent.dtype)

    def response(self, conditioned: float) -> float:
        """The mean EF (%) read from loops conditioned on `conditioned` % (the fitted curve, flat beyond it)."""
        return float(np.interp(float(conditioned), np.asarray(self.asked, float), np.asarray(self.read, float)))

    def to_dict(self) -> dict:
        return {"asked": [float(v) for v in self.asked], "read": [round(float(v), 3) for v in self.read],
                "reader": self.reader, "fit_on": self.fit_on, "stages_sha256": dict(self.stages_sha256)}

    @classmethod
    def from_dict(cls, d: dict) -> "EFCalibration":
        try:
            return cls(tuple(d["asked"]), tuple(d["read"]), str(d.get("reader", "")), str(d.get("fit_on", "")),
                       dict(d.get("stages_sha256") or {}))
        except (KeyError, TypeError) as e:
            raise EFError(f"EF calibration: malformed entry ({e})") from None


def fit_calibration(asked, read, **provenance) -> EFCalibration:
    """Per-video readings (asked EF, EF read back) on a grid of asked EFs -> EFCalibration of the mean reading at
    each grid EF. NaN readings (a reader that failed) are left out; every grid EF needs at least 3 readings.
    Where the response saturates at an end of the grid (conditioning beyond the lowest / highest mean reading
    makes it no lower / higher, as above ~80 % for the demo cascades, trained on EFs up to 85 %), the grid is cut
    at that mean reading: those EFs are never asked for."""
    asked, read = np.asarray(asked, float), np.asarray(read, float)
    grid, means = [], []
    for g in np.unique(asked):
        vals = read[(asked == g) & np.isfinite(read)]
        if len(vals) < 3:
            raise EFError(f"EF calibration: only {len(vals)} readings at asked EF {g:g} % (need >= 3)")
        grid.append(float(g))
        means.append(float(vals.mean()))
    lo, hi = int(np.argmin(means)), int(np.argmax(means))
    return EFCalibration(tuple(grid[lo:hi + 1]), tuple(means[lo:hi + 1]), **provenance)
