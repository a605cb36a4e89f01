"""What a worker does between iterations of a shard's ascent loop (``ascent.shared.kernels.loop``'s
iteration hook): stop when the run has been cancelled, and report how far the shard is.

``ShardWatch`` is the hook. Every ``CHECK_SECONDS`` (``SOONER_SECONDS`` once a whole item more is
through) it looks for the run's cancel marker (raising
``RunCancelled`` out of the loop) and rewrites the shard's progress marker: the worker, the shard's item
count and ``finished``, the items the loop is through as an estimate (samples that left the batch, plus
the fraction of iterations run for the rest), placed within the shard's several kernel calls by
``loop.progress_span``, so it only grows. Store faults while reporting are logged and ignored: progress
is a hint, and the record written at the end is what counts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from ascent.shared.control import cancel_marker, write_progress
from ascent.shared.errors import RunCancelled, StoreError, TransientError
from ascent.shared.kernels.loop import progress_span
from ascent.shared.store import Store

log = logging.getLogger(__name__)
CHECK_SECONDS = 0.5
SOONER_SECONDS = 0.1  # an item more through is reported this soon (the bar moves per image)


class ShardWatch:
    """The iteration hook of one shard of ``n_items`` items, on ``worker``."""

    def __init__(self, store: Store, run_id: str, shard_id: str, n_items: int, worker: str | None = None) -> None:
        self.store, self.run_id, self.shard_id, self.n_items = store, run_id, shard_id, n_items
        self.worker = worker or socket.gethostname()
        self.finished = 0.0
        self.started_at: float | None = None
        self._last = 0.0
        self._reported = 0.0

    def start(self) -> float:
        """Check for a cancel before the kernel starts; returns the kernel's start time, taken *before*
        the check (so a kernel recorded as started after a marker's ``at`` cannot have missed it)."""
        self.started_at = time.time()
        self._check_cancel()
        self._report()
        self._last = time.monotonic()
        return self.started_at

    def __call__(self, t: int, iters: int, active: int, total: int) -> None:
        if total > 0:
            through = (total - active) + (active * t / iters if iters > 0 else 0.0)
            start, width = progress_span()  # this call's share of the shard (restarts, scales, groups)
            share = start + width * through / total
            self.finished = max(self.finished, min(self.n_items * share, float(self.n_items)))
        now = time.monotonic()
        wait = SOONER_SECONDS if int(self.finished) > int(self._reported) else CHECK_SECONDS
        if now - self._last < wait:
            return
        self._last = now
        self._check_cancel()
        self._report()

    def _check_cancel(self) -> None:
        try:
            cancelled = cancel_marker(self.store, self.run_id) is not None
        except (StoreError, TransientError) as exc:
            log.warning("shard %s/%s: cannot check for a cancel: %s", self.run_id, self.shard_id, exc)
            return
        if cancelled:
            raise RunCancelled(f"run {self.run_id} was cancelled")

    def _report(self) -> None:
        marker: dict[str, Any] = {
            "worker": self.worker,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "items": self.n_items,
            "finished": round(self.finished, 2),
            "started_at": self.started_at,
            "at": time.time(),
        }
        self._reported = self.finished
        try:
            write_progress(self.store, self.run_id, self.shard_id, marker)
        except (StoreError, TransientError) as exc:
            log.warning("shard %s/%s: cannot report progress: %s", self.run_id, self.shard_id, exc)
