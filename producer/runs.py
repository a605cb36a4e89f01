"""The runs of a store (``ascent runs``) and their states; cancelling one (``ascent cancel``).

A run's state comes from the store alone: ``cancelled`` once its cancel marker is there, ``failed`` when
a worker marked it failed (``failure.json``) or every item failed, ``done`` when every item is recorded,
else ``running``. No torch here.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ascent.producer.collector import Progress, progress, read_manifest
from ascent.producer.progress import shards_running
from ascent.shared.control import request_cancel
from ascent.shared.errors import AlreadyExists, InvalidInput, NotFoundInStore, StoreError
from ascent.shared.keys import RUNS, RunKeys
from ascent.shared.records import ItemRecord, ShardRecord
from ascent.shared.spec import Manifest
from ascent.shared.store import Store

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"


@dataclass(frozen=True)
class RunRow:
    """One run of a store, as ``ascent runs`` lists it."""

    run_id: str
    kind: str
    model: str
    created_at: float | None
    progress: Progress
    state: str


def run_state(store: Store, state: Progress) -> str:
    if state.cancel_requested:
        return CANCELLED
    if store.exists(RunKeys(state.run_id).failure) or (state.complete and state.failed == state.total > 0):
        return FAILED
    return DONE if state.complete else RUNNING


def read_run(store: Store, run_id: str, records: list[dict[str, Any]] | None = None) -> RunRow:
    """Raises UnknownRun (a NotFoundInStore) when the store has no such run. With ``records``, the run's
    record rows read on the way are appended there."""
    keys = RunKeys(run_id)
    state = progress(store, run_id, records)
    spec = store.get_json(keys.spec) if store.exists(keys.spec) else {}
    created = Manifest.from_dict(store.get_json(keys.manifest)).created_at
    kind, model = str(spec.get("kind", "?")), str(spec.get("model", "?"))
    return RunRow(run_id, kind, model, created, state, run_state(store, state))


def list_runs(
    store: Store, limit: int | None = None, records: dict[str, list[dict[str, Any]]] | None = None
) -> list[RunRow]:
    """Every run of the store (the newest ``limit`` with one), newest first (runs without a creation
    time last, by id). A run folder whose manifest is missing or unreadable (a submit that failed
    early) is left out. Only the runs listed have their records read; with ``records``, each one's
    rows are put there by run id."""
    found: list[tuple[str, float]] = []
    for run_id in store.folders(f"{RUNS}/"):
        try:
            created = Manifest.from_dict(store.get_json(RunKeys(run_id).manifest)).created_at
        except (InvalidInput, NotFoundInStore, StoreError, ValueError, AttributeError):
            continue
        found.append((run_id, created or 0.0))
    found.sort(key=lambda r: r[0], reverse=True)
    found.sort(key=lambda r: r[1], reverse=True)
    rows = []
    for run_id, _ in found[:limit]:
        try:
            rows.append(read_run(store, run_id, None if records is None else records.setdefault(run_id, [])))
        except (InvalidInput, NotFoundInStore, StoreError, ValueError, AttributeError):
            continue
    return rows


HEADERS: tuple[str, ...] = ("RUN", "KIND", "MODEL", "CREATED (UTC)", "ITEMS", "DONE", "FAILED", "CANCELLED")
HEADERS += ("SKIPPED", "PENDING", "STATE")


def format_runs(rows: Sequence[RunRow]) -> str:
    """An aligned table, one run a line, under a header."""
    table: list[tuple[str, ...]] = [HEADERS]
    for r in rows:
        p = r.progress
        created = "-" if r.created_at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at))
        numbers = (p.total, p.done, p.failed, p.cancelled, p.skipped, p.pending)
        table.append((r.run_id, r.kind, r.model, created, *(str(n) for n in numbers), r.state))
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)


def cancel_run(store: Store, run_id: str, now: float | None = None) -> str:
    """Cancel run ``run_id`` (the marker every worker checks); returns what happened, in a sentence.
    A finished run, or one already cancelled, is left as it is.

    The shards no worker is running (no record, no progress marker newer than ``FRESH_SECONDS``) are
    recorded cancelled here, each with a create-only write, so the run is complete even when its workers
    are gone or its queue was lost. A worker that was running one after all still records it when it
    finishes (its ``done`` record replaces the cancelled one, and a done item counts over a cancelled one)."""
    state = progress(store, run_id)
    counts = f"{state.done} done, {state.failed} failed, {state.cancelled} cancelled, {state.skipped} skipped"
    if state.cancel_requested:
        return f"run {run_id} was already cancelled ({counts}, {state.pending} still to be recorded cancelled)"
    if state.complete:
        return f"run {run_id} has already finished ({counts}): nothing to cancel, nothing changed"
    request_cancel(store, run_id, by=f"{getpass.getuser()}@{socket.gethostname()}")
    recorded = record_idle_shards_cancelled(store, run_id, time.time() if now is None else now)
    running = state.pending - recorded
    tail = (
        f"the workers running the other {running} record them cancelled (if they are gone, "
        f"`ascent resume {run_id}` finishes recording it)"
        if running
        else "the run is complete"
    )
    return (
        f"run {run_id}: cancelled; the {state.finished} items recorded are kept, {recorded} items no worker "
        f"was running are recorded cancelled, {tail} (`ascent collect {run_id} --wait` collects it)"
    )


def record_idle_shards_cancelled(store: Store, run_id: str, now: float) -> int:
    """Record cancelled, create-only, every shard of the run with no record and no fresh progress
    marker; returns the number of items so recorded."""
    keys = RunKeys(run_id)
    kind = str(store.get_json(keys.spec).get("kind", "?"))
    running = shards_running(store, run_id, now)
    n = 0
    for shard in read_manifest(store, run_id).shards:
        if shard.shard_id in running:
            continue
        items = tuple(ItemRecord.cancelled(i) for i in shard.items)
        record = ShardRecord(run_id, shard.shard_id, kind, items, info={"cancelled_by": "ascent cancel"})
        try:
            store.create_json(keys.record(shard.shard_id), record.to_dict())
        except AlreadyExists:
            continue
        n += len(shard.items)
    return n
