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

from ascent.producer.collector import Progress, progress
from ascent.shared.control import request_cancel
from ascent.shared.errors import InvalidInput, NotFoundInStore, StoreError
from ascent.shared.keys import RUNS, RunKeys
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


def read_run(store: Store, run_id: str) -> RunRow:
    """Raises UnknownRun (a NotFoundInStore) when the store has no such run."""
    keys = RunKeys(run_id)
    state = progress(store, run_id)
    spec = store.get_json(keys.spec) if store.exists(keys.spec) else {}
    created = Manifest.from_dict(store.get_json(keys.manifest)).created_at
    kind, model = str(spec.get("kind", "?")), str(spec.get("model", "?"))
    return RunRow(run_id, kind, model, created, state, run_state(store, state))


def list_runs(store: Store) -> list[RunRow]:
    """Every run of the store, newest first (runs without a creation time last, by id). A run folder
    whose manifest is missing or unreadable (a submit that failed early) is left out."""
    rows = []
    for run_id in store.folders(f"{RUNS}/"):
        try:
            rows.append(read_run(store, run_id))
        except (InvalidInput, NotFoundInStore, StoreError, ValueError, AttributeError):
            continue
    rows.sort(key=lambda r: r.run_id, reverse=True)
    rows.sort(key=lambda r: r.created_at or 0.0, reverse=True)
    return rows


HEADERS = ("RUN", "KIND", "MODEL", "CREATED (UTC)", "ITEMS", "DONE", "FAILED", "CANCELLED", "PENDING", "STATE")


def format_runs(rows: Sequence[RunRow]) -> str:
    """An aligned table, one run a line, under a header."""
    table: list[tuple[str, ...]] = [HEADERS]
    for r in rows:
        p = r.progress
        created = "-" if r.created_at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at))
        numbers = (p.total, p.done, p.failed, p.cancelled, p.pending)
        table.append((r.run_id, r.kind, r.model, created, *(str(n) for n in numbers), r.state))
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)


def cancel_run(store: Store, run_id: str) -> str:
    """Cancel run ``run_id`` (the marker every worker checks); returns what happened, in a sentence.
    A finished run, or one already cancelled, is left as it is."""
    state = progress(store, run_id)
    counts = f"{state.done} done, {state.failed} failed, {state.cancelled} cancelled"
    if state.complete:
        return f"run {run_id} has already finished ({counts}): nothing to cancel, nothing changed"
    if state.cancel_requested:
        return f"run {run_id} was already cancelled ({counts}, {state.pending} still to be recorded cancelled)"
    request_cancel(store, run_id, by=f"{getpass.getuser()}@{socket.gethostname()}")
    return (
        f"run {run_id}: cancelled; the {state.finished} items recorded are kept, the workers record the "
        f"{state.pending} others cancelled (`ascent collect {run_id} --wait` collects it)"
    )
