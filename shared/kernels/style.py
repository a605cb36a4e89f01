"""Style transfer (Gatys et al. 2016; CS231n): content + style + TV losses minimised on the image,
every content of the batch in one optimisation, each image independent of the others.

Options of neural-style (Johnson) and its peers: L-BFGS or Adam, coarse-to-fine scales, original
colours (luminance-only transfer), an init image, a style scale relative to the content, and
intermediate snapshots. Grids: each image may have its own style image and loss weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ascent.shared.errors import InvalidInput
from ascent.shared.kernels.colors import keep_colors
from ascent.shared.kernels.lbfgs import lbfgs
from ascent.shared.kernels.loop import (
    AdamStep,
    ascend,
    check_images,
    check_precision,
    model_device,
    progress_part,
    quantize,
)
from ascent.shared.losses import content_loss, gram_matrix, style_loss, tv_loss
from ascent.shared.models import Classifier, autocast

OPTIMIZERS = ("adam", "lbfgs")
# (normalised images A×3×H×W, their rows in the batch, network precision) -> content, style, TV losses (A each)
Losses = Callable[[Tensor, Tensor, str], tuple[Tensor, Tensor, Tensor]]
LBFGS_HISTORY = 20  # pairs (s, y) per image; neural-style keeps 100, 20 costs less memory at 768 px


@dataclass(frozen=True)
class StyleResult:
    """``images`` N×3×H×W in [0, 1] (8-bit exact); final per-image losses of those images (N each);
    ``snapshots``: (iteration counted over all scales, N×3×h×w in [0, 1] 8-bit exact) every
    ``save_every`` iterations, at the scale being optimised then."""

    images: Tensor
    content: Tensor
    style: Tensor
    tv: Tensor
    loss: Tensor
    snapshots: tuple[tuple[int, Tensor], ...] = ()


def resize_to_side(images: Tensor, side: int) -> Tensor:
    """N×3×H×W in [0, 1] resized (bilinear, antialiased) so the smaller side is ``side``; aspect kept."""
    h, w = images.shape[-2:]
    short = min(h, w)
    size = (max(1, round(h * side / short)), max(1, round(w * side / short)))
    if size == (h, w):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=side < short, align_corners=False).clamp(0, 1)


def _grams(model: Classifier, image: Tensor, layers: Sequence[int]) -> list[Tensor]:
    with torch.no_grad():
        feats = model.features(image.to(model_device(model)), upto=max(layers))
        return [gram_matrix(feats[layer]).mean(0, keepdim=True) for layer in layers]


def _style_targets(
    model: Classifier,
    styles: Sequence[Tensor],
    blend: Sequence[float] | None,
    layers: Sequence[int],
    index: Sequence[int] | None,
) -> list[Tensor]:
    """Target Gram matrices per layer: 1×C×C blended over the styles with weights ``blend``, or with
    ``index`` (one style per content image) N×C×C, row i from style ``index[i]``."""
    grams = [_grams(model, img, layers) for img in styles]
    if index is not None:
        return [torch.cat([grams[k][i] for k in index]) for i in range(len(layers))]
    weights = [1.0] * len(styles) if blend is None else [float(w) for w in blend]
    total = sum(weights)
    blended = []
    for i in range(len(layers)):
        parts = [g[i] * (w / total) for g, w in zip(grams, weights, strict=True)]
        blended.append(torch.stack(parts).sum(0))
    return blended


def _per_image(value: float | Sequence[float], n: int, name: str, device: torch.device) -> Tensor:
    """A weight for each of n images (N): one number broadcast, or one per image."""
    values = [float(value)] * n if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != n or any(not v >= 0 for v in values):
        raise InvalidInput(f"{name} needs one non-negative number or one per image ({n}), got {value!r}")
    return torch.tensor(values, device=device)


def _check(content: Tensor, styles: list[Tensor], model: Classifier, args: dict[str, Any]) -> None:
    check_images(content, "content")
    check_precision(args["precision"])
    if not styles:
        raise InvalidInput("style is empty")
    for k, img in enumerate(styles):
        check_images(img, f"style[{k}]")
    init = args["init"]
    if isinstance(init, Tensor):
        check_images(init, "init")
    elif init not in ("content", "noise"):
        raise InvalidInput(f"init must be 'content', 'noise' or an image tensor, got {init!r}")
    if args["optimizer"] not in OPTIMIZERS:
        raise InvalidInput(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {args['optimizer']!r}")
    if len(args["style_layers"]) != len(args["style_weights"]):
        raise InvalidInput(f"{len(args['style_layers'])} style_layers but {len(args['style_weights'])} style_weights")
    for name in ("iters",):
        if not isinstance(args[name], int) or args[name] < 1:
            raise InvalidInput(f"{name} must be a positive integer, got {args[name]!r}")
    scales = args["scales"]
    if scales is not None and (not scales or any(not isinstance(s, int) or s < 1 for s in scales)):
        raise InvalidInput(f"scales must be positive integers (smaller sides), got {scales!r}")
    blend, index = args["style_blend"], args["style_index"]
    if blend is not None:
        if len(blend) != len(styles):
            raise InvalidInput(f"style_blend has {len(blend)} weights for {len(styles)} style images")
        if any(w < 0 for w in blend) or sum(blend) <= 0:
            raise InvalidInput("style_blend weights must be ≥ 0 with a positive sum")
    if index is not None and (len(index) != content.shape[0] or any(not 0 <= k < len(styles) for k in index)):
        raise InvalidInput(f"style_index needs one style (0..{len(styles) - 1}) per content image, got {index!r}")
    depth = len(model.require_features())
    for layer in (args["content_layer"], *args["style_layers"]):
        if not 0 <= layer < depth:
            raise InvalidInput(f"feature layer {layer} is out of range 0..{depth - 1} for {model.name}")


def style_transfer(
    model: Classifier,
    content: Tensor,
    style: Tensor | Sequence[Tensor],
    content_layer: int = 3,
    content_weight: float | Sequence[float] = 5e-2,
    style_layers: Sequence[int] = (1, 4, 6, 7),
    style_weights: Sequence[float] = (20000, 500, 12, 1),
    tv_weight: float = 5e-2,
    iters: int = 200,
    lr: float = 3.0,
    decayed_lr: float = 0.1,
    decay_at: int = 180,
    init: str | Tensor = "content",
    seed: int = 0,
    style_blend: Sequence[float] | None = None,
    precision: str = "fp32",
    optimizer: str = "adam",
    scales: Sequence[int] | None = None,
    style_scale: float | None = None,
    original_colors: bool = False,
    save_every: int = 0,
    style_index: Sequence[int] | None = None,
    style_weight_scale: float | Sequence[float] = 1.0,
) -> StyleResult:
    """Repaint ``content`` (N×3×H×W in [0, 1]) in the style of ``style`` (1×3×h×w, or a list of
    style images blended by ``style_blend``, or one per content image by ``style_index``), all N in
    one batched optimisation whose rows are independent (Gatys et al. 2016).

    ``optimizer="adam"``: Adam on the normalised image, lr ``lr`` then ``decayed_lr`` from
    ``decay_at``, clamped to [−1.5, 1.5] until ``decay_at + 10`` (CS231n). ``"lbfgs"``: per-image
    L-BFGS, step 1, no line search (neural-style's default); one function evaluation per iteration
    either way. ``scales`` (smaller sides, coarse to fine): ``iters`` per scale, each scale starting
    from the previous result upsampled; the output has the last scale (default: the content's size).
    ``init``: "content", "noise" (seeded uniform) or an image (1×3×h×w or N×3×h×w, resized to each
    content). ``style_scale``: style images resized to that fraction of the content's smaller side
    at each scale (default: as given). ``original_colors``: the result's luminance with the content's
    chroma (YIQ). ``content_weight`` and ``style_weight_scale`` (multiplies ``style_weights``): one
    number, or one per image. ``save_every``: a snapshot every that many iterations (0: none).
    ``precision="bf16"`` runs the feature stack under bf16 autocast while stepping; Gram matrices,
    losses, targets and the reported final losses are float32.
    """
    styles = [style] if isinstance(style, Tensor) else list(style)
    styles = [s.unsqueeze(0) if s.dim() == 3 else s for s in styles]
    args = dict(locals())
    _check(content, styles, model, args)
    device = model_device(model)
    n = content.shape[0]
    content = content.to(device=device, dtype=torch.float32)
    cw = _per_image(content_weight, n, "content_weight", device)
    sw = _per_image(style_weight_scale, n, "style_weight_scale", device)
    sides = list(scales) if scales else [min(content.shape[-2:])]
    frames: dict[int, Tensor] = {}  # iteration -> N×3×h×w, filled by rows (a batch may run in parts)
    image: Tensor | None = None  # the previous scale's result in [0, 1]
    for k, side in enumerate(sides):
        content_s = resize_to_side(content, side)
        scaled = (
            styles if style_scale is None else [resize_to_side(s, max(1, round(style_scale * side))) for s in styles]
        )
        losses = _losses(
            model, content_s, _style_targets(model, scaled, style_blend, style_layers, style_index), cw, sw, args
        )
        offset = k * iters

        def snap(t: int, xn: Tensor, rows: Tensor, offset: int = offset, content_s: Tensor = content_s) -> None:
            if save_every and (offset + t + 1) % save_every == 0:
                frame = frames.setdefault(offset + t + 1, torch.zeros_like(content_s))
                frame[rows] = _finish(model, xn, content_s[rows], original_colors)

        args["warm"] = k > 0
        try:
            with progress_part(k, 1, len(sides)):
                x = _optimise(model.normalize(_start(image, init, content_s, seed)), losses, args, snap)
        except torch.cuda.OutOfMemoryError:
            raise InvalidInput(
                f"scale {side} px does not fit in the device's memory with {n} image(s): give smaller --scales "
                "(or a smaller --size) or fewer images per shard (--shard-size)"
            ) from None
        image = _finish(model, x, content_s, original_colors)
    assert image is not None
    with torch.no_grad():
        c, s, tv = losses(model.normalize(image), torch.arange(n, device=device), "fp32")
    snapshots = tuple(sorted(frames.items()))
    return StyleResult(images=image, content=c, style=s, tv=tv, loss=c + s + tv, snapshots=snapshots)


def _losses(
    model: Classifier, content: Tensor, targets: list[Tensor], cw: Tensor, sw: Tensor, args: dict[str, Any]
) -> Losses:
    """The per-image losses at one scale: ``content`` N×3×H×W in [0, 1], ``targets`` per style layer
    (1×C×C shared or N×C×C per image), content weights ``cw`` and style-weight scales ``sw`` (N)."""
    layer, style_layers = args["content_layer"], args["style_layers"]
    upto = max(layer, *style_layers)
    device = model_device(model)
    with torch.no_grad():
        content_target = model.features_normalized(model.normalize(content), upto=layer)[layer]

    def losses(xn: Tensor, rows: Tensor, network_precision: str) -> tuple[Tensor, Tensor, Tensor]:
        with autocast(device, network_precision):
            feats = model.features_normalized(xn, upto=upto)
        feats = [f.float() for f in feats]
        c = content_loss(1.0, feats[layer], content_target[rows], reduction="none") * cw[rows]
        rows_targets = [t if t.shape[0] == 1 else t[rows] for t in targets]
        s = style_loss(feats, style_layers, rows_targets, args["style_weights"], reduction="none") * sw[rows]
        return c, s, tv_loss(xn, args["tv_weight"], reduction="none")

    return losses


def _start(previous: Tensor | None, init: str | Tensor, content: Tensor, seed: int) -> Tensor:
    """The first iterate in [0, 1] at ``content``'s shape: the previous scale's result upsampled, else
    the content, seeded noise (the same for every image) or the init image resized."""
    size = content.shape[-2:]
    if previous is not None:
        return F.interpolate(previous, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    if isinstance(init, Tensor):
        image = init.to(content.device, torch.float32)
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        return image.expand_as(content) if image.shape[0] == 1 else image
    if init == "content":
        return content
    noise = torch.rand(1, *content.shape[1:], generator=torch.Generator().manual_seed(seed))
    return noise.to(content.device).expand_as(content)


def _finish(model: Classifier, xn: Tensor, content: Tensor, original_colors: bool) -> Tensor:
    """The iterate (normalised) as an 8-bit exact image in [0, 1], with the content's colours if asked."""
    image = model.denormalize(xn.detach()).clamp(0, 1)
    return quantize(keep_colors(image, content) if original_colors else image)


Snapshot = Callable[[int, Tensor, Tensor], None]  # (t, normalised iterate after step t, its rows)


def _optimise(start_n: Tensor, losses: Losses, args: dict[str, Any], snap: Snapshot) -> Tensor:
    """``args["iters"]`` iterations of the chosen optimiser from ``start_n`` (normalised); returns x.

    Rows are independent, so a batch that runs out of GPU memory is run again in halves (Adam inside
    ``ascend``, L-BFGS here), with the same results; a lone image that does not fit raises."""
    iters, precision = args["iters"], args["precision"]
    if args["optimizer"] == "lbfgs":
        x = start_n.clone()
        parts = [torch.arange(start_n.shape[0], device=start_n.device)]
        while parts:
            rows = parts.pop(0)

            def gradient(t: int, xr: Tensor, rows: Tensor = rows) -> Tensor:
                xa = xr.detach().requires_grad_(True)
                c, s, tv = losses(xa, rows, precision)
                (grad,) = torch.autograd.grad((c + s + tv).sum(), xa)
                return grad

            def observe(t: int, xr: Tensor, rows: Tensor = rows) -> None:
                snap(t, xr, rows)

            try:
                x[rows] = lbfgs(start_n[rows], gradient, iters, history=LBFGS_HISTORY, observe=observe)
            except torch.cuda.OutOfMemoryError:
                if rows.numel() == 1:
                    raise
                parts[:0] = list(rows.tensor_split(2))
        return x

    decay_at, lr, decayed_lr = args["decay_at"], args["lr"], args["decayed_lr"]
    if args["warm"]:  # a later scale starts from the previous result: refine it, never jump away from it
        lr, decay_at = decayed_lr, 0
    adam = AdamStep(start_n, lambda t: lr if t < decay_at else decayed_lr)

    def objective(t: int, xa: Tensor, rows: Tensor) -> tuple[Tensor, None]:
        c, s, tv = losses(xa, rows, precision)
        return -(c + s + tv), None

    def step(t: int, xa: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
        new = adam(t, xa, grad, rows)
        new = new.clamp_(-1.5, 1.5) if t < decay_at + 10 else new  # CS231n's clamp while the steps are large
        snap(t, new, rows)
        return new

    x, _ = ascend(start_n, objective, step, iters)
    return x
