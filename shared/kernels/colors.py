"""Colour spaces for style transfer's ``original_colors`` (neural-style's ``-original_colors``): the
output keeps its luminance and takes the content's chroma, in YIQ (NTSC 1953)."""

from __future__ import annotations

import torch
from torch import Tensor

_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _mix(images: Tensor, matrix: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(images.device, images.dtype), images)


def rgb_to_yiq(images: Tensor) -> Tensor:
    """N×3×H×W RGB in [0, 1] -> Y in [0, 1], I in ±0.596, Q in ±0.523."""
    return _mix(images, _RGB_TO_YIQ)


def yiq_to_rgb(images: Tensor) -> Tensor:
    """The inverse of ``rgb_to_yiq`` (not clamped)."""
    return _mix(images, _YIQ_TO_RGB)


def keep_colors(output: Tensor, content: Tensor) -> Tensor:
    """``output``'s luminance with ``content``'s I and Q (both N×3×H×W in [0, 1], same shape), in [0, 1]."""
    y = rgb_to_yiq(output)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], 1)).clamp(0, 1)
