"""``saliency``: saliency maps (Simonyan et al. 2014): which pixels move the class score most. One
backward pass per image, of the true class when it is known, else of the predicted one. Kernel:
``ascent.shared.kernels.saliency``.

Per item: ``pred`` (top-1 on the input), ``class_id`` (the class explained), ``score`` (its logit),
``saliency`` (the map's URI, the same as ``output``: a grayscale PNG normalised per image, its 99th
percentile white).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ascent.shared import html
from ascent.shared.catalog import ClassCatalog
from ascent.shared.jobs.base import Job, Loaded, Media, Outcome, WorkContext, images_of, prediction_entry
from ascent.shared.params import JobParams, one_of, param
from ascent.shared.records import DONE
from ascent.shared.spec import JobSpec
from ascent.shared.stats import rate


@dataclass(frozen=True)
class SaliencyParams(JobParams):
    job: ClassVar[str] = "saliency"

    loss: str = param(
        "cross_entropy",
        one_of("cross_entropy", "score"),
        "what to differentiate: the cross-entropy of the class or its raw score",
    )


class Saliency(Job):
    name = "saliency"
    help = "saliency maps: which pixels move the class score most"
    Params = SaliencyParams
    headline_rate = ("accuracy", "n_correct", "n_labelled", "top-1 correct {} labelled")
    output_field = "saliency"

    def run(self, ctx: WorkContext, batch: Sequence[Loaded]) -> list[Outcome]:
        import torch

        from ascent.shared.kernels import saliency
        from ascent.shared.tensors import map_to_uint8

        p = ctx.spec.params
        assert isinstance(p, SaliencyParams)
        images = ctx.tensor(images_of(batch))
        with torch.no_grad():
            logits = ctx.model(images)
        preds = logits.argmax(1)
        # Explain the true class when it is known, else what the model predicts.
        classes = [x.label if x.label is not None else int(preds[i]) for i, x in enumerate(batch)]
        maps = map_to_uint8(saliency(ctx.model, images, classes, loss=p.loss))
        return [
            Outcome(
                x.item,
                {"pred": int(preds[i]), "class_id": classes[i], "score": float(logits[i, classes[i]])},
                maps[i],
                x.image,
            )
            for i, x in enumerate(batch)
        ]

    def summarize(self, spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
        done = [r for r in rows if r["status"] == DONE]
        labelled = [r for r in done if classes.name(r.get("label")) is not None]
        correct = sum(r.get("pred") == r["label"] for r in labelled)
        return {
            "n_labelled": len(labelled),
            "n_correct": correct,
            "accuracy": rate(correct, len(labelled)),
            "predictions": [prediction_entry(r, classes, "label", "label_name") for r in done],
        }

    def headline(self, summary: Mapping[str, Any]) -> list[html.Card]:
        if summary.get("n_labelled"):
            return super().headline(summary)
        # No labels, so no accuracy: say what the maps show instead of a "-".
        return [html.Card(str(len(summary.get("predictions") or ())), "maps of the predicted class (no labels)")]

    def tile(self, row: Mapping[str, Any], media: Media, classes: ClassCatalog, shared: Any) -> str:
        item_id = row["item_id"]
        figures = [html.figure(media.input(item_id), "original"), html.figure(media.output(item_id), "saliency")]
        caption = (
            f"<b>{html.esc(item_id)}</b> · true {html.esc(classes.label(row.get('label')))}<br>"
            f"pred {html.esc(classes.label(row.get('pred')))} · score {html.num(row.get('score'))}<br>"
            f"{html.source_span(row)} {html.link(row.get('output'), 'full size')}"
        )
        return html.tile(figures, caption)


JOB = Saliency()
