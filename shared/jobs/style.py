"""``style``: style transfer (Gatys et al. 2016; CS231n): content images repainted in the style of one
or more style images, every content of a shard in one batched optimisation (one per content shape).
Kernel: ``ascent.shared.kernels.style_transfer``. The style images are stored once per run as
``inputs/style-<k>.png`` (an init image as ``inputs/init.png``).

Grids (``--grid``, comma lists of ``--content-weight`` / ``--style-weight-scale``): one item per
combination, planned by ``ascent.shared.jobs.style_grid``; the report shows a contact sheet.
``--save-every N``: intermediate images ``steps/<item_id>/step-<iteration>.png``, a strip per item.

Per item: ``content_loss``, ``style_loss``, ``tv_loss`` and ``loss`` of the stored result; its
combination: ``content`` (the content's item id), ``style_index`` (None: the blend),
``content_weight``, ``style_weight_scale``; ``snapshots``: the iterations of the stored intermediates.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ascent.shared import html
from ascent.shared.catalog import ClassCatalog
from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.images import resize_smaller_side
from ascent.shared.jobs import style_grid as grid
from ascent.shared.jobs.base import InputFlag, Job, Loaded, Media, Outcome, WorkContext, images_of
from ascent.shared.jobs.fool import PRECISION, PRECISION_HELP
from ascent.shared.limits import Limits
from ascent.shared.params import (
    FILES,
    INT_LIST,
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    NUMBER_LIST,
    OPTIONAL_NUMBER_LIST,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    SWITCH,
    JobParams,
    Kind,
    list_of,
    one_of,
    param,
)
from ascent.shared.records import DONE
from ascent.shared.spec import Item, JobSpec
from ascent.shared.stats import finite, mean_or_none

log = logging.getLogger(__name__)
LOSS_FIELDS = ("content_loss", "style_loss", "tv_loss", "loss")
STYLE_INPUT = "style-{k}"
INIT_WORDS = ("content", "noise")
#: The default --iters, which the low-iterations warning names: with Adam's default schedule the
#: CS231n pairs give a good result at 200 and noise at 20 (the step size never drops).
DEFAULT_ITERS = 200


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _weights(text: str) -> float | list[float]:
    parts = [float(p) for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{text!r} holds no number")
    return parts[0] if len(parts) == 1 and "," not in text else parts


_weights.__name__ = "weight"
WEIGHTS = Kind(
    "a non-negative number or a non-empty list of them (a sweep)",
    lambda v: _number(v) or (isinstance(v, tuple) and len(v) > 0 and all(_number(c) for c in v)),
    _weights,
    metavar="W or W1,W2,...",
    sequence=True,
)
SCALES = list_of(
    "positive integers", lambda c: isinstance(c, int) and not isinstance(c, bool) and c > 0, int, "S1,S2,..."
)
OPTIONAL_SCALES = dataclasses.replace(
    SCALES,
    meaning="null or a non-empty increasing list of positive integers",
    check=lambda v: v is None or (SCALES.check(v) and list(v) == sorted(set(v))),
)
OPTIONAL_POSITIVE = Kind("null or a positive number", lambda v: v is None or (_number(v) and v > 0), float, metavar="F")
INIT = Kind(
    "'content', 'noise' or an image URI",
    lambda v: isinstance(v, str) and bool(v),
    str,
    metavar="content|noise|PATH",
    files=True,
    aliases=tuple((w, w) for w in INIT_WORDS),
)


@dataclass(frozen=True)
class StyleParams(JobParams):
    job: ClassVar[str] = "style"

    style: tuple[str, ...] = param(
        (),
        FILES,
        "style images: several are blended (--style-blend), or each used alone with --grid",
        required=True,
        cli_required=True,
        append=True,
    )
    style_blend: tuple[float, ...] | None = param(None, OPTIONAL_NUMBER_LIST, "one weight per --style")
    style_size: int = param(512, POSITIVE_INT, "style images' smaller side")
    content_layer: int = param(3, NON_NEGATIVE_INT, "feature layer of the content loss")
    content_weight: float | tuple[float, ...] = param(
        5e-2, WEIGHTS, "content loss weight; a comma list sweeps it (one item per content and value)"
    )
    style_layers: tuple[int, ...] = param((1, 4, 6, 7), INT_LIST, "feature layers of the style loss")
    style_weights: tuple[float, ...] = param((20000.0, 500.0, 12.0, 1.0), NUMBER_LIST, "one weight per style layer")
    style_weight_scale: float | tuple[float, ...] = param(
        1.0, WEIGHTS, "multiplies every --style-weights value; a comma list sweeps it (one item per value)"
    )
    grid: bool = param(False, SWITCH, "style every content with every --style, one item per pair (not a blend)")
    tv_weight: float = param(5e-2, NON_NEGATIVE_NUMBER, "total-variation weight")
    iters: int = param(DEFAULT_ITERS, POSITIVE_INT, "optimisation steps (per scale with --scales)", limit="max_iters")
    optimizer: str = param(
        "adam", one_of("adam", "lbfgs"), "adam (CS231n) or lbfgs (neural-style's default; each image on its own)"
    )
    lr: float = param(3.0, POSITIVE_NUMBER, "Adam step size")
    decayed_lr: float = param(0.1, POSITIVE_NUMBER, "Adam step size from --decay-at on")
    decay_at: int = param(180, NON_NEGATIVE_INT, "iteration where Adam's step size drops")
    scales: tuple[int, ...] | None = param(
        None,
        OPTIONAL_SCALES,
        "coarse to fine smaller sides, e.g. 192,384,768: --iters at each, each from the previous result "
        "upsampled; the output has the last (it replaces --size; at most ASCENT_MAX_SIDE)",
    )
    style_scale: float | None = param(
        None, OPTIONAL_POSITIVE, "style images' smaller side as a fraction of the content's (replaces --style-size)"
    )
    init: str = param("content", INIT, "start image: content, noise (seeded by --seed) or an image file")
    original_colors: bool = param(False, SWITCH, "transfer luminance only: the result keeps the content's colours")
    save_every: int = param(
        0, NON_NEGATIVE_INT, "store an intermediate image every N iterations (a strip in the report)"
    )
    seed: int = param(0, NON_NEGATIVE_INT, "noise seed")
    precision: str = param("fp32", PRECISION, PRECISION_HELP)

    def check(self) -> None:
        if len(self.style_layers) != len(self.style_weights):
            raise InvalidSpec("params.style_weights", "needs one weight per style layer")
        if self.style_blend is not None and len(self.style_blend) != len(self.style):
            raise InvalidSpec("params.style_blend", "needs one weight per style image")
        for name in ("content_weight", "style_weight_scale"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(set(value)) != len(value):
                raise InvalidSpec(f"params.{name}", f"{list(value)} repeats a value (each value is one column)")
        if self.grid and self.style_blend is not None:
            raise InvalidSpec("params.grid", "styles each content with each style alone: drop --style-blend")

    def check_limits(self, limits: Limits) -> None:
        super().check_limits(limits)
        if self.scales:
            try:
                limits.check("max_side", max(self.scales), "params.scales")
            except InvalidInput as exc:
                raise InvalidSpec("params.scales", str(exc).split(": ", 1)[1]) from None

    def warnings(self) -> list[str]:
        """What the user should know before the run starts (too few iterations to show the content)."""
        if self.optimizer == "adam" and self.iters <= self.decay_at:
            return [
                f"warning: --iters {self.iters} ends before --decay-at {self.decay_at}, where Adam's step size "
                "drops: the result will be mostly noise with little of the content; use the default "
                f"--iters {DEFAULT_ITERS} (or --decay-at below --iters, or --optimizer lbfgs)"
            ]
        return []


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

    def plan_items(self, params: JobParams, items: list[Item]) -> list[Item]:
        """One item per content and combination (``style_grid.plan``); warns (log) when ``--iters`` is
        too low to show the content."""
        assert isinstance(params, StyleParams)
        for text in params.warnings():
            log.warning("%s", text)
        styles = len(params.style) if params.grid else None
        return grid.plan(items, styles, grid.values(params.content_weight), grid.values(params.style_weight_scale))

    def prepare(self, image: np.ndarray, spec: JobSpec) -> np.ndarray:
        """Contents keep their aspect ratio: the smaller side is resized to the size (the last scale)."""
        assert spec.size is not None
        scales = spec.params.scales if isinstance(spec.params, StyleParams) else None
        return resize_smaller_side(image, scales[-1] if scales else spec.size)

    def style_images(self, ctx: WorkContext) -> list[Any]:
        """The style images resized (smaller side = style_size, or style_scale × the largest content
        side the run works at) as 1×3×h×w tensors, each stored once per run; an unreadable one is a
        permanent error of the shard."""
        p = ctx.spec.params
        assert isinstance(p, StyleParams) and ctx.spec.size is not None
        side = p.style_size
        if p.style_scale is not None:
            side = max(1, round(p.style_scale * (p.scales[-1] if p.scales else ctx.spec.size)))
        styles = []
        for k, uri in enumerate(p.style):
            styles.append(ctx.tensor([self._read(ctx, uri, f"style image {k}", STYLE_INPUT.format(k=k), side)]))
        return styles

    def _read(self, ctx: WorkContext, uri: str, what: str, name: str, side: int) -> np.ndarray:
        try:
            image = resize_smaller_side(ctx.read_image(uri)[0], side)
        except InvalidInput as exc:
            raise InvalidInput(f"{what} ({uri}): {exc}") from exc
        ctx.put_run_image(name, image)
        return image

    def run(self, ctx: WorkContext, batch: Sequence[Loaded]) -> list[Outcome]:
        from ascent.shared.kernels import style_transfer
        from ascent.shared.kernels.loop import progress_part
        from ascent.shared.tensors import to_uint8

        p = ctx.spec.params
        assert isinstance(p, StyleParams) and ctx.spec.size is not None
        styles = self.style_images(ctx)
        init: Any = p.init
        if p.init not in INIT_WORDS:
            init = ctx.tensor(
                [self._read(ctx, p.init, "--init image", "init", p.scales[-1] if p.scales else ctx.spec.size)]
            )
        combos = [grid.combination(x.item, p.content_weight, p.style_weight_scale) for x in batch]
        outcomes: dict[int, Outcome] = {}
        # Contents of different aspect ratios have different shapes: one batched optimisation per shape.
        before = 0
        for group in group_by_shape(images_of(batch)):
            members = [batch[i] for i in group]
            chosen = [combos[i] for i in group]
            index = [c["style_index"] for c in chosen] if p.grid else None
            with progress_part(before, len(group), len(batch)):  # the group's share of the shard's progress
                result = style_transfer(
                    ctx.model,
                    ctx.tensor(images_of(members)),
                    styles,
                    **p.arguments("style", "style_size", "grid", "init", "content_weight", "style_weight_scale"),
                    init=init,
                    style_index=index,
                    content_weight=[c["content_weight"] for c in chosen],
                    style_weight_scale=[c["style_weight_scale"] for c in chosen],
                )
            before += len(group)
            outputs = to_uint8(result.images)
            snapshots = [(t, to_uint8(images)) for t, images in result.snapshots]
            for j, (i, x) in enumerate(zip(group, members, strict=True)):
                for t, images in snapshots:
                    ctx.put_item_image(x.item.item_id, f"step-{t:06d}", images[j])
                fields = {
                    "content_loss": float(result.content[j]),
                    "style_loss": float(result.style[j]),
                    "tv_loss": float(result.tv[j]),
                    "loss": float(result.loss[j]),
                    "content": x.item.variant.get("content", x.item.item_id),
                    **chosen[j],
                    "snapshots": [t for t, _ in snapshots],
                }
                outcomes[i] = Outcome(x.item, fields, outputs[j], x.image)
        return [outcomes[i] for i in range(len(batch))]

    def summarize(self, spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
        done = [r for r in rows if r["status"] == DONE]
        losses = [
            {
                "item_id": r["item_id"],
                "output": r.get("output"),
                **{f: finite(r.get(f)) for f in LOSS_FIELDS},
                **{f: r.get(f) for f in ("content", *grid.COMBINATION)},
                "content_name": str(r.get("original") or r.get("source") or "").rsplit("/", 1)[-1],
            }
            for r in done
        ]
        means = {f: mean_or_none([x[f] for x in losses]) for f in LOSS_FIELDS}
        return {"losses": losses, "mean_losses": means, "sheet": grid.sheet(losses)}

    def summary_lines(self, summary: Mapping[str, Any]) -> list[str]:
        means = summary["mean_losses"]
        lines = ["mean final losses: " + ", ".join(f"{k} {html.num(means[k], 5)}" for k in LOSS_FIELDS)]
        sheet = summary.get("sheet")
        if sheet:
            lines.append(
                f"contact sheet: {len(sheet['rows'])} contents × {len(sheet['columns'])}: {', '.join(sheet['columns'])}"
            )
        return lines

    def headline(self, summary: Mapping[str, Any]) -> list[html.Card]:
        means = summary["mean_losses"]
        return [html.Card(html.num(means[k], 5), f"mean {k.replace('_', ' ')}") for k in LOSS_FIELDS]

    def media_sections(self, summary: Mapping[str, Any], media: Media, classes: ClassCatalog) -> list[str]:
        sheet = summary.get("sheet")
        return [grid.sheet_html(sheet, media)] if sheet else []

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
        index = row.get("style_index")
        chosen = isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(shared)
        styles = [shared[index]] if chosen else shared
        content = str(row.get("content") or item_id)
        figures = [html.figure(media.input(item_id), "content"), *styles, html.figure(media.output(item_id), "result")]
        steps = [t for t in row.get("snapshots") or [] if isinstance(t, int) and not isinstance(t, bool)]
        caption = (
            f"<b>{html.esc(item_id)}</b><br>{losses}<br>{html.source_span(row)} "
            f"{html.link(row.get('output'), 'full size')}"
        )
        if content != item_id or index is not None:
            caption += f"<br>content {html.esc(content)} · {html.esc(grid.describe(row))}"
        strip = grid.strip(item_id, steps, media) if steps else ""
        return html.tile(figures, caption + strip)


JOB = Style()
