"""The one ascent loop the jobs share, its update rules, and the argument checks of the kernels.

Images are N×3×H×W float tensors in [0, 1] on the model's device. The jobs differ only in the
objective, the start image, the stop rule, the update rule and the projection (clamp, blur) after
each step; ``ascend`` runs any such combination with per-sample bookkeeping and early stopping.

The loop calls an iteration hook before each iteration (``ascend(on_iteration=...)``, or the one
installed around a job's run with ``iteration_hook``; ``current_hook`` for the kernels' other loops, as
L-BFGS): the worker reports progress and stops a cancelled run there, so the kernels stay free of I/O.
A kernel or job that makes several calls per batch (restarts, scales, shape groups) runs each inside
``progress_part``, so the hook's estimate (``progress_span``) covers the whole batch, not one call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from ascent.shared.catalog import PRECISIONS
from ascent.shared.errors import InvalidInput
from ascent.shared.models import Classifier

# (t, x_active, rows) -> (per-sample objective to *maximise*, shape A; anything the stop rule needs)
Objective = Callable[[int, Tensor, Tensor], tuple[Tensor, Any]]
# (t, x_active, grad_active, rows) -> new x_active
Step = Callable[[int, Tensor, Tensor, Tensor], Tensor]
# (t, aux, rows) -> bool mask over the active rows: True = this sample is done and leaves the batch
StopRule = Callable[[int, Any, Tensor], Tensor]
# (t, x_active) -> x_active after projection (clamp, blur); runs after each step
Projection = Callable[[int, Tensor], Tensor]
# (x_active, rows) -> the point where the objective and its gradient are evaluated for the iterate
EvaluateAt = Callable[[Tensor, Tensor], Tensor]
# (t, iters, active samples, samples in the call) -> None, before each iteration; what it raises ends the loop
IterationHook = Callable[[int, int, int, int], None]

_HOOK: ContextVar[IterationHook | None] = ContextVar("ascent_iteration_hook", default=None)
_SPAN: ContextVar[tuple[float, float]] = ContextVar("ascent_progress_span", default=(0.0, 1.0))


@contextmanager
def iteration_hook(hook: IterationHook | None) -> Iterator[None]:
    """Every ``ascend`` in this context (and thread) calls ``hook`` before each iteration."""
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def current_hook() -> IterationHook | None:
    """The hook installed by ``iteration_hook`` (None outside one): loops other than ``ascend`` call it."""
    return _HOOK.get()


def progress_span() -> tuple[float, float]:
    """(start, width): the fraction of the batch's work done before the current call, and the fraction
    the call is (``(0.0, 1.0)`` outside any ``progress_part``)."""
    return _SPAN.get()


@contextmanager
def progress_part(done: float, part: float, whole: float) -> Iterator[None]:
    """The calls inside are the share ``[done, done + part]`` of ``whole`` of the enclosing span (parts
    nest: scale k of K inside shape group g is a sub-share of the group's)."""
    start, width = _SPAN.get()
    token = _SPAN.set((start + width * done / whole, width * part / whole))
    try:
        yield
    finally:
        _SPAN.reset(token)


def input_gradient(objective: Tensor, x: Tensor) -> Tensor:
    """∂(Σ objective)/∂x; per-sample objectives are independent, so row i is sample i's gradient."""
    (grad,) = torch.autograd.grad(objective.sum(), x)
    return grad


def ascend(
    x0: Tensor,
    objective: Objective,
    step: Step,
    iters: int,
    stop: StopRule | None = None,
    project: Projection | None = None,
    max_batch: int | None = None,
    evaluate_at: EvaluateAt | None = None,
    on_iteration: IterationHook | None = None,
) -> tuple[Tensor, int]:
    """The one ascent loop shared by the jobs. Returns (x after the loop, forward+backward passes).

    Each iteration t evaluates the objective on the samples still active, in chunks of at most
    ``max_batch`` (the CPU is fastest at small batches); with a stop rule, samples it marks done leave
    the batch before the step (so the batch shrinks), and the rule is checked once more after the last
    step. Without one, exactly ``iters`` steps run on every sample. A chunk that runs out of GPU
    memory is split in two and run again (stop rules must tolerate being asked twice for the same t),
    and later iterations keep the smaller size: on a GPU the whole batch is tried first.

    ``evaluate_at`` (default: the iterate itself) gives the point where the objective and its gradient
    are taken for each iterate, the step still applying to the iterate: fool's ε-attacks evaluate at
    the iterate's 8-bit image (a straight-through step), so each forward is also the success check of
    exactly what would be saved.

    ``on_iteration(t, iters, active, n)`` (default: the hook of ``iteration_hook``) runs before each
    iteration; an exception it raises (the run was cancelled) propagates out of the loop.
    """
    hook = on_iteration if on_iteration is not None else _HOOK.get()
    x = x0.detach().clone()
    rows = torch.arange(x.shape[0], device=x.device)
    passes = 0

    def run_chunk(t: int, part: Tensor) -> Tensor | None:
        """Objective, stop rule and step for the rows ``part``; returns the rows still active."""
        iterate = x[part]
        xa = (iterate if evaluate_at is None else evaluate_at(iterate, part)).requires_grad_(True)
        current = xa.detach() if evaluate_at is None else iterate
        value, aux = objective(t, xa, part)
        keep = None
        if stop is not None:
            keep = ~stop(t, aux, part)
            if t == iters or not bool(keep.any()):
                return None
            value = value[keep]
        grad = input_gradient(value, xa)
        if keep is not None and not bool(keep.all()):
            grad, current, part = grad[keep], current[keep], part[keep]
        with torch.no_grad():
            new = step(t, current, grad, part)
            x[part] = project(t, new) if project is not None else new
        return part

    for t in range(iters + 1):
        if t == iters and stop is None:
            break
        if hook is not None:
            hook(t, iters, int(rows.numel()), int(x.shape[0]))
        kept = []
        parts = list(_balanced_chunks(rows, max_batch))
        while parts:
            part = parts.pop(0)
            try:
                active = run_chunk(t, part)
            except torch.cuda.OutOfMemoryError:
                if part.numel() == 1:
                    raise
                halves = part.tensor_split(2)
                parts[:0] = halves
                max_batch = int(halves[0].numel())
                continue
            passes += int(part.numel())
            if active is not None:
                kept.append(active)
        if not kept:
            break
        rows = torch.cat(kept)
    return x, passes


def _balanced_chunks(rows: Tensor, max_batch: int | None) -> tuple[Tensor, ...]:
    """``rows`` in the fewest chunks of at most ``max_batch``, sizes as equal as possible: 25 rows at
    8 go 7/6/6/6, not 8/8/8/1 (a lone straggler costs a whole pass on the CPU)."""
    n = int(rows.numel())
    if not max_batch or n <= max_batch:
        return (rows,)
    return rows.tensor_split(math.ceil(n / max_batch))


def normalized_gradient_step(lr: float, metric: Tensor | None = None) -> Step:
    """x ← x + lr · M g / ‖√M g‖₂ per sample. With M = std² this is the reference's step
    n ← n + lr · g_n / ‖g_n‖ taken in normalised space, expressed for x in [0, 1]."""

    def step(t: int, x: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
        scaled = grad if metric is None else grad * metric.sqrt()
        norm = scaled.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        direction = grad if metric is None else grad * metric
        return x + lr * direction / norm

    return step


class AdamStep:
    """Adam (Kingma & Ba) on the image, ascending, with state per sample so rows may leave.

    Matches ``torch.optim.Adam`` (β 0.9/0.999, ε 1e-8, no weight decay); ``lr_at(t)`` schedules lr.
    """

    def __init__(self, like: Tensor, lr_at: Callable[[int], float], betas=(0.9, 0.999), eps: float = 1e-8):
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.lr_at, self.betas, self.eps = lr_at, betas, eps

    def __call__(self, t: int, x: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
        b1, b2 = self.betas
        m = self.m[rows].mul_(b1).add_(grad, alpha=1 - b1)
        v = self.v[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.m[rows], self.v[rows] = m, v
        n = t + 1
        denom = (v.sqrt() / math.sqrt(1 - b2**n)).add_(self.eps)
        return x + (self.lr_at(t) / (1 - b1**n)) * m / denom


def check_images(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise InvalidInput(f"{name} must be a tensor N×3×H×W, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise InvalidInput(f"{name} must have shape N×3×H×W, got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InvalidInput(f"{name} is an empty batch")
    if not images.is_floating_point():
        raise InvalidInput(f"{name} must be floating point in [0, 1], got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise InvalidInput(f"{name} contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 1:
        raise InvalidInput(f"{name} must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def class_tensor(values: Any, n: int, num_classes: int, name: str, device: torch.device) -> Tensor:
    """A LongTensor of n class ids from an int (broadcast), a sequence or a tensor."""
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values] * n
    ids = torch.as_tensor(values, device=device)
    if ids.dim() != 1 or ids.numel() != n:
        raise InvalidInput(f"{name} must have one class id per image ({n}), got shape {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise InvalidInput(f"{name} must be integer class ids, got {ids.dtype}")
    ids = ids.long()
    bad = ((ids < 0) | (ids >= num_classes)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise InvalidInput(f"{name}[{i}] = {int(ids[i])} is out of range 0..{num_classes - 1}")
    return ids


def num_classes(model: Classifier) -> int:
    return model.num_classes


def check_precision(precision: Any) -> None:
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def model_device(model: Classifier) -> torch.device:
    return model.mean.device


def auto_max_batch(device: torch.device, requested: int | None = None) -> int | None:
    """How many images go through the model at once: ``requested`` if given; on the CPU 8 (measured
    fastest per image on a 2-core CPU, bench/RESULTS.md); on a GPU the whole batch (None)."""
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise InvalidInput(f"max_batch must be a positive integer, got {requested!r}")
        return requested
    return None if device.type == "cuda" else 8


def quantize(x: Tensor) -> Tensor:
    """Nearest 8-bit value: round(x·255)/255, exactly what a PNG stores (idempotent)."""
    return torch.round(x * 255) / 255
