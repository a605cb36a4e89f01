"""Fault injection for the reliability tests and the scale-out benchmark: never set it in production.

``ASCENT_FAULT_INJECT`` (``Settings.fault_inject``) is a comma-separated list of

    sleep:<item_id>:<seconds>   a shard holding that item sleeps before running
    sleep:*:<seconds>           every shard sleeps that long once before running (bench/bench_scaleout.py)
    kill:<item_id>              the pool process running that item kills itself with SIGKILL, as the
                                OOM killer would

The plan is parsed once, when the worker's runtime is built; a malformed one stops the worker there.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ascent.shared.errors import InvalidInput
from ascent.shared.spec import Item

log = logging.getLogger(__name__)
VARIABLE = "ASCENT_FAULT_INJECT"
WILDCARD = "*"  # sleep:*:<seconds>: every shard (item ids never contain it)


@dataclass(frozen=True)
class FaultInjector:
    """Item id (or ``*``) -> ("sleep", seconds) or ("kill", 0). Empty: does nothing."""

    plan: dict[str, tuple[str, float]] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def parse(cls, text: str | None) -> FaultInjector:
        """Raises InvalidInput naming the entry when ``text`` is malformed."""
        plan: dict[str, tuple[str, float]] = {}
        for entry in filter(None, (e.strip() for e in (text or "").split(","))):
            parts = entry.split(":")
            try:
                if parts[0] == "kill" and len(parts) == 2 and parts[1] and parts[1] != WILDCARD:
                    plan[parts[1]] = ("kill", 0.0)
                    continue
                if parts[0] == "sleep" and len(parts) == 3 and parts[1] and float(parts[2]) >= 0:
                    plan[parts[1]] = ("sleep", float(parts[2]))
                    continue
            except ValueError:
                pass
            raise InvalidInput(
                f"{VARIABLE}: {entry!r} is not sleep:<item_id|*>:<seconds> or kill:<item_id> "
                "(a testing facility; unset it in production)"
            )
        return cls(plan)

    def apply(self, items: Sequence[Item]) -> None:
        """Sleep or die as planned for a shard about to run."""
        action, seconds = self.plan.get(WILDCARD, ("", 0.0))
        if action == "sleep":  # once per shard, however many items it holds
            self.sleep(seconds)
        for item in items:
            action, seconds = self.plan.get(item.item_id, ("", 0.0))
            if action == "sleep":
                log.warning("%s: item %s: sleeping %.1fs", VARIABLE, item.item_id, seconds)
                self.sleep(seconds)
            elif action == "kill":
                log.warning("%s: item %s: killing this process (pid %d)", VARIABLE, item.item_id, os.getpid())
                os.kill(os.getpid(), signal.SIGKILL)
