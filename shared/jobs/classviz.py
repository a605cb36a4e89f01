"""``classviz``: class visualisations (CS231n; Simonyan et al. 2014): an image per class that the model
finds most "that class", from seeded noise, by ascent on the raw score with L2, jitter and blur.
Kernel: ``ascent.shared.kernels.class_visualization``. Items are the classes (``class:<id>``).

Per item: ``class_id``, ``score`` (its logit on the stored PNG), ``pred`` (top-1 on the stored PNG).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ascent.shared import html
from ascent.shared.catalog import ClassCatalog
from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.jobs.base import Job, Loaded, Media, Outcome, WorkContext, prediction_entry
from ascent.shared.jobs.fool import PRECISION, PRECISION_HELP
from ascent.shared.params import (
    CLASS_LIST,
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    JobParams,
    param,
)
from ascent.shared.records import DONE
from ascent.shared.spec import Item, JobSpec, item_id
from ascent.shared.stats import rate
from ascent.shared.uris import CLASS_PREFIX, parse_uri


@dataclass(frozen=True)
class ClassvizParams(JobParams):
    job: ClassVar[str] = "classviz"

    classes: tuple[int, ...] = param(
        (),
        CLASS_LIST,
        "class ids or names, comma-separated (repeatable)",
        required=True,
        cli_required=True,
        append=True,
        limit="max_classes",
    )
    iters: int = param(100, POSITIVE_INT, "steps", limit="max_iters")
    lr: float = param(25.0, POSITIVE_NUMBER, "step size")
    l2_reg: float = param(1e-3, NON_NEGATIVE_NUMBER, "L2 regularisation")
    jitter: int = param(16, NON_NEGATIVE_INT, "random shift in pixels per step")
    blur_every: int = param(10, NON_NEGATIVE_INT, "blur every N steps, 0 = never")
    blur_sigma: float = param(0.5, NON_NEGATIVE_NUMBER, "blur sigma")
    seed: int = param(0, NON_NEGATIVE_INT, "noise seed")
    precision: str = param("fp32", PRECISION, PRECISION_HELP)


class ClassViz(Job):
    name = "classviz"
    help = "class visualisations: images the model finds most typical of a class"
    Params = ClassvizParams
    headline_rate = ("hit_rate", "n_hit", "n_done", "top-1 is the requested class: {}")
    inputs = None

    def plan_items(self, params: Any, items: list[Item]) -> list[Item]:
        """One item per class: source ``class:<id>``, label = the class id."""
        if not params.classes:
            raise InvalidSpec("params.classes", "no classes given")
        return [Item(item_id(i), f"{CLASS_PREFIX}{c}", int(c)) for i, c in enumerate(params.classes)]

    def load(self, ctx: WorkContext, item: Item) -> Loaded:
        class_id = parse_uri(item.source).class_id
        if class_id >= ctx.model.num_classes:
            raise InvalidInput(f"class id {class_id} is out of range 0..{ctx.model.num_classes - 1}")
        return Loaded(item, None, class_id)

    def run(self, ctx: WorkContext, batch: Sequence[Loaded]) -> list[Outcome]:
        import torch

        from ascent.shared.kernels import class_visualization
        from ascent.shared.tensors import to_uint8

        p = ctx.spec.params
        assert isinstance(p, ClassvizParams) and ctx.spec.size is not None
        class_ids = [x.label for x in batch]
        images = class_visualization(ctx.model, class_ids, size=ctx.spec.size, **p.arguments("classes"))
        outputs = to_uint8(images)
        # Score what the PNG holds, not the float image.
        with torch.no_grad():
            logits = ctx.model(ctx.tensor(list(outputs)))
        return [
            Outcome(
                x.item,
                {"class_id": c, "score": float(logits[i, c]), "pred": int(logits[i].argmax())},
                outputs[i],
            )
            for i, (x, c) in enumerate(zip(batch, class_ids, strict=True))
        ]

    def summarize(self, spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
        done = [r for r in rows if r["status"] == DONE]
        hits = sum(r.get("pred") is not None and r.get("pred") == r.get("class_id") for r in done)
        return {
            "n_hit": hits,
            "hit_rate": rate(hits, len(done)),
            "images": [prediction_entry(r, classes, "class_id", "class_name") for r in done],
        }

    def tile(self, row: Mapping[str, Any], media: Media, classes: ClassCatalog, shared: Any) -> str:
        hit = row.get("pred") is not None and row.get("pred") == row.get("class_id")
        caption = (
            f"<b>{html.esc(classes.label(row.get('class_id')))}</b><br>score {html.num(row.get('score'))} · "
            f"pred {html.esc(classes.label(row.get('pred')))} {html.mark(hit, 'top-1', 'top-1')}<br>"
            f"<span class=muted>{html.esc(row['item_id'])}</span> {html.link(row.get('output'), 'full size')}"
        )
        return html.tile([html.figure(media.output(row["item_id"]), "generated")], caption)


JOB = ClassViz()
