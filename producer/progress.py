"""Following a run from the store: a progress bar until every item is recorded, and status lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ascent.producer.collector import Progress, progress
from ascent.shared.control import read_progress
from ascent.shared.errors import AscentError
from ascent.shared.keys import RunKeys
from ascent.shared.store import Store

POLL_SECONDS = 0.25  # twice per worker report (CHECK_SECONDS): shards report at staggered times
STALL_SECONDS = 10.0
FRESH_SECONDS = 60.0  # a progress marker newer than this: a worker is running the shard (it rewrites it every ~0.5 s)


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
    waits for it) instead of as items pending for ever. A cancelled run whose pending shards no worker
    is running (no fresh progress marker: the workers are gone, the queue was lost) stops the wait then.
    Raises RunTimeout."""
    from tqdm import tqdm

    started = last_move = last_probe = time.monotonic()
    state = progress(store, run_id)
    last_finished = state.finished
    problem: str | None = None
    # The bar counts recorded items plus what running shards report (``Progress.estimate``), so it
    # moves per image, with tqdm's rate and ETA; at most one refresh per poll, on a terminal or not.
    with tqdm(
        total=state.total,
        unit="item",
        desc=run_id,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=poll,
    ) as bar:
        while True:
            now = time.monotonic()
            through = int(state.estimate)
            if through > bar.n:
                bar.update(through - bar.n)
                last_move, problem = now, None
            elif state.finished != last_finished:
                last_move, problem = now, None
            elif now - max(last_move, last_probe) > STALL_SECONDS:
                last_probe = now
                if state.cancel_requested and not shards_running(store, run_id):
                    raise RunTimeout(
                        f"run {run_id} was cancelled and no worker is running its {state.pending} pending items "
                        f"(no progress for {STALL_SECONDS:g}s): `ascent resume {run_id}` records them cancelled"
                    )
                found = store.writable(run_id)
                if found and found != problem:
                    bar.write(f"ascent: the store cannot be written ({found}); the workers retry until it can")
                problem = found
            last_finished = state.finished
            if state.failed or state.cancelled or state.skipped or problem:
                extra: dict[str, object] = {"store": "full/unwritable"} if problem else {}
                extra |= {"cancelled": state.cancelled} if state.cancelled else {}
                extra |= {"skipped": state.skipped} if state.skipped else {}
                bar.set_postfix(failed=state.failed, **extra, refresh=False)
            if state.failed:
                check_run_failure(store, run_id)
            if state.complete:
                bar.update(state.total - bar.n)
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


def shards_running(store: Store, run_id: str, now: float | None = None) -> set[str]:
    """The shards of the run whose progress marker is fresh (newer than ``FRESH_SECONDS``): a worker
    is running them."""
    now = time.time() if now is None else now
    running = set()
    for shard_id, marker in read_progress(store, run_id).items():
        at = marker.get("at")
        if isinstance(at, (int, float)) and now - at < FRESH_SECONDS:
            running.add(shard_id)
    return running


def print_progress(state: Progress, store_problem: str | None = None, now: float | None = None) -> None:
    """The status lines: counts, rate and ETA, and one line per worker (items, images/s, last seen).
    Rates count the images run (done or failed), not the items skipped or cancelled."""
    now = time.time() if now is None else now
    counts = f"{state.total} items, {state.done} done, {state.failed} failed, {state.pending} pending"
    counts += f", {state.cancelled} cancelled" if state.cancelled or state.cancel_requested else ""
    counts += f", {state.skipped} skipped" if state.skipped else ""
    print(f"run {state.run_id}: {counts}")
    if state.cancel_requested and not state.complete:
        print("cancel requested: the workers record what is left cancelled")
    if not state.complete and state.started_at is not None and now > state.started_at:
        rate = state.processed / (now - state.started_at)  # the images run, not those skipped or cancelled
        # a cancelled run's pending items are recorded cancelled, not run: no ETA from the rate then
        eta = (
            f", ETA {_duration((state.total - state.estimate) / rate)}"
            if rate > 0 and not state.cancel_requested
            else ""
        )
        print(f"progress: {state.estimate:.0f}/{state.total} items, {rate:.2f} images/s{eta}")
    if store_problem:
        print(f"store: full or unwritable ({store_problem}); workers retry until it can be written")
    for key in state.unreadable:
        print(f"unreadable record (its items count as pending): {key}")
    for w in state.fleet:
        speed = "-" if w.rate is None else f"{w.rate:.2f}"
        busy = f", running {w.running} shard(s)" if w.running else ""
        print(f"  {w.name}: {w.items} items, {speed} images/s, last seen {_duration(now - w.last_seen)} ago{busy}")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds < 7200 else f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
