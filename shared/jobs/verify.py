"""``verify``: re-reads every stored output of a finished run of a job that classifies (fool), checks
its sha256 against the run's records (integrity), re-classifies it with the run's model (the claimed
prediction must hold) and with each extra model (victims: their own weights, mean/std and size), and
gives a transfer table: per model, the success rate (targeted: predicts the target; untargeted: not
the true class, else not the clean prediction) over the intact outputs, with 95 % Wilson intervals,
overall and per class (the target's, untargeted the true one's). ``ascent verify RUN_ID --model M``
plans it (``plan``); it runs through the queue like any job, one item per output, sharded.

Per item: ``sha256_ok`` (None: the run recorded no hash), ``sha256``, ``missing``, ``readable``,
``claimed_pred``, ``pred`` (the run's model now), ``claim_holds``, and per model (the run's first,
then the victims) ``preds`` and ``success``. The summary's ``verify`` is also written as verify.json.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ascent.shared import html
from ascent.shared.catalog import ClassCatalog
from ascent.shared.codecs import is_save_format, parse_save_format
from ascent.shared.errors import InvalidInput
from ascent.shared.jobs import verify_report as report
from ascent.shared.jobs.base import Job, Loaded, Media, Outcome, WorkContext
from ascent.shared.keys import RunKeys
from ascent.shared.params import JobParams, Kind, param
from ascent.shared.records import DONE
from ascent.shared.spec import Item, JobSpec


@dataclass(frozen=True)
class Victim:
    """A model the outputs are re-classified with: ``--model`` syntax, its weights, mean/std, size."""

    model: str
    weights: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: int | None = None

    def to_json(self) -> str:
        d: dict[str, Any] = {"model": self.model, "weights": self.weights, "size": self.size}
        d.update({k: None if v is None else list(v) for k, v in (("mean", self.mean), ("std", self.std))})
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: Any) -> Victim:
        """InvalidInput unless ``text`` is a victim's JSON (``to_json``)."""
        try:
            d = json.loads(text)
            triples = {k: None if d.get(k) is None else tuple(float(v) for v in d[k]) for k in ("mean", "std")}
            victim = cls(d["model"], d.get("weights"), triples["mean"], triples["std"], d.get("size"))
        except (TypeError, ValueError, KeyError, AttributeError):
            raise InvalidInput(f"victim {text!r}: not a model description") from None
        size_ok = victim.size is None or (isinstance(victim.size, int) and 8 <= victim.size <= 4096)
        if not isinstance(victim.model, str) or not victim.model or not size_ok:
            raise InvalidInput(f"victim {text!r}: needs a model name and a size 8..4096 (or none)")
        return victim

    @property
    def name(self) -> str:
        return self.model if self.weights in (None, "DEFAULT") else f"{self.model} ({self.weights})"


def _is_victim(text: Any) -> bool:
    try:
        Victim.from_json(text)
    except InvalidInput:
        return False
    return True


def _is_run_id(text: Any) -> bool:
    try:
        RunKeys(text)
    except (InvalidInput, TypeError):
        return False
    return isinstance(text, str)


VICTIMS = Kind(
    "a list of victim models (JSON)", lambda v: isinstance(v, tuple) and all(map(_is_victim, v)), sequence=True
)


@dataclass(frozen=True)
class VerifyParams(JobParams):
    job: ClassVar[str] = "verify"

    source_run: str = param(
        "", Kind("a run id", _is_run_id), "the finished run whose outputs are verified", required=True
    )
    source_format: str = param("png", Kind("png, jpeg:Q or webp:Q", is_save_format), "how its outputs are stored")
    victims: tuple[str, ...] = param((), VICTIMS, "the extra models, each a JSON model description")


@dataclass(frozen=True)
class Stored(Loaded):
    """A stored output as read back: its sha256 (None: missing) and why it cannot be classified."""

    sha256: str | None = None
    problem: str | None = None


def succeeded(pred: int | None, target: int | None, label: int | None, pred_before: int | None) -> bool | None:
    """Targeted: predicts the target; untargeted: not the true class (else not the clean prediction)."""
    if pred is None:
        return None
    if target is not None:
        return pred == target
    away = label if label is not None else pred_before
    return None if away is None else pred != away


class Verify(Job):
    name = "verify"
    help = "re-read a finished run's outputs: hashes, claimed predictions, transfer to other models"
    Params = VerifyParams
    inputs = None
    standalone = False  # planned from a finished run by ``ascent verify RUN_ID``
    ascends = False  # it classifies stored outputs; nothing is optimised
    export_fields = ("sha256_ok", "claim_holds", "pred", "preds", "success")

    @staticmethod
    def plan(source: JobSpec, rows: Sequence[Mapping[str, Any]]) -> list[Item]:
        """One item per done output of the source run: the output's URI, its label, target, and in the
        variant what the run claimed (prediction, clean prediction, sha256). InvalidInput when the
        source has no predictions to verify."""
        done = [r for r in rows if r.get("status") == DONE and r.get("output")]
        if not done:
            raise InvalidInput(f"run {source.run_id}: no stored outputs to verify")
        if any(not isinstance(r.get("pred_after"), int) for r in done):
            raise InvalidInput(f"run {source.run_id} ({source.kind}): its records claim no prediction (pred_after)")
        return [
            Item(
                str(r["item_id"]),
                str(r["output"]),
                label=r.get("label"),
                target=r.get("target"),
                variant={
                    "pred": r["pred_after"],
                    "pred_before": r.get("pred_before"),
                    "sha256": r.get("output_sha256"),
                },
            )
            for r in done
        ]

    def load(self, ctx: WorkContext, item: Item) -> Loaded:
        from ascent.shared.images import decode_image, resize_center_crop

        p = ctx.spec.params
        assert isinstance(p, VerifyParams) and ctx.spec.size is not None
        key = RunKeys(p.source_run).output(item.item_id, parse_save_format(p.source_format).ext)
        data = ctx.read_stored(key)
        if data is None:
            return Stored(item, None, item.label, None, "missing")
        digest = hashlib.sha256(data).hexdigest()
        try:
            image = decode_image(data, key, ctx.limits.max_pixels)
        except InvalidInput as exc:
            return Stored(item, None, item.label, digest, f"unreadable: {exc}")
        if image.shape[:2] != (ctx.spec.size, ctx.spec.size):
            image = resize_center_crop(image, ctx.spec.size)
        return Stored(item, image, item.label, digest)

    def run(self, ctx: WorkContext, batch: Sequence[Loaded]) -> list[Outcome]:
        import torch

        from ascent.shared.images import resize_center_crop

        p = ctx.spec.params
        assert isinstance(p, VerifyParams)
        readable = [x for x in batch if x.image is not None]
        models: list[tuple[Any, int | None]] = [(ctx.model, ctx.spec.size)]
        for text in p.victims:
            victim = Victim.from_json(text)
            model = ctx.classifier(victim.model, victim.weights, victim.mean, victim.std)
            models.append((model, victim.size or ctx.spec.size))
        preds: list[dict[str, int]] = []
        for model, size in models:
            images = [
                x.image if size is None or x.image.shape[0] == size else resize_center_crop(x.image, size)
                for x in readable
                if x.image is not None
            ]
            got: dict[str, int] = {}
            for start in range(0, len(images), 32):
                with torch.no_grad():
                    out = model(ctx.tensor(images[start : start + 32])).argmax(1).tolist()
                got.update(zip((x.item.item_id for x in readable[start : start + 32]), out, strict=True))
            preds.append(got)
        outcomes = []
        for x in batch:
            assert isinstance(x, Stored)
            v = x.item.variant
            recorded = v.get("sha256")
            model_preds = [m.get(x.item.item_id) for m in preds]
            claimed = v.get("pred")
            before = v.get("pred_before")
            fields = {
                "sha256": x.sha256,
                "sha256_ok": None if recorded is None or x.sha256 is None else x.sha256 == recorded,
                "missing": x.problem == "missing",
                "readable": x.image is not None,
                "problem": x.problem,
                "target": x.item.target,
                "claimed_pred": claimed,
                "pred": model_preds[0],
                "claim_holds": None if model_preds[0] is None else model_preds[0] == claimed,
                "preds": model_preds,
                "success": [
                    succeeded(q, x.item.target, x.label, before if isinstance(before, int) else None)
                    for q in model_preds
                ],
            }
            outcomes.append(Outcome(x.item, fields, None))
        return outcomes

    def summarize(self, spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
        p = spec.params
        assert isinstance(p, VerifyParams)
        names = [f"{spec.model} (the run's)"] + [Victim.from_json(t).name for t in p.victims]
        return {"verify": report.verification(p.source_run, names, rows, classes)}

    def run_files(self, summary: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"verify.json": summary["verify"]}

    def summary_lines(self, summary: Mapping[str, Any]) -> list[str]:
        return report.summary_lines(summary["verify"])

    def headline(self, summary: Mapping[str, Any]) -> list[html.Card]:
        return report.headline(summary["verify"])

    def report_sections(self, summary: Mapping[str, Any], classes: ClassCatalog) -> list[str]:
        return [report.section(summary["verify"], classes)]

    def tile(self, row: Mapping[str, Any], media: Media, classes: ClassCatalog, shared: Any) -> str:
        ok = row.get("sha256_ok") is not False and row.get("claim_holds") is True
        mark = '<span class="ok">✓</span>' if ok else '<span class="no">✗</span>'
        return html.tile([], f"{mark} <b>{html.esc(row['item_id'])}</b> preds {html.esc(row.get('preds'))}")


JOB = Verify()
