"""Argument checks of the ``fool`` kernel: integers, per-row seeds and labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ascent.shared.errors import InvalidInput
from ascent.shared.kernels.attacks import LOSSES, NORMS
from ascent.shared.kernels.loop import check_precision, class_tensor

SEED_STRIDE = 1_000_003  # row i of an int seed s draws from seed s·SEED_STRIDE + i (restart r: + r·7919)


def check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "non-negative" if low == 0 else "positive"
        raise InvalidInput(f"{name} must be a {what} integer, got {value!r}")


def row_seeds(seed: Any, n: int) -> list[int]:
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [seed * SEED_STRIDE + i for i in range(n)]
    seeds = list(seed) if isinstance(seed, Sequence) else None
    if seeds is None or len(seeds) != n or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise InvalidInput(f"seed must be an integer or one integer per image ({n}), got {seed!r}")
    return seeds


def labels_tensor(labels: Any, n: int, classes: int, device: torch.device) -> Tensor:
    """One class id per image, −1 where unknown (None or −1)."""
    if labels is None:
        return torch.full((n,), -1, dtype=torch.long, device=device)
    if isinstance(labels, Tensor):
        values = labels.tolist()
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        values = list(labels)
    else:
        raise InvalidInput(f"labels must be None or one class id (or None) per image, got {type(labels).__name__}")
    if len(values) != n:
        raise InvalidInput(f"labels must have one class id (or None) per image ({n}), got {len(values)}")
    known = [i for i, v in enumerate(values) if v is not None and v != -1]
    out = torch.full((n,), -1, dtype=torch.long, device=device)
    if known:
        out[known] = class_tensor([values[i] for i in known], len(known), classes, "labels", device)
    return out


def check_arguments(
    lr: Any,
    max_iters: Any,
    extra_iters: Any,
    restarts: Any,
    loss: Any,
    norm: Any,
    momentum: Any,
    precision: Any,
    eps: Any,
    step_size: Any,
    random_start: Any,
) -> None:
    """InvalidInput naming the first of ``fool``'s scalar arguments that is out of range."""
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise InvalidInput(f"lr must be a positive number, got {lr!r}")
    check_int("max_iters", max_iters, 0)
    check_int("extra_iters", extra_iters, 0)
    check_int("restarts", restarts, 1)
    if loss not in LOSSES:
        raise InvalidInput(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if norm not in NORMS:
        raise InvalidInput(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if not (isinstance(momentum, (int, float)) and momentum >= 0 and math.isfinite(momentum)):
        raise InvalidInput(f"momentum must be a non-negative number, got {momentum!r}")
    check_precision(precision)
    bounded = norm != "l2-unbounded"
    if bounded and eps is None:
        raise InvalidInput(f"eps is required with norm {norm!r}")
    if not bounded and (eps is not None or step_size is not None or random_start):
        raise InvalidInput("eps, step_size and random_start need norm 'linf' or 'l2' (l2-unbounded steps by lr)")
    if restarts > 1 and not random_start:
        raise InvalidInput("restarts > 1 needs random_start (otherwise every restart repeats the first)")
    if step_size is not None and not (
        isinstance(step_size, (int, float)) and not isinstance(step_size, bool) and 0 < step_size < math.inf
    ):
        raise InvalidInput(f"step_size must be a positive number, got {step_size!r}")
