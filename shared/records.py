"""Result records: what a worker writes per shard and what the collector reads.

A shard record is the commit marker of a shard: the worker writes every output object first and the
record last, to ``runs/<run_id>/records/<shard_id>.json``. In JSON an item record is one flat object:

    item_id, source, label (true class or null), status ("done" | "failed" | "cancelled": the run was
    cancelled first, ``ascent cancel`` | "skipped": not run, the job's stopping rule said the answer was
    known, ``--until-ci``), error (null or a message
    that names the item and the reason), output (URI of the output image or null), and the job's
    per-item result fields (``Job.result_fields``: e.g. fool's fooled, iterations, pred_after, ...)

Numbers that are not finite never reach a record: they are written as null (strict JSON).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ascent.shared.errors import InvalidInput
from ascent.shared.spec import SPEC_VERSION, Item

DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"  # the run was cancelled before this item finished (``ascent cancel``)
SKIPPED = "skipped"  # recorded without running: the run's precision was reached (fool --until-ci)
STATUSES = (DONE, FAILED, CANCELLED, SKIPPED)
PENDING = "pending"  # a collector row of an item without a record yet
_ITEM_FIELDS = ("item_id", "source", "label", "status", "error", "output")
_SHARD_FIELDS = ("version", "run_id", "shard_id", "kind", "written_at", "items")


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None and tuples by lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class ItemRecord:
    """The outcome of one item. ``result``: the job's per-item fields (empty for a failed item)."""

    item_id: str
    source: str
    label: int | None
    status: str
    error: str | None = None
    output: str | None = None
    result: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def done(cls, item: Item, output: str | None, **result: Any) -> ItemRecord:
        return cls(item.item_id, item.source, item.label, DONE, None, output, json_safe(result))

    @classmethod
    def failed(cls, item: Item, error: str) -> ItemRecord:
        return cls(item.item_id, item.source, item.label, FAILED, error, None)

    @classmethod
    def cancelled(cls, item: Item, reason: str = "the run was cancelled") -> ItemRecord:
        return cls(item.item_id, item.source, item.label, CANCELLED, reason, None)

    @classmethod
    def skipped(cls, item: Item, reason: str) -> ItemRecord:
        return cls(item.item_id, item.source, item.label, SKIPPED, None, None, {"skipped": reason})

    def to_dict(self) -> dict[str, Any]:
        fixed = {name: getattr(self, name) for name in _ITEM_FIELDS}
        return json_safe({**self.result, **fixed})

    @classmethod
    def from_dict(cls, d: Any, where: str = "record") -> ItemRecord:
        if not isinstance(d, Mapping) or not isinstance(d.get("item_id"), str):
            raise InvalidInput(f"{where}: an item record without an item_id")
        if d.get("status") not in STATUSES:
            raise InvalidInput(f"{where}: item {d['item_id']}: status {d.get('status')!r} is not {'/'.join(STATUSES)}")
        result = {k: v for k, v in d.items() if k not in _ITEM_FIELDS}
        label = d.get("label")
        return cls(
            d["item_id"],
            str(d.get("source") or ""),
            label if isinstance(label, int) and not isinstance(label, bool) else None,
            d["status"],
            d.get("error"),
            d.get("output"),
            result,
        )


@dataclass(frozen=True)
class ShardRecord:
    """Every item of one shard, and ``info`` about the attempt that ran it (worker, device, seconds...)."""

    run_id: str
    shard_id: str
    kind: str
    items: tuple[ItemRecord, ...]
    written_at: float = field(default_factory=time.time)
    info: Mapping[str, Any] = field(default_factory=dict)
    version: int = SPEC_VERSION

    @property
    def worker(self) -> str | None:
        worker = self.info.get("worker")
        return None if worker is None else str(worker)

    def count(self, status: str) -> int:
        return sum(i.status == status for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        fixed = {
            "version": self.version,
            "run_id": self.run_id,
            "shard_id": self.shard_id,
            "kind": self.kind,
            "written_at": self.written_at,
            "items": [i.to_dict() for i in self.items],
        }
        return json_safe({**self.info, **fixed})

    @classmethod
    def from_dict(cls, d: Any, where: str = "shard record") -> ShardRecord:
        if not isinstance(d, Mapping) or not isinstance(d.get("items"), list):
            raise InvalidInput(f"{where}: not a shard record (expected an object with an 'items' list)")
        written_at = d.get("written_at")
        return cls(
            run_id=str(d.get("run_id")),
            shard_id=str(d.get("shard_id")),
            kind=str(d.get("kind")),
            items=tuple(ItemRecord.from_dict(i, where) for i in d["items"]),
            written_at=float(written_at) if isinstance(written_at, (int, float)) else 0.0,
            info={k: v for k, v in d.items() if k not in _SHARD_FIELDS},
            version=d.get("version", SPEC_VERSION),
        )
