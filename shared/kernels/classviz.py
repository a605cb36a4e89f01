"""Class visualisation (CS231n; Simonyan et al. 2014): ascent on a raw class score from seeded noise,
with L2, jitter and blur."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ascent.shared.errors import InvalidInput
from ascent.shared.kernels.loop import (
    ascend,
    check_precision,
    class_tensor,
    model_device,
    normalized_gradient_step,
    num_classes,
)
from ascent.shared.models import Classifier, autocast


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of N×C×H×W, radius ⌈4σ⌉ (scipy's default truncation), reflect padding."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(4 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    pad_h, pad_w = min(radius, x.shape[2] - 1), min(radius, x.shape[3] - 1)
    if pad_h < radius or pad_w < radius:  # tiny images: fall back to replicate-sized kernels
        radius = min(pad_h, pad_w)
        if radius == 0:
            return x
        return _gaussian_blur(x, radius / 4)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def class_visualization(
    model: Classifier,
    classes: Any,
    iters: int = 100,
    lr: float = 25.0,
    l2_reg: float = 1e-3,
    jitter: int = 16,
    blur_every: int = 10,
    blur_sigma: float = 0.5,
    seed: int = 0,
    size: int = 224,
    precision: str = "fp32",
) -> Tensor:
    """One image per class (N×3×size×size in [0, 1]) that maximises the raw class score minus
    ``l2_reg``·‖image‖² (normalised space), from seeded noise, with a random roll of up to ``jitter``
    pixels per step and a Gaussian blur every ``blur_every`` steps (CS231n; Simonyan et al. 2014).
    All classes run in one batch; every image starts from the same seeded noise. ``precision``:
    "fp32" or "bf16" (autocast of the network, as in ``fool``)."""
    check_precision(precision)
    device = model_device(model)
    if isinstance(classes, int) and not isinstance(classes, bool):
        classes = [classes]
    n = len(classes) if isinstance(classes, Sequence) else int(torch.as_tensor(classes).numel())
    if n == 0:
        raise InvalidInput("classes is empty")
    class_ids = class_tensor(classes, n, num_classes(model), "classes", device)
    if not isinstance(iters, int) or iters < 1:
        raise InvalidInput(f"iters must be a positive integer, got {iters!r}")
    if not isinstance(size, int) or size < 8:
        raise InvalidInput(f"size must be an integer ≥ 8, got {size!r}")
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(1, 3, size, size, generator=generator).to(device).expand(n, -1, -1, -1)
    shifts = torch.randint(0, jitter + 1, (iters, 2), generator=generator).tolist()
    low, high = (
        model.normalize(torch.zeros(1, 3, 1, 1, device=device)),
        model.normalize(torch.ones(1, 3, 1, 1, device=device)),
    )

    def objective(t: int, xa: Tensor, rows: Tensor) -> tuple[Tensor, None]:
        ox, oy = shifts[t]
        with autocast(device, precision):
            scores = model.forward_normalized(torch.roll(xa, shifts=(oy, ox), dims=(2, 3)))
        scores = scores.float()
        score = scores.gather(1, class_ids[rows, None]).squeeze(1)
        return score - l2_reg * xa.pow(2).flatten(1).sum(1), None

    def project(t: int, xa: Tensor) -> Tensor:
        xa = torch.maximum(torch.minimum(xa, high), low)
        if blur_every and t % blur_every == 0:
            xa = _gaussian_blur(xa, blur_sigma)
        return xa

    x, _ = ascend(start, objective, normalized_gradient_step(lr), iters, project=project)
    return model.denormalize(x).clamp(0, 1)
