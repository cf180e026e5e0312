"""Perceptual metrics from user-supplied weights (nothing is downloaded): LPIPS, Inception-FID, I3D-FVD.

Pure-torch networks (lpips.py, inception.py, i3d.py), the converter of the user's .pth files into
.safetensors (convert.py) and a loader. docs/METRICS.md says where each weights file comes from.
"""
from __future__ import annotations

from pathlib import Path

import torch

from echogen.eval.perceptual.i3d import I3D, I3DConfig
from echogen.eval.perceptual.inception import InceptionConfig, InceptionFID
from echogen.eval.perceptual.lpips import LPIPS, LPIPSConfig
from echogen.weights.bundle import WeightsError, load_state_strict, load_tensors

# evaluate flag -> (safetensors kind, network, config, the convert flag that makes the file)
NETWORKS = {
    "lpips": ("lpips", LPIPS, LPIPSConfig, "--lpips-backbone FILE --lpips-lin FILE"),
    "fid": ("inception_fid", InceptionFID, InceptionConfig, "--fid-inception FILE"),
    "fvd": ("i3d", I3D, I3DConfig, "--i3d FILE"),
}


def load_perceptual(path, metric: str, device=None) -> torch.nn.Module:
    """Load the network of `metric` ("lpips", "fid" or "fvd") from a converted .safetensors, in eval mode."""
    kind, net, config, flags = NETWORKS[metric]
    path = Path(path)
    try:
        tensors, cfg, _ = load_tensors(path, kind)
    except WeightsError as e:
        raise WeightsError(f"--{metric}: {e} (make it with: python -m echogen convert {flags} --out DIR)") from None
    try:
        model = net(config(**cfg))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: invalid {kind} config ({e})") from None
    load_state_strict(model, tensors, str(path))
    model.source = str(path)
    return model.to(device or "cpu").eval()
