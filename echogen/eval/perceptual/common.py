"""Shared input handling of the perceptual networks: greyscale frames in [0, 1] -> 3-channel batches."""
from __future__ import annotations

import torch


def _grey_to_rgb(x, dims: int, what: str) -> torch.Tensor:
    """(N, *S), (N, 1, *S) or (N, 3, *S) with len(S) == dims -> (N, 3, *S) float32 (grey copied to R, G, B)."""
    x = torch.as_tensor(x)
    if x.ndim == dims + 1:
        x = x[:, None]
    if x.ndim != dims + 2 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected {what}; got {tuple(x.shape)}")
    x = x.float()
    return x.expand(-1, 3, *([-1] * dims)) if x.shape[1] == 1 else x


def frames_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W), (N, 1, H, W) or (N, 3, H, W) in [0, 1] -> (N, 3, H, W) float32."""
    return _grey_to_rgb(x, 2, "frames (N, H, W), (N, 1, H, W) or (N, 3, H, W)")


def clips_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, T, H, W), (N, 1, T, H, W) or (N, 3, T, H, W) in [0, 1] -> (N, 3, T, H, W) float32."""
    return _grey_to_rgb(x, 3, "clips (N, T, H, W), (N, 1, T, H, W) or (N, 3, T, H, W)")


def model_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
