"""Following a run from the store: a progress bar until every item is recorded, and status lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ascent.producer.collector import Progress, progress
from ascent.shared.errors import AscentError
from ascent.shared.keys import RunKeys
from ascent.shared.store import Store

POLL_SECONDS = 0.5
STALL_SECONDS = 10.0


class RunTimeout(AscentError):
    """Waiting for a run took longer than --timeout."""


class RunFailed(AscentError):
    """A worker found that the whole run cannot go on (e.g. its model does not load)."""


def check_run_failure(store: Store, run_id: str) -> None:
    """Raise RunFailed with the reason when the run is marked failed (``failure.json``)."""
    key = RunKeys(run_id).failure
    if store.exists(key):
        error = store.get_json(key).get("error")
        raise RunFailed(f"run {run_id} failed: {error}")


def wait_for_run(
    store: Store,
    run_id: str,
    *,
    check: Callable[[], None] | None = None,
    timeout: float | None = None,
    poll: float = POLL_SECONDS,
) -> Progress:
    """Poll the store's records with a progress bar until every item is recorded.

    ``check`` runs each round (the embedded cluster raises there when a worker died). When nothing has
    moved for ``STALL_SECONDS`` the store is probed, so a full or read-only store shows as such (work
    waits for it) instead of as items pending for ever. Raises RunTimeout."""
    from tqdm import tqdm

    started = last_move = last_probe = time.monotonic()
    state = progress(store, run_id)
    problem: str | None = None
    with tqdm(
        total=state.total,
        unit="item",
        desc=run_id,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 5.0,
    ) as bar:
        while True:
            now = time.monotonic()
            if state.finished != bar.n:
                bar.update(state.finished - bar.n)
                last_move, problem = now, None
            elif now - max(last_move, last_probe) > STALL_SECONDS:
                last_probe = now
                found = store.writable(run_id)
                if found and found != problem:
                    bar.write(f"ascent: the store cannot be written ({found}); the workers retry until it can")
                problem = found
            if state.failed or problem:
                extra = {"store": "full/unwritable"} if problem else {}
                bar.set_postfix(failed=state.failed, **extra, refresh=False)
            if state.failed:
                check_run_failure(store, run_id)
            if state.complete:
                return state
            if timeout is not None and now - started > timeout:
                why = f"; the store cannot be written: {problem}" if problem else ""
                raise RunTimeout(
                    f"run {run_id}: {state.pending} of {state.total} items still pending after {timeout:g}s{why} "
                    f"(see `ascent status {run_id}`)"
                )
            if check is not None:
                check()
            time.sleep(poll)
            state = progress(store, run_id)


def print_progress(state: Progress, store_problem: str | None = None) -> None:
    counts = f"{state.total} items, {state.done} done, {state.failed} failed, {state.pending} pending"
    print(f"run {state.run_id}: {counts}")
    if store_problem:
        print(f"store: full or unwritable ({store_problem}); workers retry until it can be written")
    for key in state.unreadable:
        print(f"unreadable record (its items count as pending): {key}")
    for worker, n in state.workers.items():
        print(f"  {worker}: {n} items")
