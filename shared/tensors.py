"""Conversions between the worker's uint8 images and the kernels' float tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def to_tensor(images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> Tensor:
    """Same-shape H×W×3 uint8 arrays -> N×3×H×W float32 in [0, 1] on ``device``."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
    return batch.to(device)


def to_uint8(images: Tensor) -> np.ndarray:
    """N×3×H×W in [0, 1] -> N×H×W×3 uint8, ``round(x·255)`` (exact for 8-bit-exact images)."""
    arr = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def map_to_uint8(maps: Tensor, percentile: float = 99.0) -> np.ndarray:
    """N×H×W maps (≥ 0) -> N×H×W uint8, each map scaled so its ``percentile``-th percentile is 255 (the few
    pixels above saturate; all-zero stays 0). Saliency is peaky: scaled by its maximum, a map is a few
    bright pixels on black; by a high percentile its structure shows (the maximum when that is 0)."""
    maps = maps.detach().float()
    flat = maps.flatten(1)
    peak = torch.quantile(flat, percentile / 100, dim=1) if percentile < 100 else flat.amax(1)
    peak = torch.where(peak > 0, peak, flat.amax(1))
    peak = peak.clamp_min(torch.finfo(torch.float32).tiny).view(-1, 1, 1)
    return (maps / peak).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
