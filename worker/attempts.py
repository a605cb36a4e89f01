"""Attempts and retries of a shard: the one retry policy.

- **Transient errors** (network, S3 5xx, a broker that went away) retry the whole shard with
  exponential backoff and full jitter, at most ``Settings.max_retries`` times (``ASCENT_MAX_RETRIES``,
  default 5); after the last retry the shard's items are recorded failed with the reason.
- **Process deaths** (SIGKILL, the OOM killer, a hard time limit) cannot be caught: Celery redelivers
  the task (``task_reject_on_worker_lost``) with no limit of its own. So the store, the system of
  record, counts them: each delivery writes ``attempts/<shard_id>/<unique>.json`` before the batch
  runs and deletes it when it returns (done, failed or raising); what is left are attempts whose
  process died. A delivery that finds ``Settings.max_attempts`` of them (``ASCENT_MAX_ATTEMPTS``,
  default 3) records every item of the shard failed (dead-lettered) instead of running it again.
- **Permanent errors** (an unreadable item, a checkpoint that does not load) are never retried: an
  item fails alone, a shard-level one fails the shard's items, with the reason.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ascent.shared.errors import StoreError, TransientError
from ascent.shared.keys import RunKeys
from ascent.shared.settings import Settings
from ascent.shared.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a shard is tried again, and after how long."""

    max_retries: int = 5
    max_deaths: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(max_retries=settings.max_retries, max_deaths=settings.max_attempts)

    def backoff(self, retries: int) -> float:
        """Seconds before retry number ``retries`` (0-based): exponential, with full jitter."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**retries))

    def died_reason(self, deaths: int) -> str:
        return (
            f"the worker process died {deaths} times while running this shard (killed, e.g. out of memory); "
            "not retried again (use a smaller --shard-size, or raise ASCENT_MAX_ATTEMPTS)"
        )

    def gave_up_reason(self, exc: Exception) -> str:
        return f"gave up after {self.max_retries} retries of a transient error: {exc}"


class Attempts:
    """The attempt markers of one shard in the store."""

    def __init__(self, store: Store, run_id: str, shard_id: str) -> None:
        self.store = store
        self.prefix = RunKeys(run_id).attempts(shard_id)

    def died(self) -> list[str]:
        """Keys of attempts that started and never returned: their process died, or, rarely, a duplicate
        delivery is running them right now elsewhere."""
        return [k for k in self.store.list(self.prefix) if k.endswith(".json")]

    def start(self, info: dict[str, Any] | None = None) -> str:
        """Write this attempt's marker (before the batch runs, so a process killed later leaves it)."""
        # Time first so a listing is in start order; the random part keeps concurrent attempts apart.
        key = f"{self.prefix}{time.time_ns()}-{uuid.uuid4().hex[:12]}.json"
        marker = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}
        marker.update({k: v for k, v in (info or {}).items() if v is not None})
        self.store.put_json(key, marker)
        return key

    def end(self, key: str) -> None:
        """Remove the marker of an attempt that returned (whatever its outcome). A store fault here only
        leaves the marker behind, which counts one death too many: logged, never raised."""
        try:
            self.store.delete(key)
        except (StoreError, TransientError, NotImplementedError) as exc:
            log.warning("could not remove the attempt marker %s (it will count as a died attempt): %s", key, exc)
