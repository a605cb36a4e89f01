"""The four jobs as batched kernels that optimise the input image of a frozen classifier.

All take images N×3×H×W in [0, 1] (float) on the model's device and return tensors plus per-image
metrics; none does I/O. They share one loop, ``ascend``: the jobs differ only in the objective, the
start image, the stop rule, the update rule and the projection (clamp, blur) after each step.

- ``saliency``: one backward pass (Simonyan et al. 2014).
- ``fool``: normalised-gradient ascent on the target score, per-sample early stopping, 8-bit exact.
- ``class_visualization``: ascent on the raw class score with L2, jitter and blur (CS231n).
- ``style_transfer``: Adam descent on content + style + TV losses (Gatys et al. 2016; CS231n).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from shared.catalog import PRECISIONS
from shared.errors import InvalidInput
from shared.losses import content_loss, gram_matrix, style_loss, tv_loss
from shared.models import Classifier, autocast

# (t, x_active, rows) -> (per-sample objective to *maximise*, shape A; anything the stop rule needs)
Objective = Callable[[int, Tensor, Tensor], tuple[Tensor, Any]]
# (t, x_active, grad_active, rows) -> new x_active
Step = Callable[[int, Tensor, Tensor, Tensor], Tensor]
# (t, aux, rows) -> bool mask over the active rows: True = this sample is done and leaves the batch
StopRule = Callable[[int, Any, Tensor], Tensor]
# (t, x_active) -> x_active after projection (clamp, blur); runs after each step
Projection = Callable[[int, Tensor], Tensor]


# ----------------------------------------------------------------------------- the ascent loop


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
) -> tuple[Tensor, int]:
    """The one ascent loop shared by the jobs. Returns (x after the loop, forward+backward passes).

    Each iteration t evaluates the objective on the samples still active, in chunks of at most
    ``max_batch`` (the CPU is fastest at small batches); with a stop rule, samples it marks done leave
    the batch before the step (so the batch shrinks), and the rule is checked once more after the last
    step. Without one, exactly ``iters`` steps run on every sample. A chunk that runs out of GPU
    memory is split in two and run again (stop rules must tolerate being asked twice for the same t),
    and later iterations keep the smaller size: on a GPU the whole batch is tried first.
    """
    x = x0.detach().clone()
    rows = torch.arange(x.shape[0], device=x.device)
    passes = 0

    def run_chunk(t: int, part: Tensor) -> Tensor | None:
        """Objective, stop rule and step for the rows ``part``; returns the rows still active."""
        xa = x[part].requires_grad_(True)
        value, aux = objective(t, xa, part)
        keep = None
        if stop is not None:
            keep = ~stop(t, aux, part)
            if t == iters or not bool(keep.any()):
                return None
            value = value[keep]
        grad = input_gradient(value, xa)
        current = xa.detach()
        if keep is not None and not bool(keep.all()):
            grad, current, part = grad[keep], current[keep], part[keep]
        with torch.no_grad():
            new = step(t, current, grad, part)
            x[part] = project(t, new) if project is not None else new
        return part

    for t in range(iters + 1):
        if t == iters and stop is None:
            break
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


# ----------------------------------------------------------------------------- argument checks


def _check_images(images: Tensor, name: str = "images") -> None:
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


def _class_tensor(values: Any, n: int, num_classes: int, name: str, device: torch.device) -> Tensor:
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


def _num_classes(model: Classifier) -> int:
    return len(model.class_names)


def _check_precision(precision: Any) -> None:
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _model_device(model: Classifier) -> torch.device:
    return model.mean.device


def auto_max_batch(device: torch.device, requested: int | None = None) -> int | None:
    """How many images go through the model at once: ``requested`` if given; on the CPU 8 (measured
    fastest per image, ENVIRONMENT.md / bench); on a GPU the whole batch (None)."""
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise InvalidInput(f"max_batch must be a positive integer, got {requested!r}")
        return requested
    return None if device.type == "cuda" else 8


def quantize(x: Tensor) -> Tensor:
    """Nearest 8-bit value: round(x·255)/255, exactly what a PNG stores (idempotent)."""
    return torch.round(x * 255) / 255


# ----------------------------------------------------------------------------- saliency


def saliency(model: Classifier, images: Tensor, labels: Any, loss: str = "cross_entropy") -> Tensor:
    """Saliency maps N×H×W (≥ 0): max over channels of |∂loss/∂input| (normalised input, as the
    reference). ``loss="cross_entropy"`` of ``labels`` (default) or ``"score"`` = the class logit."""
    _check_images(images)
    if loss not in ("cross_entropy", "score"):
        raise InvalidInput(f"loss must be 'cross_entropy' or 'score', got {loss!r}")
    device = _model_device(model)
    labels_t = _class_tensor(labels, images.shape[0], _num_classes(model), "labels", device)
    inputs = model.normalize(images.to(device)).detach().requires_grad_(True)
    logits = model.forward_normalized(inputs)
    if loss == "score":
        objective = logits.gather(1, labels_t[:, None]).squeeze(1)
    else:
        objective = -F.cross_entropy(logits, labels_t, reduction="none")
    return input_gradient(objective, inputs).abs().amax(dim=1)


# ----------------------------------------------------------------------------- fooling images


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
) -> FoolResult:
    """Adversarial images: normalised-gradient ascent on the target class score until the model
    predicts it, then ``extra_iters`` more steps (REFERENCE.md §1; lr 1 in normalised space).

    ``targets``: one class id for all, one per image, or None (untargeted: move away from the
    current prediction). ``iterations`` counts steps as the reference loop does; an image is done
    only when its 8-bit rounding (exactly what a PNG stores) is classified as the target after the
    extra steps: if rounding undoes the attack, stepping goes on. Images that are done leave the
    batch; ``max_batch`` caps how many run through the model at once (None: ``auto_max_batch``).

    ``loss="score"`` ascends the raw target logit (the reference); ``"log_softmax"`` ascends the
    target's log-probability, which also pushes the other classes down and fools in fewer steps.
    ``precision="bf16"`` runs the stepping forwards and backwards under bf16 autocast; the
    predictions that decide success (before, the 8-bit check, after) stay in float32.
    """
    _check_images(images)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise InvalidInput(f"lr must be a positive number, got {lr!r}")
    if not isinstance(max_iters, int) or max_iters < 0:
        raise InvalidInput(f"max_iters must be a non-negative integer, got {max_iters!r}")
    if not isinstance(extra_iters, int) or extra_iters < 0:
        raise InvalidInput(f"extra_iters must be a non-negative integer, got {extra_iters!r}")
    if loss not in ("score", "log_softmax"):
        raise InvalidInput(f"loss must be 'score' or 'log_softmax', got {loss!r}")
    _check_precision(precision)
    device = _model_device(model)
    max_batch = auto_max_batch(device, max_batch)
    x0 = quantize(images.to(device=device, dtype=torch.float32))
    n = x0.shape[0]
    with torch.no_grad():
        pred_before = model(x0).argmax(1)
    untargeted = targets is None
    goal = (
        pred_before.clone()
        if untargeted
        else _class_tensor(targets, n, _num_classes(model), "targets", device)
    )

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
            pred_after[unsettled] = torch.cat(
                [model(part).argmax(1) for part in adv[unsettled].split(max_batch or n)]
            )
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


# ----------------------------------------------------------------------------- class visualisation


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
    _check_precision(precision)
    device = _model_device(model)
    if isinstance(classes, int) and not isinstance(classes, bool):
        classes = [classes]
    n = len(classes) if isinstance(classes, Sequence) else int(torch.as_tensor(classes).numel())
    if n == 0:
        raise InvalidInput("classes is empty")
    class_ids = _class_tensor(classes, n, _num_classes(model), "classes", device)
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


# ----------------------------------------------------------------------------- style transfer


@dataclass(frozen=True)
class StyleResult:
    """``images`` N×3×H×W in [0, 1] (8-bit exact); final per-image losses of those images (N each)."""

    images: Tensor
    content: Tensor
    style: Tensor
    tv: Tensor
    loss: Tensor


def _style_targets(
    model: Classifier, style: Tensor | Sequence[Tensor], blend: Sequence[float] | None, layers: Sequence[int]
) -> list[Tensor]:
    """Target Gram matrices (1×C×C per layer), blended over style images with weights ``blend``."""
    images = [style] if isinstance(style, Tensor) else list(style)
    if not images:
        raise InvalidInput("style is empty")
    weights = [1.0] * len(images) if blend is None else [float(w) for w in blend]
    if len(weights) != len(images):
        raise InvalidInput(f"style_blend has {len(weights)} weights for {len(images)} style images")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise InvalidInput("style_blend weights must be ≥ 0 with a positive sum")
    device = _model_device(model)
    targets: list[Tensor] = [torch.zeros(())] * len(layers)
    with torch.no_grad():
        for k, (img, w) in enumerate(zip(images, weights, strict=True)):
            img = img.unsqueeze(0) if img.dim() == 3 else img
            _check_images(img, f"style[{k}]")
            feats = model.features(img.to(device), upto=max(layers))
            for i, layer in enumerate(layers):
                gram = gram_matrix(feats[layer]).mean(0, keepdim=True) * (w / sum(weights))
                targets[i] = gram if k == 0 else targets[i] + gram
    return targets


def style_transfer(
    model: Classifier,
    content: Tensor,
    style: Tensor | Sequence[Tensor],
    content_layer: int = 3,
    content_weight: float = 5e-2,
    style_layers: Sequence[int] = (1, 4, 6, 7),
    style_weights: Sequence[float] = (20000, 500, 12, 1),
    tv_weight: float = 5e-2,
    iters: int = 200,
    lr: float = 3.0,
    decayed_lr: float = 0.1,
    decay_at: int = 180,
    init: str = "content",
    seed: int = 0,
    style_blend: Sequence[float] | None = None,
    precision: str = "fp32",
) -> StyleResult:
    """Repaint ``content`` (N×3×H×W in [0, 1]) in the style of ``style`` (1×3×h×w, or a list of
    style images blended by ``style_blend``), all N in one batched optimisation (Gatys et al. 2016).

    Adam on the normalised image, lr ``lr`` then ``decayed_lr`` from ``decay_at``, clamped to
    [−1.5, 1.5] until ``decay_at + 10`` (CS231n). ``init="noise"`` starts from seeded uniform noise;
    content weight 0 = texture synthesis, style weights 0 = feature inversion. ``precision="bf16"``
    runs the feature stack under bf16 autocast while stepping; Gram matrices, losses, targets and the
    reported final losses are float32.
    """
    _check_images(content, "content")
    _check_precision(precision)
    if init not in ("content", "noise"):
        raise InvalidInput(f"init must be 'content' or 'noise', got {init!r}")
    if len(style_layers) != len(style_weights):
        raise InvalidInput(f"{len(style_layers)} style_layers but {len(style_weights)} style_weights")
    if not isinstance(iters, int) or iters < 1:
        raise InvalidInput(f"iters must be a positive integer, got {iters!r}")
    depth = len(model.stack)
    for layer in (content_layer, *style_layers):
        if not 0 <= layer < depth:
            raise InvalidInput(f"feature layer {layer} is out of range 0..{depth - 1} for {model.name}")
    device = _model_device(model)
    targets = _style_targets(model, style, style_blend, style_layers)
    upto = max(content_layer, *style_layers)
    content_n = model.normalize(content.to(device=device, dtype=torch.float32))
    with torch.no_grad():
        content_target = model.features_normalized(content_n, upto=content_layer)[content_layer]
    if init == "content":
        start = content_n
    else:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.rand(1, *content_n.shape[1:], generator=generator).to(device)
        start = noise.expand_as(content_n)

    def losses(xn: Tensor, rows: Tensor, network_precision: str = "fp32") -> tuple[Tensor, Tensor, Tensor]:
        with autocast(device, network_precision):
            feats = model.features_normalized(xn, upto=upto)
        feats = [f.float() for f in feats]
        c = content_loss(content_weight, feats[content_layer], content_target[rows], reduction="none")
        s = style_loss(feats, style_layers, targets, style_weights, reduction="none")
        return c, s, tv_loss(xn, tv_weight, reduction="none")

    def objective(t: int, xa: Tensor, rows: Tensor) -> tuple[Tensor, None]:
        c, s, tv = losses(xa, rows, precision)
        return -(c + s + tv), None

    clamp_until = decay_at + 10
    step = AdamStep(start, lambda t: lr if t < decay_at else decayed_lr)
    x, _ = ascend(
        start, objective, step, iters, project=lambda t, xa: xa.clamp_(-1.5, 1.5) if t < clamp_until else xa
    )
    result = quantize(model.denormalize(x).clamp(0, 1))
    with torch.no_grad():
        c, s, tv = losses(model.normalize(result), torch.arange(result.shape[0], device=device))
    return StyleResult(images=result, content=c, style=s, tv=tv, loss=c + s + tv)


# ----------------------------------------------------------------------------- the registry

JOBS: dict[str, Callable[..., Any]] = {
    "saliency": saliency,
    "fool": fool,
    "classviz": class_visualization,
    "style": style_transfer,
}
