"""Style transfer (Gatys et al. 2016; CS231n): Adam descent on content + style + TV losses, every
content of the batch in one optimisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ascent.shared.errors import InvalidInput
from ascent.shared.kernels.loop import AdamStep, ascend, check_images, check_precision, model_device, quantize
from ascent.shared.losses import content_loss, gram_matrix, style_loss, tv_loss
from ascent.shared.models import Classifier, autocast


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
    device = model_device(model)
    targets: list[Tensor] = [torch.zeros(())] * len(layers)
    with torch.no_grad():
        for k, (img, w) in enumerate(zip(images, weights, strict=True)):
            img = img.unsqueeze(0) if img.dim() == 3 else img
            check_images(img, f"style[{k}]")
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
    check_images(content, "content")
    check_precision(precision)
    if init not in ("content", "noise"):
        raise InvalidInput(f"init must be 'content' or 'noise', got {init!r}")
    if len(style_layers) != len(style_weights):
        raise InvalidInput(f"{len(style_layers)} style_layers but {len(style_weights)} style_weights")
    if not isinstance(iters, int) or iters < 1:
        raise InvalidInput(f"iters must be a positive integer, got {iters!r}")
    depth = len(model.require_features())
    for layer in (content_layer, *style_layers):
        if not 0 <= layer < depth:
            raise InvalidInput(f"feature layer {layer} is out of range 0..{depth - 1} for {model.name}")
    device = model_device(model)
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
    x, _ = ascend(start, objective, step, iters, project=lambda t, xa: xa.clamp_(-1.5, 1.5) if t < clamp_until else xa)
    result = quantize(model.denormalize(x).clamp(0, 1))
    with torch.no_grad():
        c, s, tv = losses(model.normalize(result), torch.arange(result.shape[0], device=device))
    return StyleResult(images=result, content=c, style=s, tv=tv, loss=c + s + tv)
