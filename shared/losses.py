"""Style-transfer losses (Gatys et al. 2016, as defined in CS231n's assignment 3).

Each loss sums over the batch by default (a scalar tensor); ``reduction="none"`` gives one value
per image (shape N), which the batched style kernel reports per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def _reduce(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return per_image.sum()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")


def content_loss(
    content_weight: float, content_current: Tensor, content_original: Tensor, reduction: str = "sum"
) -> Tensor:
    """w_c · Σ (F − P)² for features N×C×H×W (``content_original`` may have batch 1 to broadcast)."""
    diff = (content_current - content_original).pow(2)
    return _reduce(content_weight * diff.flatten(1).sum(1), reduction)


class _Gram(torch.autograd.Function):
    """F Fᵀ (N×C×L → N×C×C) with a one-bmm backward, (g + gᵀ) F, where autograd would run two bmm
    and add them: style transfer spends about a quarter of an iteration in these bmm (bench/)."""

    @staticmethod
    def forward(ctx: Any, flat: Tensor) -> Tensor:
        ctx.save_for_backward(flat)
        return flat @ flat.transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (flat,) = ctx.saved_tensors
        return (grad + grad.transpose(1, 2)) @ flat


def gram_matrix(features: Tensor, normalize: bool = True) -> Tensor:
    """G = F Fᵀ for features N×C×H×W viewed as N×C×(H·W); divided by H·W·C when ``normalize``. N×C×C."""
    n, c, h, w = features.shape
    gram = _Gram.apply(features.reshape(n, c, h * w))
    return gram / (h * w * c) if normalize else gram


def style_loss(
    feats: Sequence[Tensor],
    style_layers: Sequence[int],
    style_targets: Sequence[Tensor],
    style_weights: Sequence[float],
    reduction: str = "sum",
) -> Tensor:
    """Σ_l w_l · Σ (G_l − A_l)² over ``style_layers``; ``feats`` is the full list of layer outputs,
    ``style_targets[i]`` the target Gram matrix (1×C×C or N×C×C) of ``style_layers[i]``."""
    if not len(style_layers) == len(style_targets) == len(style_weights):
        raise ValueError("style_layers, style_targets and style_weights must have the same length")
    total: Tensor | None = None
    for layer, target, weight in zip(style_layers, style_targets, style_weights, strict=True):
        term = weight * (gram_matrix(feats[layer]) - target).pow(2).flatten(1).sum(1)
        total = term if total is None else total + term
    if total is None:
        total = feats[0].new_zeros(feats[0].shape[0])
    return _reduce(total, reduction)


def tv_loss(img: Tensor, tv_weight: float, reduction: str = "sum") -> Tensor:
    """w_tv · (Σ vertical neighbour differences² + Σ horizontal ones²) for images N×C×H×W."""
    vertical = (img[:, :, 1:, :] - img[:, :, :-1, :]).pow(2).flatten(1).sum(1)
    horizontal = (img[:, :, :, 1:] - img[:, :, :, :-1]).pow(2).flatten(1).sum(1)
    return _reduce(tv_weight * (vertical + horizontal), reduction)
