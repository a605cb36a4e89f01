"""``fool``: adversarial images. Each image is pushed until the model predicts the target class (or,
untargeted, any class but its true one), with per-image early stopping; outputs are 8-bit exact (the
stored PNG is classified as recorded). Kernel: ``ascent.shared.kernels.fool``.

Threat models: ``--norm l2-unbounded`` (the reference's normalised-gradient ascent, no budget) or the
ε-bounded ``linf``/``l2`` PGD of the peers (FGSM, MI-FGSM with ``--momentum``), whose outputs stay
inside the ε-ball around the 8-bit original. Several ``--eps`` values are an ε sweep: the producer
plans one item per (image, ε), ids ``<image id>-e<k>`` and the ε in the item's ``variant``; the
summary gives success and robust accuracy per ε.

``--save-format jpeg:Q|webp:Q``: outputs stored in that codec, the success check (and the ε budget)
on the image after encoding and decoding (``ascent.shared.codecs``). ``--target all`` or a class list:
one item per (image, class), ids ``<image id>-t<class>``, and a targetability matrix
(``fool_matrix``). ``--until-ci W``: items in a seeded random order; workers skip the shards once the
run is precise enough (``fool_precision``).

Per item: ``fooled``, ``iterations`` (steps to fool; -1 never), ``target``, ``pred_before``,
``pred_after``, ``l2`` and ``linf`` (perturbation in [0, 1] pixel units); with a budget ``eps`` too,
and ``restart`` (which restart gave the image) with ``--random-start``.
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ascent.shared import html
from ascent.shared.catalog import FOOL_LOSSES, FOOL_NORMS, FOOL_TARGET_MODES, PRECISIONS, ClassCatalog
from ascent.shared.codecs import SaveFormat, is_save_format, parse_save_format, tensor_roundtrip
from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.jobs import fool_matrix
from ascent.shared.jobs import fool_precision as precision
from ascent.shared.jobs import fool_report as report
from ascent.shared.jobs.base import Job, Loaded, Media, Outcome, WorkContext, images_of
from ascent.shared.params import (
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    OPTIONAL_CLASS,
    OPTIONAL_FRACTION_LIST,
    OPTIONAL_POSITIVE_FRACTION,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    SWITCH,
    JobParams,
    Kind,
    one_of,
    param,
)
from ascent.shared.records import SKIPPED
from ascent.shared.spec import Item, JobSpec
from ascent.shared.stats import finite

ALL = "all"  # --target all: every class of the model (a targetability matrix)


def _class_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _target_text(text: str) -> str | list[str]:
    """``--target`` text: one class or mode, or several classes comma-separated (``3,5,cat``)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return parts if len(parts) > 1 else text.strip()


TARGET = dataclasses.replace(
    OPTIONAL_CLASS,
    meaning="a class id, a list of class ids, 'all', 'random', 'least-likely', 'per-item', or null (untargeted)",
    check=lambda v: (
        v is None
        or v in (*FOOL_TARGET_MODES, ALL)
        or _class_id(v)
        or (isinstance(v, tuple) and len(v) > 0 and len(set(v)) == len(v) and all(_class_id(c) for c in v))
    ),
    parse=_target_text,
    sequence=True,
    aliases=(("none", None), ("untargeted", None), *((mode, mode) for mode in (*FOOL_TARGET_MODES, ALL))),
)
UNTIL_CI = Kind(
    "null or a number in (0, 0.5)",
    lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 0.5),
    float,
    metavar="W",
)
SAVE_FORMAT = Kind("png, jpeg:Q or webp:Q (quality Q in 1..100)", is_save_format, str, metavar="FORMAT")
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
        "manifest's target column); several classes (3,5,cat) or all: every image towards each of them, "
        "item ids <image>-t<class>, and an images × classes table in the report",
        cli_required=True,
        flags=(("--untargeted", "untargeted", "move away from the true class where known, else the prediction"),),
    )
    lr: float = param(1.0, POSITIVE_NUMBER, "step size of l2-unbounded (in normalised space, as the reference)")
    max_iters: int = param(100, POSITIVE_INT, "steps before giving up (linf/l2: the whole budget)", limit="max_iters")
    extra_iters: int = param(2, NON_NEGATIVE_INT, "steps after the model is fooled", limit="max_iters")
    loss: str = param(
        "score",
        one_of(*FOOL_LOSSES),
        "what to ascend: the target's raw score (the reference), ce = log_softmax = its log-probability "
        "(the peers' PGD: fewer steps, also pushes the other classes down), or the C&W logit margin",
    )
    precision: str = param("fp32", PRECISION, PRECISION_HELP)
    norm: str = param(
        FOOL_NORMS[0],
        one_of(*FOOL_NORMS),
        "threat model: l2-unbounded (the reference, no budget) or PGD inside the linf / l2 ball of --eps",
    )
    eps: tuple[float, ...] | None = param(
        None,
        OPTIONAL_FRACTION_LIST,
        "budget in [0, 1] pixel units for linf/l2 (fractions accepted: 8/255); several = an ε sweep, one item "
        "per image and ε",
    )
    step_size: float | None = param(
        None,
        OPTIONAL_POSITIVE_FRACTION,
        "linf/l2 step in pixel units (default ε/4); FGSM = --norm linf --max-iters 1 --step-size EPS",
    )
    random_start: bool = param(False, SWITCH, "linf/l2: start uniformly in the ball (seeded by --seed)")
    restarts: int = param(1, POSITIVE_INT, "attack images not fooled again from a new random start, up to N times")
    momentum: float = param(0.0, NON_NEGATIVE_NUMBER, "MI-FGSM momentum μ (0 = PGD; the peers use 1.0)")
    early_stop: bool = param(True, SWITCH, "--no-early-stop: every image runs the whole budget")
    seed: int = param(0, NON_NEGATIVE_INT, "seed of the random starts and of --target random (per item)")
    until_ci: float | None = param(
        None,
        UNTIL_CI,
        "stop once the 95 %% interval of the success rate (and of robust accuracy when labelled) is within "
        "±W: items run in a random order (seeded by --seed), the rest are recorded skipped",
    )
    save_format: str = param(
        "png",
        SAVE_FORMAT,
        "how outputs are stored: png (8-bit exact), jpeg:Q or webp:Q; an item succeeds only if its image "
        "after encoding and decoding still does (and is inside the ε-ball), else stepping goes on",
    )

    @property
    def bounded(self) -> bool:
        return self.norm != "l2-unbounded"

    def check(self) -> None:
        if self.bounded:
            if self.eps is None:
                raise InvalidSpec("params.eps", f"required with norm {self.norm!r} (e.g. 8/255)")
            if len(set(self.eps)) != len(self.eps):
                raise InvalidSpec("params.eps", f"{list(self.eps)} repeats a value")
            if self.norm == "linf" and max(self.eps) > 1:
                raise InvalidSpec("params.eps", f"an L∞ budget is at most 1 (pixel units), got {max(self.eps)}")
        else:
            for name in ("eps", "step_size"):
                if getattr(self, name) is not None:
                    raise InvalidSpec(f"params.{name}", "needs norm 'linf' or 'l2' (l2-unbounded steps by lr)")
            if self.random_start:
                raise InvalidSpec("params.random_start", "needs norm 'linf' or 'l2' (a ball to start in)")
        if self.restarts > 1 and not self.random_start:
            raise InvalidSpec("params.restarts", "more than one restart needs random_start")
        if self.until_ci is not None and (isinstance(self.target, tuple) or self.target == ALL):
            raise InvalidSpec("params.until_ci", "one interval cannot stand for several targets: give one --target")
        if self.until_ci is not None and self.eps is not None and len(self.eps) > 1:
            raise InvalidSpec("params.until_ci", "one interval cannot stand for an ε sweep: give one --eps")


def item_seed(seed: int, item_id: str) -> int:
    """The random-start seed of one item: from the run's seed and the item id only, so a resharded or
    redelivered item draws the same start."""
    return seed * 2**32 + zlib.crc32(item_id.encode())


def _variant_eps(item: Item, params: FoolParams) -> float:
    """The ε an item runs at: its variant's (planned by ``plan_items``), else the run's only one."""
    assert params.eps is not None
    eps = item.variant.get("eps", params.eps[0])
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or finite(eps) is None or eps < 0:
        raise InvalidInput(f"item {item.item_id}: variant eps {eps!r} is not a non-negative number")
    return float(eps)


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

    def output_format(self, params: JobParams) -> SaveFormat:
        assert isinstance(params, FoolParams)
        return parse_save_format(params.save_format)

    def plan_run_items(self, spec: JobSpec, items: list[Item]) -> list[Item]:
        """``--target all``: the model's classes, which only the spec knows (InvalidSpec without them)."""
        params = spec.params
        assert isinstance(params, FoolParams)
        if params.target == ALL:
            if spec.num_classes is None:
                raise InvalidSpec(
                    "params.target", "all: the model's class count is not known here; give the classes (0,1,2,...)"
                )
            params = params.replace(target=tuple(range(spec.num_classes)))
        return self.plan_items(params, items)

    def plan_items(self, params: JobParams, items: list[Item]) -> list[Item]:
        """With a budget, each image once per ε (image-major), the ε in the item's variant; ids stay the
        image's with one ε and become ``<image id>-e<k>`` (k: the ε's position in ``--eps``) with several.
        ``--target per-item`` needs every item's target (InvalidSpec naming the first without)."""
        assert isinstance(params, FoolParams)
        if params.target == "per-item":
            missing = [i for i in items if i.target is None]
            if missing:
                raise InvalidSpec(
                    "params.target",
                    f"per-item: {missing[0].path or missing[0].source} has no target (give a .csv or .jsonl of "
                    "path,label,target)",
                )
        if isinstance(params.target, tuple):  # a targetability matrix: (image, class) pairs, image-major
            items = [
                dataclasses.replace(i, item_id=f"{i.item_id}-t{c}", target=c) for i in items for c in params.target
            ]
        if params.bounded and params.eps is not None:
            sweep = len(params.eps) > 1
            items = [
                dataclasses.replace(item, item_id=f"{item.item_id}-e{k}" if sweep else item.item_id, variant={"eps": e})
                for item in items
                for k, e in enumerate(params.eps)
            ]
        if params.until_ci is not None:  # a random sample first, whenever the run stops
            items = list(items)
            random.Random(f"until-ci:{params.seed}").shuffle(items)
        return items

    def stops_early(self, spec: JobSpec) -> bool:
        assert isinstance(spec.params, FoolParams)
        return spec.params.until_ci is not None

    def stop_reason(self, spec: JobSpec, rows: Sequence[Mapping[str, Any]]) -> str | None:
        width = spec.params.until_ci
        return precision.REASON if width is not None and precision.reached(rows, width) else None

    def run(self, ctx: WorkContext, batch: Sequence[Loaded]) -> list[Outcome]:
        from ascent.shared.kernels import fool
        from ascent.shared.tensors import to_uint8

        p = ctx.spec.params
        assert isinstance(p, FoolParams)
        images = ctx.tensor(images_of(batch))
        mode = "per-item" if isinstance(p.target, tuple) or p.target == ALL else p.target  # planned per item
        targets = choose_targets(ctx.model, images, batch, mode, p.seed)
        fmt = self.output_format(p)
        eps = [_variant_eps(x.item, p) for x in batch] if p.bounded else None
        result = fool(
            ctx.model,
            images,
            targets,
            **p.arguments("target", "eps", "seed", "save_format", "until_ci"),
            eps=eps,
            codec=None if fmt.lossless else tensor_roundtrip(fmt),
            seed=[item_seed(p.seed, x.item.item_id) for x in batch],
            labels=[x.label for x in batch],
        )
        outputs = to_uint8(result.images)
        outcomes = []
        for i, x in enumerate(batch):
            fields: dict[str, Any] = {
                "fooled": bool(result.fooled[i]),
                "iterations": int(result.iterations[i]),
                "target": None if targets is None else targets[i],
                "pred_before": int(result.pred_before[i]),
                "pred_after": int(result.pred_after[i]),
                "l2": float(result.l2[i]),
                "linf": float(result.linf[i]),
            }
            fields.update({} if eps is None else {"eps": eps[i]})
            fields.update({"restart": int(result.restart[i])} if p.random_start and result.restart is not None else {})
            outcomes.append(Outcome(x.item, fields, outputs[i], x.image))
        return outcomes

    def summarize(self, spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
        summary = report.summarize(spec, [r for r in rows if r["status"] != SKIPPED], classes)
        if spec.params.until_ci is not None:
            summary["precision"] = precision.summary(rows, spec.params.until_ci)
        target = spec.params.target
        if target == ALL and spec.num_classes is not None:
            target = tuple(range(spec.num_classes))
        if isinstance(target, tuple):
            summary["target_mode"] = "matrix"
            summary["targetability"] = fool_matrix.matrix(rows, target)
        return summary

    def summary_lines(self, summary: Mapping[str, Any]) -> list[str]:
        extra = precision.lines(summary["precision"]) if "precision" in summary else []
        if "targetability" in summary:
            table = summary["targetability"]
            fooled = sum(r["n_fooled"] for r in table["rows"])
            extra.append(
                f"targetability: {len(table['rows'])} images × {len(table['classes'])} classes, "
                f"{fooled}/{len(table['rows']) * len(table['classes'])} pairs fooled (table in the report)"
            )
        return report.summary_lines(summary) + extra

    def headline(self, summary: Mapping[str, Any]) -> list[html.Card]:
        stopped = summary.get("precision") or {}
        skipped = [html.Card(str(stopped["n_skipped"]), "skipped (precision reached)")] if stopped else []
        return report.headline(summary) + skipped

    def report_sections(self, summary: Mapping[str, Any], classes: ClassCatalog) -> list[str]:
        extra = [fool_matrix.section(summary["targetability"], classes)] if "targetability" in summary else []
        extra += [precision.section(summary["precision"])] if "precision" in summary else []
        return extra + report.report_sections(summary, classes)

    def tile(self, row: Mapping[str, Any], media: Media, classes: ClassCatalog, shared: Any) -> str:
        return report.tile(row, media, classes)


JOB = Fool()
