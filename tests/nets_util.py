"""Small classifiers made for the tests (``--model tests.nets_util:five``): seeded by the loader, a few
thousand weights, any input size. Importable by the worker processes the tests start (the repository
root is their working directory)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch import nn


def five() -> nn.Module:
    """A 5-class CNN."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 5),
    )


def five_wide() -> nn.Module:
    """Another 5-class CNN (a victim for transfer tables)."""
    return nn.Sequential(
        nn.Conv2d(3, 12, 5, padding=2),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 5),
    )


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n smooth random photos-like images (N×size×size×3 uint8): 4×4 colours, bicubic upsampled (JPEG
    keeps them well, unlike noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((size, size), Image.BICUBIC)) for s in small])
