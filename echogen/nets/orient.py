"""Which way round is an apical-4-chamber view shown? A small CNN that tells the standard display (the LV on the
right of the screen, as EchoNet-Dynamic and every EchoGen model's training data show it) from a mirrored one (the
LV on the left, as some labs display it).

Why: the LV tracer keys on the LV's side. On mirrored simulator-v2 TEST clips its EF falls from R^2 0.974 to 0.195
(docs/RESULTS.md, session 17); the regressor barely notices (0.929 -> 0.902). So inputs are read (and generated
from) in the standard orientation: `standard_view` mirrors a clip or frame back when the network says it is
mirrored, and the readouts say so.

Weights: a .safetensors file of kind "orientation" with its OrientConfig in the metadata, or a bundle whose
manifest names it ("orientation": "orientation.safetensors"). Trained by train/train_orient.py on the frames of
any EchoNet-format dataset: each frame is shown as it is (label 0) or mirrored (label 1).

    model, cfg = load_orient("assets/weights/demo")
    p = p_mirrored(model, frames_uint8_T_112_112)               # P(the LV is on the left)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from echogen.config import copy_preset, dataclass_from_dict
from echogen.weights.bundle import ModelFile, WeightsError

KIND = "orientation"
# p_mirrored above this: the input is read mirrored back (standard_view). Not 0.5: most uploads are in the standard
# view and mirroring one wrongly is worse than leaving a mirrored one as given; on the real SonoSite clip the
# shipped network's single frames read up to 0.69 when standard, its clips 0.01 / 0.97 (docs/RESULTS.md, session 17)
MIRRORED_ABOVE = 0.8
MAX_FRAMES = 16           # frames of a clip the decision averages over (spread evenly)


@dataclass
class OrientConfig:
    size: int = 112
    widths: tuple = (8, 16, 32, 64)   # channels per stride-2 stage: 112 -> 56 -> 28 -> 14 -> 7
    groups: int = 4                   # GroupNorm groups

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "OrientConfig":
        return dataclass_from_dict(OrientConfig, d, "orientation", WeightsError)


ORIENT_PRESETS = {
    "small": OrientConfig(),                                    # ~77 k params
    "coarse": OrientConfig(size=56),                            # the same on 56x56 frames: coarse anatomy only
    "tiny": OrientConfig(size=32, widths=(4, 8), groups=2),     # tests only
}


def get_orient_preset(name: str) -> OrientConfig:
    return copy_preset(ORIENT_PRESETS, name, "orientation")


class OrientNet(nn.Module):
    """(B, 1, S, S) frames in [0, 1] -> (B,) logits of "mirrored". Each frame is standardised on its own (gain and
    contrast do not matter); the last feature map is flattened, not pooled, so where things are is kept."""

    def __init__(self, cfg: OrientConfig):
        super().__init__()
        self.cfg = cfg
        layers, c = [], 1
        for w in cfg.widths:
            g = math.gcd(cfg.groups, w)
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.GroupNorm(g, w), nn.SiLU(),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.GroupNorm(g, w), nn.SiLU()]
            c = w
        self.features = nn.Sequential(*layers)
        side = cfg.size
        for _ in cfg.widths:
            side = (side + 1) // 2
        self.head = nn.Linear(c * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] != self.cfg.size:
            raise ValueError(f"OrientNet expects (B, 1, {self.cfg.size}, {self.cfg.size}) frames, got {tuple(x.shape)}")
        mu = x.mean((2, 3), keepdim=True)
        sd = x.std((2, 3), keepdim=True).clamp_min(1e-3)
        return self.head(self.features((x - mu) / sd).flatten(1))[:, 0]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ weights
def _build(cfg_dict: dict) -> tuple[OrientNet, OrientConfig]:
    cfg = OrientConfig.from_dict(cfg_dict)
    return OrientNet(cfg), cfg


FILE = ModelFile(KIND, "orientation model", "train/train_orient.py", _build)


def save_orient(path, model: OrientNet, cfg: OrientConfig, **extra) -> Path:
    return FILE.save(path, model, cfg, **extra)


def resolve_orient_path(path_or_bundle) -> Path:
    return FILE.resolve(path_or_bundle)


def has_orient(path_or_bundle) -> bool:
    return FILE.has(path_or_bundle)


def bundle_orient(bundle, device=None) -> OrientNet | None:
    """The orientation network of a weights bundle folder, or None (no bundle, a single weights file, or a bundle
    without one): what `ef`, `generate`, the input check and case pools put in front of their readers."""
    if not bundle or not Path(bundle).is_dir() or not has_orient(bundle):
        return None
    return load_orient(bundle, device)[0]


def load_orient(path_or_bundle, device=None) -> tuple[OrientNet, OrientConfig]:
    return FILE.load(path_or_bundle, device)


# ------------------------------------------------------------------------------------------ inference
def _frames(video, size: int) -> torch.Tensor:
    """(T, H, W) or (H, W), uint8 or float [0, 1], numpy or torch -> (n, 1, size, size) float, n <= MAX_FRAMES
    frames spread evenly over the clip."""
    from echogen.data.resample import resize_frames
    v = torch.as_tensor(np.ascontiguousarray(np.asarray(video))) if not torch.is_tensor(video) else video.detach().cpu()
    v = v.float() / 255.0 if v.dtype == torch.uint8 else v.float()
    v = v.reshape(-1, *v.shape[-2:])
    if v.shape[-2] != v.shape[-1]:
        raise ValueError(f"orientation needs square frames, got {tuple(v.shape[-2:])}")
    if len(v) > MAX_FRAMES:
        v = v[torch.as_tensor(np.linspace(0, len(v) - 1, MAX_FRAMES).round().astype(int))]
    if v.shape[-1] != size:
        v = resize_frames(v, size).clamp(0, 1)
    return v[:, None]


@torch.no_grad()
def p_mirrored(model: OrientNet, video) -> float:
    """P(the view is mirrored: the LV on the left) for a frame (H, W) or clip (T, H, W): the mean of the per-frame
    logits of up to MAX_FRAMES frames, squashed."""
    dev = next(model.parameters()).device
    logits = model(_frames(video, model.cfg.size).to(dev))
    return float(torch.sigmoid(logits.mean()))


VIEW_MODES = ("auto", "as-is", "mirror")


def _flip(frames):
    return frames.flip(-1) if torch.is_tensor(frames) else np.ascontiguousarray(np.asarray(frames)[..., ::-1])


def _turn(frames):
    """Upside down (rows reversed)."""
    return frames.flip(-2) if torch.is_tensor(frames) else np.ascontiguousarray(np.asarray(frames)[..., ::-1, :])


def apply_view(frames, view: dict):
    """frames (T, S, S) or (S, S) of the input a view was decided on (standard_view), put in that view: turned
    apex-up if the input was apex-down, mirrored back if it was mirrored."""
    if view.get("turned"):
        frames = _turn(frames)
    return _flip(frames) if view["mirrored"] else frames


def standard_view(frames, model: OrientNet | None, mode: str = "auto", decide_on=None):
    """The prepared model input (T, S, S) or (S, S) in the standard view: apex at the top, the LV on the right.
    An apex-down display (a fan with its apex at the bottom, echogen.data.inputs.apex_at_bottom: geometry, no
    network) is turned upside down first, in modes "auto" and "mirror". Then mode "auto": mirrored back when the
    network says P(mirrored) > MIRRORED_ABOVE (as given without a network); "as-is": as given, neither turned nor
    mirrored; "mirror": mirrored whatever the network says. decide_on: the frames to decide on (default `frames`;
    e.g. the whole clip when `frames` is one frame of it). Returns (frames, view) with view
    {"turned": bool, "mirrored": bool, "p_mirrored": float or None, "mode": mode}."""
    from echogen.data.inputs import apex_at_bottom

    if mode not in VIEW_MODES:
        raise ValueError(f"orientation must be one of {VIEW_MODES}, got {mode!r}")
    decide_on = frames if decide_on is None else decide_on
    turned = mode != "as-is" and apex_at_bottom(decide_on.cpu() if torch.is_tensor(decide_on) else decide_on)
    if turned:
        decide_on = _turn(decide_on)
    p = p_mirrored(model, decide_on) if model is not None and mode == "auto" else None
    mirrored = mode == "mirror" or (p is not None and p > MIRRORED_ABOVE)
    view = {"turned": bool(turned), "mirrored": bool(mirrored), "p_mirrored": p, "mode": mode}
    return apply_view(frames, view), view


def frame_in_view(frame, frames, model: OrientNet | None, mode: str = "auto"):
    """A prepared frame (S, S) of an input, in the view decided on the input's frames (read_input's, as `ef` and
    the app read them: a clip's up to 16 frames decide, far surer than the one frame). (frame, view)."""
    from echogen.data.clips import ef_frames
    return standard_view(frame, model, mode, decide_on=ef_frames(frames, 112))


def moved(view: dict) -> bool:
    """Was the input turned or mirrored to reach the standard view (so what is shown differs from the upload)?"""
    return bool(view.get("turned") or view.get("mirrored"))


def view_note(view: dict, then: str = "") -> str:
    """One line for the readouts; "" when the input was read as given in the standard view. then: what the caller
    shows in the standard view (e.g. "the loops are shown in the standard view"), added when the view moved the
    input."""
    p = view.get("p_mirrored")
    parts = []
    if view.get("turned"):
        parts.append("apex-down display (the fan's apex at the bottom of the screen): read turned upside down, apex "
                     "at the top, as the models were trained")
    if view["mirrored"]:
        why = f"P {p:.2f} by the orientation network" if p is not None else "as asked"
        parts.append(f"mirrored view: the LV is on the left of the screen ({why}); read mirrored back to the "
                     "standard view (LV on the right), as the models were trained")
    elif view["mode"] != "as-is" and p is not None and p > 0.2:
        # not "standard view (the LV on the right)": an unsure network says nothing about an LV (a photo: 0.5-0.6)
        parts.append(f"left-right orientation unsure (P(mirrored) {p:.2f} by the orientation network, not above "
                     f"{MIRRORED_ABOVE:g}): not mirrored")
    if then and moved(view):
        parts.append(then)
    return "; ".join(parts)
