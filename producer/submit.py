"""Plan a run (items -> shards) and submit it: record spec and manifest in the store, then enqueue.

No torch: tasks are sent by name (``worker.RUN_SHARD_TASK``) with a JSON message that carries ids,
URIs and parameters, never pixels and never credentials. The store is the system of record: the spec
and the manifest are written *before* anything is enqueued, so a run that was (partly) enqueued can
always be compared with its records (``ascent status``, ``ascent collect``, and later ``resume``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery

from shared.errors import InvalidSpec, TransientError
from shared.spec import Item, JobSpec, Shard, task_message
from shared.store import Store, run_key
from worker import DEFAULT_QUEUE, RUN_SHARD_TASK

MAX_SHARD_SIZE = 100_000


def shard_id(index: int) -> str:
    """``shard-00000``, ``shard-00001``, ..."""
    return f"shard-{index:05d}"


def plan_run(spec: JobSpec, items: Sequence[Item], shard_size: int) -> dict[str, Any]:
    """The manifest: ``{"run_id", "n_items", "shards": [{"shard_id", "items": [{item_id, source, label}]}]}``.

    Items keep their order; shard k holds items [k·shard_size, (k+1)·shard_size). Raises InvalidSpec
    for a bad ``shard_size`` ("shard_size"), no items or duplicate item ids ("inputs")."""
    if (
        isinstance(shard_size, bool)
        or not isinstance(shard_size, int)
        or not 1 <= shard_size <= MAX_SHARD_SIZE
    ):
        raise InvalidSpec("shard_size", f"{shard_size!r} must be an integer 1..{MAX_SHARD_SIZE}")
    if not items:
        raise InvalidSpec("inputs", "no items to run")
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise InvalidSpec("inputs", f"duplicate item id {item.item_id!r}")
        seen.add(item.item_id)
    shards = [
        Shard(shard_id(k), tuple(items[start : start + shard_size]))
        for k, start in enumerate(range(0, len(items), shard_size))
    ]
    return {"run_id": spec.run_id, "n_items": len(items), "shards": [s.to_dict() for s in shards]}


def manifest_shards(manifest: Mapping[str, Any]) -> list[Shard]:
    """The manifest's shards as ``Shard`` objects (validated)."""
    return [Shard.from_dict(s) for s in manifest["shards"]]


def run_exists(store: Store, run_id: str) -> bool:
    return store.exists(run_key(run_id, "manifest.json")) or store.exists(run_key(run_id, "spec.json"))


def record_run(spec: JobSpec, manifest: Mapping[str, Any], store: Store) -> None:
    """Write spec.json then manifest.json; refuses to overwrite an existing run (InvalidSpec "run_id")."""
    if run_exists(store, spec.run_id):
        raise InvalidSpec(
            "run_id", f"run {spec.run_id!r} already exists in {store.uri}; choose another --run-id"
        )
    store.put_json(run_key(spec.run_id, "spec.json"), spec.to_dict())
    store.put_json(run_key(spec.run_id, "manifest.json"), dict(manifest))


def enqueue(spec: JobSpec, shards: Sequence[Shard], app: Celery) -> list[str]:
    """Send one ``ascent.run_shard`` task per shard; return the task ids.

    Raises TransientError when the broker cannot be reached (retrying later can help)."""
    from kombu.exceptions import OperationalError

    ids = []
    try:
        for shard in shards:
            result = app.send_task(RUN_SHARD_TASK, args=[task_message(spec, shard)], queue=DEFAULT_QUEUE)
            ids.append(result.id)
    except OperationalError as exc:
        raise TransientError(f"cannot reach the broker to enqueue run {spec.run_id}: {exc}") from exc
    return ids


def submit(
    spec: JobSpec, items: Sequence[Item], shard_size: int, store: Store, app: Celery
) -> dict[str, Any]:
    """Validate, record the run in ``store`` (spec.json, manifest.json), enqueue one task per shard.

    Every validation happens before the first write; returns the manifest."""
    spec = spec.validate()
    if spec.store != store.uri:
        raise InvalidSpec(
            "store", f"the spec names {spec.store} but the run would be recorded in {store.uri}"
        )
    manifest = plan_run(spec, items, shard_size)
    shards = manifest_shards(manifest)
    record_run(spec, manifest, store)
    enqueue(spec, shards, app)
    return manifest
