"""Following a run from the store: a progress bar until every item is recorded, and status lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ascent.producer.collector import Progress, progress
from ascent.shared.errors import AscentError
from ascent.shared.store import Store

POLL_SECONDS = 0.5


class RunTimeout(AscentError):
    """Waiting for a run took longer than --timeout."""


def wait_for_run(
    store: Store,
    run_id: str,
    *,
    check: Callable[[], None] | None = None,
    timeout: float | None = None,
    poll: float = POLL_SECONDS,
) -> Progress:
    """Poll the store's records with a progress bar until every item is recorded.

    ``check`` runs each round (the embedded cluster raises there when a worker died). Raises RunTimeout."""
    from tqdm import tqdm

    started = time.monotonic()
    state = progress(store, run_id)
    with tqdm(
        total=state.total,
        unit="item",
        desc=run_id,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 5.0,
    ) as bar:
        while True:
            bar.update(state.finished - bar.n)
            if state.failed:
                bar.set_postfix(failed=state.failed, refresh=False)
            if state.complete:
                return state
            if timeout is not None and time.monotonic() - started > timeout:
                raise RunTimeout(
                    f"run {run_id}: {state.pending} of {state.total} items still pending after {timeout:g}s "
                    f"(see `ascent status {run_id}`)"
                )
            if check is not None:
                check()
            time.sleep(poll)
            state = progress(store, run_id)


def print_progress(state: Progress) -> None:
    counts = f"{state.total} items, {state.done} done, {state.failed} failed, {state.pending} pending"
    print(f"run {state.run_id}: {counts}")
    for worker, n in state.workers.items():
        print(f"  {worker}: {n} items")
