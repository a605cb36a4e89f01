"""``style``: style transfer (Gatys et al. 2016; CS231n): content images repainted in the style of one
or more style images, every content of a shard in one batched optimisation (one per content shape).
Kernel: ``ascent.shared.kernels.style_transfer``. The style images are stored once per run as
``inputs/style-<k>.png``.

Per item: ``content_loss``, ``style_loss``, ``tv_loss`` and ``loss`` of the stored result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ascent.shared import html
from ascent.shared.catalog import ClassCatalog
from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.images import resize_smaller_side
from ascent.shared.jobs.base import InputFlag, Job, Loaded, Media, Outcome, WorkContext, images_of
from ascent.shared.jobs.fool import PRECISION, PRECISION_HELP
from ascent.shared.params import (
    FILES,
    INT_LIST,
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    NUMBER_LIST,
    OPTIONAL_NUMBER_LIST,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    JobParams,
    one_of,
    param,
)
from ascent.shared.records import DONE
from ascent.shared.spec import JobSpec
from ascent.shared.stats import finite, mean_or_none

LOSS_FIELDS = ("content_loss", "style_loss", "tv_loss", "loss")
STYLE_INPUT = "style-{k}"


@dataclass(frozen=True)
class StyleParams(JobParams):
    job: ClassVar[str] = "style"

    style: tuple[str, ...] = param(
        (), FILES, "style image (repeat to blend several)", required=True, cli_required=True, append=True
    )
    style_blend: tuple[float, ...] | None = param(None, OPTIONAL_NUMBER_LIST, "one weight per --style")
    style_size: int = param(512, POSITIVE_INT, "style images' smaller side")
    content_layer: int = param(3, NON_NEGATIVE_INT, "feature layer of the content loss")
    content_weight: float = param(5e-2, NON_NEGATIVE_NUMBER, "content loss weight")
    style_layers: tuple[int, ...] = param((1, 4, 6, 7), INT_LIST, "feature layers of the style loss")
    style_weights: tuple[float, ...] = param((20000.0, 500.0, 12.0, 1.0), NUMBER_LIST, "one weight per style layer")
    tv_weight: float = param(5e-2, NON_NEGATIVE_NUMBER, "total-variation weight")
    iters: int = param(200, POSITIVE_INT, "optimisation steps", limit="max_iters")
    lr: float = param(3.0, POSITIVE_NUMBER, "Adam step size")
    decayed_lr: float = param(0.1, POSITIVE_NUMBER, "step size from --decay-at on")
    decay_at: int = param(180, NON_NEGATIVE_INT, "iteration where the step size drops")
    init: str = param("content", one_of("content", "noise"), "start image")
    seed: int = param(0, NON_NEGATIVE_INT, "noise seed")
    precision: str = param("fp32", PRECISION, PRECISION_HELP)

    def check(self) -> None:
        if len(self.style_layers) != len(self.style_weights):
            raise InvalidSpec("params.style_weights", "needs one weight per style layer")
        if self.style_blend is not None and len(self.style_blend) != len(self.style):
            raise InvalidSpec("params.style_blend", "needs one weight per style image")


def group_by_shape(arrays: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``arrays`` grouped by shape, in order of first appearance (each group is one batch)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, arr in enumerate(arrays):
        groups.setdefault(tuple(arr.shape), []).append(i)
    return list(groups.values())


def _preset(style_size: int, content_weight: float, style_weights: tuple[float, ...], tv: float) -> dict[str, Any]:
    """A CS231n preset: 192 px contents, content layer 3, style layers 1, 4, 6, 7."""
    return {
        "size": 192,
        "style_size": style_size,
        "content_layer": 3,
        "content_weight": content_weight,
        "style_layers": [1, 4, 6, 7],
        "style_weights": list(style_weights),
        "tv_weight": tv,
    }


class Style(Job):
    name = "style"
    help = "style transfer: content images repainted in the style of other images, batched"
    Params = StyleParams
    inputs = InputFlag("content", "content images: folders, .npz files or image files")
    default_size = 192
    # Named presets of CS231n's style-transfer notebook: size, style size and loss settings.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "composition_vii": _preset(style_size=512, content_weight=5e-2, style_weights=(20000, 500, 12, 1), tv=5e-2),
        "scream": _preset(style_size=224, content_weight=3e-2, style_weights=(200000, 800, 12, 1), tv=2e-2),
        "starry_night": _preset(style_size=192, content_weight=6e-2, style_weights=(300000, 1000, 15, 3), tv=2e-2),
    }

    def prepare(self, image: np.ndarray, spec: JobSpec) -> np.ndarray:
        """Contents keep their aspect ratio: the smaller side is resized to the size."""
        assert spec.size is not None
        return resize_smaller_side(image, spec.size)

    def style_images(self, ctx: WorkContext) -> list[Any]:
        """The style images resized (smaller side = style_size) as 1×3×h×w tensors, each stored once per
        run; an unreadable one is a permanent error of the shard."""
        p = ctx.spec.params
        styles = []
        for k, uri in enumerate(p.style):
            try:
                image, _ = ctx.read_image(uri)
                image = resize_smaller_side(image, p.style_size)
            except InvalidInput as exc:
                raise InvalidInput(f"style image {k} ({uri}): {exc}") from exc
            ctx.put_run_image(STYLE_INPUT.format(k=k), image)
            styles.append(ctx.tensor([image]))
        return styles

    def run(self, ctx: WorkContext, batch: Sequence[Loaded]) -> list[Outcome]:
        from ascent.shared.kernels import style_transfer
        from ascent.shared.tensors import to_uint8

        p = ctx.spec.params
        assert isinstance(p, StyleParams)
        styles = self.style_images(ctx)
        outcomes: dict[int, Outcome] = {}
        # Contents of different aspect ratios have different shapes: one batched optimisation per shape.
        for group in group_by_shape(images_of(batch)):
            members = [batch[i] for i in group]
            content = ctx.tensor(images_of(members))
            result = style_transfer(ctx.model, content, styles, **p.arguments("style", "style_size"))
            outputs = to_uint8(result.images)
            for j, (i, x) in enumerate(zip(group, members, strict=True)):
                losses = {
                    "content_loss": float(result.content[j]),
                    "style_loss": float(result.style[j]),
                    "tv_loss": float(result.tv[j]),
                    "loss": float(result.loss[j]),
                }
                outcomes[i] = Outcome(x.item, losses, outputs[j], x.image)
        return [outcomes[i] for i in range(len(batch))]

    def summarize(self, spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
        done = [r for r in rows if r["status"] == DONE]
        losses = [
            {"item_id": r["item_id"], "output": r.get("output"), **{f: finite(r.get(f)) for f in LOSS_FIELDS}}
            for r in done
        ]
        return {"losses": losses, "mean_losses": {f: mean_or_none([x[f] for x in losses]) for f in LOSS_FIELDS}}

    def summary_lines(self, summary: Mapping[str, Any]) -> list[str]:
        means = summary["mean_losses"]
        return ["mean final losses: " + ", ".join(f"{k} {html.num(means[k], 5)}" for k in LOSS_FIELDS)]

    def headline(self, summary: Mapping[str, Any]) -> list[html.Card]:
        means = summary["mean_losses"]
        return [html.Card(html.num(means[k], 5), f"mean {k.replace('_', ' ')}") for k in LOSS_FIELDS]

    def grid_context(self, media: Media) -> tuple[str, Any]:
        """The style images, embedded once as CSS backgrounds and reused by every tile."""
        rules, cells = [], []
        for k, data in enumerate(media.run_inputs("style-")):
            thumb = html.thumbnail(data)
            if thumb is None:
                cells.append(html.figure(b"", f"style {k}", "unreadable image"))
                continue
            uri, w, h = thumb
            rules.append(f".style-{k}{{background-image:url({uri});width:{w}px;height:{h}px}}")
            cells.append(f'<figure><div class="bg style-{k}"></div>style {k}</figure>')
        return "".join(rules), cells or [html.figure(None, "style")]

    def tile(self, row: Mapping[str, Any], media: Media, classes: ClassCatalog, shared: Any) -> str:
        item_id = row["item_id"]
        losses = " · ".join(f"{k.replace('_', ' ')} {html.num(row.get(k), 5)}" for k in LOSS_FIELDS)
        figures = [html.figure(media.input(item_id), "content"), *shared, html.figure(media.output(item_id), "result")]
        caption = (
            f"<b>{html.esc(item_id)}</b><br>{losses}<br>{html.source_span(row)} "
            f"{html.link(row.get('output'), 'full size')}"
        )
        return html.tile(figures, caption)


JOB = Style()
