"""Admission of a task message: a worker trusts its own configuration and its store, never a message's
word about where to write or what to read.

``admit(runtime, message)`` runs before any work and returns what to run, taken from the store:

1. with a signing key (``ASCENT_SIGNING_KEY``), the message's HMAC must be valid;
2. its size and the spec's limits must hold (``ascent.shared.limits``);
3. its store must be one this worker is configured to write to (``ASCENT_STORE``, or one listed in
   ``ASCENT_ALLOWED_STORES``): a message naming another is refused;
4. the run must be recorded in that store (``spec.json``) with the same spec, and the manifest must
   list the shard with the same items: the spec and shard that run are the store's.

A refused message is logged and discarded (``Refused``); nothing is read or written for it. Inputs are
confined separately, item by item, by the runtime's reader (``ascent.shared.sources.InputRoots``).
"""

from __future__ import annotations

import logging
from typing import Any

from ascent.shared.errors import InvalidInput, NotFoundInStore
from ascent.shared.keys import RunKeys
from ascent.shared.messages import BadSignature, parse_task_message
from ascent.shared.spec import JobSpec, Shard
from ascent.shared.store import Store
from ascent.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class Refused(InvalidInput):
    """A message this worker will not act on: logged and discarded, never retried."""


class Malformed(Refused):
    """A message that is not a valid task message at all (wrong shape, version or values)."""


def admit(runtime: WorkerRuntime, message: Any) -> tuple[JobSpec, Shard, Store]:
    """The run's spec, the planned shard and the store to write to, or Refused saying why."""
    settings = runtime.settings
    try:
        spec, shard = parse_task_message(message, runtime.jobs, settings.limits, settings.signing_key)
    except BadSignature as exc:
        raise Refused(str(exc)) from exc
    except InvalidInput as exc:
        raise Malformed(str(exc)) from exc
    store = runtime.allowed_store(spec.store)
    if store is None:
        raise Refused(
            f"run {spec.run_id}: the message names the store {spec.store}, which this worker does not write "
            "to (ASCENT_STORE / ASCENT_ALLOWED_STORES)"
        )
    keys = RunKeys(spec.run_id)
    try:
        recorded = JobSpec.from_dict(store.get_json(keys.spec), runtime.jobs)
    except NotFoundInStore:
        raise Refused(f"run {spec.run_id} is not recorded in {store.uri}") from None
    if recorded.to_dict() != spec.to_dict():
        raise Refused(f"run {spec.run_id}: the message's spec differs from the recorded spec.json")
    try:
        planned = runtime.planned_shard(store, spec.run_id, shard.shard_id)
    except NotFoundInStore:
        raise Refused(f"run {spec.run_id} has no manifest in {store.uri}") from None
    if planned is None:
        raise Refused(f"run {spec.run_id}: the manifest lists no shard {shard.shard_id}")
    if planned.to_dict() != shard.to_dict():
        raise Refused(f"run {spec.run_id}: shard {shard.shard_id} differs from the manifest's")
    return recorded, planned, store
