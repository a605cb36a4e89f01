"""Run control through the store, the system of record: the cancel marker (``runs/<id>/cancel.json``)
and the progress markers of running shards (``runs/<id>/progress/<shard_id>.json``).

Both are small JSON objects any process with the store can read, so a cancel reaches every worker of a
fleet (whatever broker they consume) and progress shows in ``ascent run``, ``collect --wait``,
``status`` and the exporter alike. No torch here.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from ascent.shared.errors import InvalidInput, NotFoundInStore
from ascent.shared.keys import RunKeys
from ascent.shared.store import Store


def cancel_marker(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run's cancel marker (``requested_at``, ``at``: since when every reader sees it), or None."""
    key = RunKeys(run_id).cancel
    if not store.exists(key):
        return None
    try:
        marker = store.get_json(key)
    except (InvalidInput, NotFoundInStore, ValueError):
        marker = None
    return marker if isinstance(marker, dict) else {"requested_at": None, "at": None}


def request_cancel(store: Store, run_id: str, by: str | None = None) -> dict[str, Any]:
    """Write the cancel marker and return it. It is written twice: the second write adds ``at``, a time
    after the first write had returned, so any worker that checks after ``at`` sees it (a kernel
    recorded as started before ``at`` may have checked just before the marker appeared)."""
    key = RunKeys(run_id).cancel
    marker: dict[str, Any] = {"requested_at": time.time(), "by": by}
    store.put_json(key, marker)
    marker["at"] = time.time()
    store.put_json(key, marker)
    return marker


def write_progress(store: Store, run_id: str, shard_id: str, marker: dict[str, Any]) -> None:
    store.put_json(RunKeys(run_id).progress(shard_id), marker)


def read_progress(store: Store, run_id: str, skip: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """The progress markers of the run's shards by shard id, except those in ``skip`` (recorded shards);
    a marker that vanished or cannot be read is left out (it is only a hint)."""
    keys = RunKeys(run_id)
    prefix = keys.progress_markers
    markers = {}
    for key in store.list(prefix):
        shard_id = key[len(prefix) :].removesuffix(".json")
        if shard_id in skip or not key.endswith(".json"):
            continue
        try:
            marker = store.get_json(key)
        except (InvalidInput, NotFoundInStore, ValueError):
            continue
        if isinstance(marker, dict):
            markers[shard_id] = marker
    return markers
