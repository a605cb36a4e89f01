"""Adversarial images: normalised-gradient ascent on the target score with per-sample early stopping,
8-bit exact (CS231n's network-visualisation notebook; Szegedy et al. 2014)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ascent.shared.errors import InvalidInput
from ascent.shared.kernels.loop import (
    ascend,
    auto_max_batch,
    check_images,
    check_precision,
    class_tensor,
    model_device,
    normalized_gradient_step,
    num_classes,
    quantize,
)
from ascent.shared.models import Classifier, autocast


@dataclass(frozen=True)
class FoolResult:
    """Per image: ``images`` N×3×H×W on the 8-bit lattice; ``fooled`` (bool), ``iterations`` (steps
    before the model first predicted the target on the 8-bit image; 0 = already did; −1 = never),
    ``pred_before``/``pred_after`` (class ids, on the rounded input/output), ``targets``, ``l2``/``linf``
    (perturbation in [0, 1] pixel units); ``passes`` = image forward+backward passes run."""

    images: Tensor
    fooled: Tensor
    iterations: Tensor
    pred_before: Tensor
    pred_after: Tensor
    targets: Tensor
    l2: Tensor
    linf: Tensor
    passes: int


def fool(
    model: Classifier,
    images: Tensor,
    targets: Any,
    lr: float = 1.0,
    max_iters: int = 100,
    extra_iters: int = 2,
    max_batch: int | None = None,
    loss: str = "score",
    precision: str = "fp32",
    labels: Any = None,
) -> FoolResult:
    """Adversarial images: normalised-gradient ascent on the target class score until the model
    predicts it, then ``extra_iters`` more steps (CS231n: lr 1 in normalised space).

    ``targets``: one class id for all, one per image, or None (untargeted: move away from the true
    class, ``labels``, where it is known (an id per image, None or -1 where it is not), else from the
    clean prediction). ``iterations`` counts steps as the reference loop does; an image is done
    only when its 8-bit rounding (exactly what a PNG stores) is classified as the target after the
    extra steps: if rounding undoes the attack, stepping goes on. Images that are done leave the
    batch; ``max_batch`` caps how many run through the model at once (None: ``auto_max_batch``).

    ``loss="score"`` ascends the raw target logit (the reference); ``"log_softmax"`` ascends the
    target's log-probability, which also pushes the other classes down and fools in fewer steps.
    ``precision="bf16"`` runs the stepping forwards and backwards under bf16 autocast; the
    predictions that decide success (before, the 8-bit check, after) stay in float32.
    """
    check_images(images)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise InvalidInput(f"lr must be a positive number, got {lr!r}")
    if not isinstance(max_iters, int) or max_iters < 0:
        raise InvalidInput(f"max_iters must be a non-negative integer, got {max_iters!r}")
    if not isinstance(extra_iters, int) or extra_iters < 0:
        raise InvalidInput(f"extra_iters must be a non-negative integer, got {extra_iters!r}")
    if loss not in ("score", "log_softmax"):
        raise InvalidInput(f"loss must be 'score' or 'log_softmax', got {loss!r}")
    check_precision(precision)
    device = model_device(model)
    max_batch = auto_max_batch(device, max_batch)
    x0 = quantize(images.to(device=device, dtype=torch.float32))
    n = x0.shape[0]
    with torch.no_grad():
        pred_before = model(x0).argmax(1)
    untargeted = targets is None
    goal = pred_before.clone() if untargeted else class_tensor(targets, n, num_classes(model), "targets", device)
    if untargeted and labels is not None:
        known = [-1 if label is None else int(label) for label in labels]
        if len(known) != n:
            raise InvalidInput(f"labels must have one entry per image ({n}), got {len(known)}")
        away = torch.tensor(known, device=device)
        if bool((away >= num_classes(model)).any()):
            raise InvalidInput(f"labels must be class ids 0..{num_classes(model) - 1}, got {max(known)}")
        goal = torch.where(away >= 0, away, goal)

    first_hit = torch.full((n,), -1, dtype=torch.long, device=device)
    pred_after = torch.full((n,), -1, dtype=torch.long, device=device)

    def succeeded(pred: Tensor, rows: Tensor) -> Tensor:
        return pred != goal[rows] if untargeted else pred == goal[rows]

    def objective(t: int, xa: Tensor, rows: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        with autocast(device, precision):
            logits = model(xa)
        logits = logits.float()
        scores = logits.log_softmax(1) if loss == "log_softmax" else logits
        score = scores.gather(1, goal[rows, None]).squeeze(1)
        return (-score if untargeted else score), (logits.detach().argmax(1), xa.detach())

    def stop(t: int, aux: tuple[Tensor, Tensor], rows: Tensor) -> Tensor:
        pred, xa = aux
        hit = succeeded(pred, rows)
        first = first_hit[rows]
        first = torch.where(hit & (first < 0), torch.full_like(first, t), first)
        first_hit[rows] = first
        candidates = hit & (t - first >= extra_iters)
        settled = torch.zeros_like(hit)
        if bool(candidates.any()):
            # The 8-bit check: only what survives rounding counts; otherwise keep stepping.
            with torch.no_grad():
                pred_q = model(quantize(xa[candidates])).argmax(1)
            ok = succeeded(pred_q, rows[candidates])
            settled[candidates] = ok
            pred_after[rows[candidates][ok]] = pred_q[ok]
        gave_up = (first < 0) & (t >= max_iters)
        return settled | gave_up

    x, passes = ascend(
        x0,
        objective,
        normalized_gradient_step(lr, model.std.pow(2)),
        max_iters + extra_iters,
        stop,
        project=lambda t, xa: xa.clamp_(0, 1),
        max_batch=max_batch,
    )
    adv = quantize(x)
    unsettled = pred_after < 0
    if bool(unsettled.any()):
        with torch.no_grad():
            pred_after[unsettled] = torch.cat([model(part).argmax(1) for part in adv[unsettled].split(max_batch or n)])
    fooled = pred_after != goal if untargeted else pred_after == goal
    delta = (adv - x0).flatten(1)
    return FoolResult(
        images=adv,
        fooled=fooled,
        iterations=first_hit,
        pred_before=pred_before,
        pred_after=pred_after,
        targets=goal,
        l2=delta.norm(dim=1),
        linf=delta.abs().amax(dim=1),
        passes=passes,
    )
