"""``fool``: adversarial images. Each image is pushed until the model predicts the target class (or
any other class, untargeted), with per-image early stopping; outputs are 8-bit exact (the stored PNG
is classified as recorded). Kernel: ``ascent.shared.kernels.fool``.

Per item: ``fooled``, ``iterations`` (steps to fool; -1 never), ``target``, ``pred_before``,
``pred_after``, ``l2`` and ``linf`` (perturbation in [0, 1] pixel units).
"""

from __future__ import annotations

import dataclasses
import io
import random
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ascent.shared import html
from ascent.shared.catalog import PRECISIONS, ClassCatalog
from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.jobs.base import Job, Loaded, Media, Outcome, WorkContext, images_of
from ascent.shared.params import (
    NON_NEGATIVE_INT,
    OPTIONAL_CLASS,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    JobParams,
    one_of,
    param,
)
from ascent.shared.records import DONE, FAILED, PENDING
from ascent.shared.spec import Item, JobSpec
from ascent.shared.stats import iteration_stats, rate, size_stats, wilson_interval

TARGET_MODES = ("random", "least-likely", "per-item")
TARGET = dataclasses.replace(
    OPTIONAL_CLASS,
    meaning="a class id, 'random', 'least-likely', 'per-item', or null (untargeted)",
    check=lambda v: v is None or v in TARGET_MODES or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    aliases=(("none", None), ("untargeted", None), *((mode, mode) for mode in TARGET_MODES)),
)
PRECISION = one_of(*PRECISIONS)
PRECISION_HELP = (
    "fp32 (the reference) or bf16 autocast of the network while stepping: faster on GPUs and on CPUs "
    "with AMX/AVX512-BF16 (docs/benchmarks.md); results differ slightly"
)


@dataclass(frozen=True)
class FoolParams(JobParams):
    job: ClassVar[str] = "fool"

    target: int | str | None = param(
        None,
        TARGET,
        "target class: an id or a name of the model's classes; random (seeded by --seed: never the true "
        "nor the predicted class), least-likely (the clean image's lowest score) or per-item (the input "
        "manifest's target column)",
        cli_required=True,
        flags=(("--untargeted", "untargeted", "move away from the true class where known, else the prediction"),),
    )
    seed: int = param(0, NON_NEGATIVE_INT, "seed of --target random")
    lr: float = param(1.0, POSITIVE_NUMBER, "step size (in normalised space, as the reference)")
    max_iters: int = param(100, POSITIVE_INT, "steps before giving up", limit="max_iters")
    extra_iters: int = param(2, NON_NEGATIVE_INT, "steps after the model is fooled", limit="max_iters")
    loss: str = param(
        "score",
        one_of("score", "log_softmax"),
        "what to ascend: the target's raw score (the reference) or its log-probability "
        "(fewer steps: also pushes the other classes down)",
    )
    precision: str = param("fp32", PRECISION, PRECISION_HELP)


def _fooled_iterations(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    return [
        r["iterations"]
        for r in rows
        if r.get("fooled") is True and isinstance(r.get("iterations"), int) and r["iterations"] >= 0
    ]


def _breakdown(rows: list[dict[str, Any]], key: str, classes: ClassCatalog) -> dict[str, dict[str, Any]]:
    """Fool results grouped by the class id in ``key`` (rows without one are left out)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if classes.name(row.get(key)) is not None:
            groups.setdefault(row[key], []).append(row)
    out = {}
    for class_id in sorted(groups):
        done = [r for r in groups[class_id] if r["status"] == DONE]
        fooled = [r for r in done if r.get("fooled") is True]
        iterations = _fooled_iterations(fooled)
        out[str(class_id)] = {
            "name": classes.name(class_id),
            "n": len(done),
            "n_failed": sum(r["status"] == FAILED for r in groups[class_id]),
            "n_fooled": len(fooled),
            "fooling_rate": rate(len(fooled), len(done)),
            "median_iterations": statistics.median(iterations) if iterations else None,
        }
    return out


def perturbation_png(original: bytes, adversarial: bytes) -> tuple[bytes, int] | None:
    """|adversarial - original| per channel, scaled so its maximum maps to 255, as PNG bytes, with the
    maximum in 8-bit steps (0 when identical). None if either is unreadable or their sizes differ."""
    a, b = html.open_image(original), html.open_image(adversarial)
    if a is None or b is None or a.size != b.size:
        return None
    diff = np.abs(np.asarray(b.convert("RGB"), dtype=np.int16) - np.asarray(a.convert("RGB"), dtype=np.int16))
    peak = int(diff.max())
    scaled = np.rint(diff * (255.0 / peak)).astype(np.uint8) if peak else diff.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(scaled, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), peak


def _towards(summary: Mapping[str, Any]) -> str:
    """Where the images were pushed: "towards 6 stingray", "towards 3 random targets", "away from ..."."""
    mode = summary.get("target_mode")
    if mode in TARGET_MODES:
        return f"towards {len(summary['targets'])} {mode} targets"
    if mode == "untargeted":
        return "away from the true class" if summary.get("n_labelled") else "away from the clean prediction"
    return "towards " + (", ".join(f"{t['class_id']} {t['name']}" for t in summary["targets"]) or "any other class")


def _accuracy(rows: list[dict[str, Any]], field: str) -> float | None:
    """Share of labelled rows whose ``field`` (a prediction) is the label; None without labels."""
    labelled = [r for r in rows if isinstance(r.get("label"), int)]
    return rate(sum(r.get(field) == r["label"] for r in labelled), len(labelled))


def _confusions(rows: list[dict[str, Any]], classes: ClassCatalog, top: int = 10) -> list[dict[str, Any]]:
    """The most frequent (true class -> prediction after) pairs among labelled rows that moved away."""
    pairs = Counter(
        (r["label"], r["pred_after"])
        for r in rows
        if isinstance(r.get("label"), int) and isinstance(r.get("pred_after"), int) and r["pred_after"] != r["label"]
    )
    return [
        {"label": a, "label_name": classes.name(a), "pred_after": b, "pred_name": classes.name(b), "n": n}
        for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    ]


def choose_targets(model: Any, images: Any, batch: Sequence[Loaded], mode: Any, seed: int) -> list[int] | None:
    """One target per item (None: untargeted). ``least-likely``: the clean image's lowest-scoring class;
    ``random``: a class drawn from (seed, item id), never the true class nor the clean prediction, so
    an item gets the same target however the run is sharded; ``per-item``: the manifest's."""
    if mode is None:
        return None
    if isinstance(mode, int):
        return [mode] * len(batch)
    if mode == "per-item":
        if any(x.item.target is None for x in batch):
            raise InvalidInput("--target per-item: an item of this shard has no target in the manifest")
        return [int(x.item.target) for x in batch if x.item.target is not None]
    import torch

    from ascent.shared.kernels import quantize

    with torch.no_grad():
        logits = model(quantize(images))
    if mode == "least-likely":
        return [int(c) for c in logits.argmin(1)]
    chosen = []
    for x, pred in zip(batch, logits.argmax(1).tolist(), strict=True):
        allowed = [c for c in range(logits.shape[1]) if c not in (pred, x.label)]
        chosen.append(random.Random(f"{seed}:{x.item.item_id}").choice(allowed))
    return chosen


class Fool(Job):
    name = "fool"
    help = "adversarial images: each image pushed until the model predicts the target class"
    Params = FoolParams
    export_fields = ("target", "pred_before", "pred_after", "fooled", "iterations", "l2", "linf")

    def exported(self, row: Mapping[str, Any]) -> bool:
        return row.get("fooled") is True

    def plan_items(self, params: Any, items: list[Item]) -> list[Item]:
        if params.target == "per-item":
            missing = [i for i in items if i.target is None]
            if missing:
                raise InvalidSpec(
                    "params.target",
                    f"per-item: {missing[0].path or missing[0].source} has no target (give a .csv or .jsonl of "
                    "path,label,target)",
                )
        return items

    def run(self, ctx: WorkContext, batch: Sequence[Loaded]) -> list[Outcome]:
        from ascent.shared.kernels import fool
        from ascent.shared.tensors import to_uint8

        p = ctx.spec.params
        assert isinstance(p, FoolParams)
        images = ctx.tensor(images_of(batch))
        targets = choose_targets(ctx.model, images, batch, p.target, p.seed)
        labels = [x.label for x in batch] if targets is None else None
        result = fool(ctx.model, images, targets, labels=labels, **p.arguments("target", "seed"))
        outputs = to_uint8(result.images)
        return [
            Outcome(
                x.item,
                {
                    "fooled": bool(result.fooled[i]),
                    "iterations": int(result.iterations[i]),
                    "target": None if targets is None else targets[i],
                    "pred_before": int(result.pred_before[i]),
                    "pred_after": int(result.pred_after[i]),
                    "l2": float(result.l2[i]),
                    "linf": float(result.linf[i]),
                },
                outputs[i],
                x.image,
            )
            for i, x in enumerate(batch)
        ]

    def summarize(self, spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
        spec_target = spec.params.target
        fixed = spec_target if isinstance(spec_target, int) else None
        # A failed record carries no target: it was aimed at the spec's.
        rows = [{**r, "target": r.get("target", fixed)} for r in rows if r["status"] != PENDING]
        done = [r for r in rows if r["status"] == DONE]
        fooled = [r for r in done if r.get("fooled") is True]
        targets = sorted({r["target"] for r in rows if classes.name(r["target"]) is not None})
        interval = wilson_interval(len(fooled), len(done))
        return {
            "target": spec_target,
            "target_mode": "untargeted" if spec_target is None else "class" if fixed is not None else spec_target,
            "target_name": classes.name(fixed),
            "targets": [{"class_id": t, "name": classes.name(t)} for t in targets],
            "n_fooled": len(fooled),
            "fooling_rate": rate(len(fooled), len(done)),
            "success_rate": rate(len(fooled), len(done)),
            "success_rate_ci95": None if interval is None else list(interval),
            "n_labelled": sum(isinstance(r.get("label"), int) for r in done),
            "clean_accuracy": _accuracy(done, "pred_before"),
            "robust_accuracy": _accuracy(done, "pred_after"),
            "confusions": _confusions(done, classes),
            "iterations": iteration_stats(_fooled_iterations(fooled)),
            "l2": size_stats([r.get("l2") for r in fooled]),
            "linf": size_stats([r.get("linf") for r in fooled]),
            "l2_pixels": size_stats([r["l2"] * 255 for r in fooled if isinstance(r.get("l2"), (int, float))]),
            "linf_pixels": size_stats([r["linf"] * 255 for r in fooled if isinstance(r.get("linf"), (int, float))]),
            "per_target": _breakdown(rows, "target", classes),
            "per_true_class": _breakdown(rows, "label", classes),
        }

    def summary_lines(self, summary: Mapping[str, Any]) -> list[str]:
        s, num = summary, html.num
        it, pct = s["iterations"], html.pct
        ci = s.get("success_rate_ci95")
        interval = f" (95% interval {pct(ci[0])}–{pct(ci[1])})" if ci else ""
        lines = [
            f"fooled {s['n_fooled']}/{s['n_done']} ({pct(s['fooling_rate'])}) {_towards(s)}{interval}",
            f"iterations to fool: median {num(it['median'])}, p90 {num(it['p90'])}, max {num(it['max'])}",
            f"perturbation (fooled): L2 median {num(s['l2']['median'])} max {num(s['l2']['max'])}, "
            f"Linf median {num(s['linf']['median'])} max {num(s['linf']['max'])} "
            f"(in 8-bit steps: Linf median {num(s['linf_pixels']['median'])})",
        ]
        if s.get("n_labelled"):
            lines.append(
                f"labelled {s['n_labelled']}: clean accuracy {pct(s['clean_accuracy'])}, "
                f"robust accuracy {pct(s['robust_accuracy'])}"
            )
        return lines

    def headline(self, summary: Mapping[str, Any]) -> list[html.Card]:
        s, num = summary, html.num
        it, l2, linf = s["iterations"], s["l2"], s["linf"]
        rate_label = f"fooled {s['n_fooled']} of {s['n_done']}, {html.esc(_towards(s))}"
        cards = [
            html.Card(html.pct(s["fooling_rate"]), rate_label, big=True),
            html.Card(f"{num(it['median'])} / {num(it['p90'])} / {num(it['max'])}", "iterations median / p90 / max"),
            html.Card(f"{num(l2['median'])} / {num(l2['max'])}", "L2 median / max (fooled)"),
            html.Card(f"{num(linf['median'])} / {num(linf['max'])}", "L∞ median / max (fooled)"),
        ]
        if s.get("n_labelled"):
            cards.append(html.Card(html.pct(s["clean_accuracy"]), f"clean accuracy ({s['n_labelled']} labelled)"))
            cards.append(html.Card(html.pct(s["robust_accuracy"]), "robust accuracy (after the attack)"))
        return cards

    def report_sections(self, summary: Mapping[str, Any], classes: ClassCatalog) -> list[str]:
        hist = summary["iterations"]["histogram"]
        return [
            "<h2>Iterations to fool</h2>" + html.histogram_svg(hist["bins"], hist["counts"]),
            self._breakdown_table("Per target class", summary["per_target"], classes),
            self._breakdown_table("Per true class", summary["per_true_class"], classes),
            self._confusions_table(summary.get("confusions") or [], classes),
        ]

    @staticmethod
    def _confusions_table(confusions: Sequence[Mapping[str, Any]], classes: ClassCatalog) -> str:
        if not confusions:
            return ""
        rows = [
            [html.esc(classes.label(c["label"])), html.esc(classes.label(c["pred_after"])), str(c["n"])]
            for c in confusions
        ]
        table = html.table(["true class", "predicted after the attack", "images"], rows, numeric=[False, False, True])
        return "<h2>Most frequent confusions</h2>" + table

    @staticmethod
    def _breakdown_table(title: str, groups: Mapping[str, Mapping[str, Any]], classes: ClassCatalog) -> str:
        if not groups:
            return ""
        rows = [
            [
                html.esc(classes.label(int(cid))),
                str(g["n"]),
                str(g["n_fooled"]),
                html.pct(g["fooling_rate"]),
                html.num(g["median_iterations"]),
                str(g["n_failed"]),
            ]
            for cid, g in sorted(groups.items(), key=lambda kv: int(kv[0]))
        ]
        headers = ["class", "images", "fooled", "rate", "median iterations", "failed"]
        return f"<h2>{html.esc(title)}</h2>" + html.table(headers, rows, numeric=[False, *[True] * 5])

    def tile(self, row: Mapping[str, Any], media: Media, classes: ClassCatalog, shared: Any) -> str:
        item_id = row["item_id"]
        original, adversarial = media.input(item_id), media.output(item_id)
        diff = perturbation_png(original, adversarial) if original and adversarial else None
        if diff is None:
            perturbation = html.figure(None, "perturbation", "needs both images")
        else:
            png, peak = diff
            perturbation = html.figure(png, f"|Δ| ×{255 / peak:.0f} (max {peak}/255)" if peak else "|Δ| = 0")
        label = classes.label
        caption = (
            f"<b>{html.esc(item_id)}</b> · true {html.esc(label(row.get('label')))}<br>"
            f"pred {html.esc(label(row.get('pred_before')))} → {html.esc(label(row.get('pred_after')))}<br>"
            f"{html.mark(row.get('fooled') is True, 'fooled', 'not fooled')} · "
            f"{html.plural(row.get('iterations'), 'iteration')} · L2 {html.num(row.get('l2'))} · "
            f"L∞ {html.num(row.get('linf'))}<br>{html.source_span(row)} {html.link(row.get('output'), 'full size')}"
        )
        return html.tile(
            [html.figure(original, "original"), html.figure(adversarial, "adversarial"), perturbation], caption
        )


JOB = Fool()
