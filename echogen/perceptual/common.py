"""Shared input handling of the perceptual networks: greyscale frames in [0, 1] -> 3-channel batches."""
from __future__ import annotations

import torch


def frames_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W), (N, 1, H, W) or (N, 3, H, W) in [0, 1] -> (N, 3, H, W) float32 (grey copied to R, G, B)."""
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected frames (N, H, W), (N, 1, H, W) or (N, 3, H, W); got {tuple(x.shape)}")
    x = x.float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def clips_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, T, H, W), (N, 1, T, H, W) or (N, 3, T, H, W) in [0, 1] -> (N, 3, T, H, W) float32."""
    x = torch.as_tensor(x)
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected clips (N, T, H, W), (N, 1, T, H, W) or (N, 3, T, H, W); got {tuple(x.shape)}")
    x = x.float()
    return x.expand(-1, 3, -1, -1, -1) if x.shape[1] == 1 else x


def model_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
