"""The one Celery task, ``ascent.run_shard(message)``: decode, call the plain handler, decide about retries.

All the work is in ``worker.handlers.run_shard`` (testable without Celery). What the task adds:

- a malformed message or an unknown version is logged and rejected without requeue (``Reject``): retrying
  cannot fix it, and it must not loop;
- a message whose envelope is malformed (a body that is not Celery's ``[args, kwargs, embed]``, headers
  without an id...) is rejected by ``guarded_strategy`` before it reaches the task: Celery's own strategy
  raises there, and the exception stops the whole worker (which, restarted, meets the message again);
- ``TransientError`` (network, S3 5xx) is retried with exponential backoff and jitter; after the last
  retry the shard's items are recorded failed with the reason, so the run still completes (a store
  fault while recording a failure is retried the same way);
- ``InvalidInput`` is never retried (the handler records per-item and per-shard failures itself);
- a shard that runs past the soft time limit, or hits an unexpected error, is recorded failed with the
  reason rather than left without a record.

This module does not import torch; the handler is imported on first use (and preloaded in the worker's
main process by ``worker_init``, before the pool forks, so recycled children start fast).
"""

from __future__ import annotations

import logging
import random
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_init

from shared.errors import InvalidInput, TransientError
from shared.spec import JobSpec, Shard, parse_task_message
from shared.store import Store
from worker import RUN_SHARD_TASK

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

#: Retries of a shard after a TransientError, and the backoff between them (seconds).
MAX_RETRIES = 5
BACKOFF_BASE = 2.0
BACKOFF_MAX = 300.0


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter for retry number ``retries`` (0-based)."""
    return random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2**retries))


@lru_cache(maxsize=8)
def _store(settings: Settings, uri: str) -> Store:
    # One store (and for S3 one client) per URI per process.
    return settings.open_store(uri)


def _preload_handlers(**_: Any) -> None:
    # Runs in the worker's main process before the pool starts: import torch there (without touching
    # CUDA, REFERENCE §4.4) so every pool child, including recycled ones, forks with it already loaded.
    import worker.handlers  # noqa: F401


def guarded_strategy(task: Task, app: Celery, consumer: Any, **options: Any) -> Any:
    """Celery's default strategy for ``task``, with every error a malformed message can raise while it is
    turned into a request made an ``InvalidTaskError``: the consumer then logs it ("Received invalid task
    message") and rejects the message without requeue, instead of dying with "Unrecoverable error"."""
    from celery.exceptions import InvalidTaskError
    from celery.worker.strategy import default
    from kombu.exceptions import ContentDisallowed, DecodeError

    handle = default(task, app, consumer, **options)

    def guarded(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return handle(message, body, *args, **kwargs)
        except (InvalidTaskError, ContentDisallowed, DecodeError):
            raise  # the consumer logs and rejects these itself
        except Exception as exc:
            raise InvalidTaskError(f"malformed task message: {type(exc).__name__}: {exc}") from exc

    return guarded


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register ``ascent.run_shard`` on ``app``; ``settings`` is passed down to the handler."""
    worker_init.connect(_preload_handlers, weak=False, dispatch_uid="ascent-preload-handlers")

    # shared=False: the task belongs to this app (and its settings) only, not to every app created later.
    @app.task(
        name=RUN_SHARD_TASK,
        bind=True,
        shared=False,
        max_retries=MAX_RETRIES,
        acks_late=True,
        ignore_result=True,
        Strategy="worker.tasks:guarded_strategy",
    )
    def run_shard(self: Task, message: dict[str, Any]) -> dict[str, Any]:
        return execute(self, message, settings)


def execute(task: Task, message: Any, settings: Settings) -> dict[str, Any]:
    """The task body; returns a small summary of the shard record (for logs and Flower)."""
    request = task.request
    try:
        spec, shard = parse_task_message(message)
    except InvalidInput as exc:
        log.error("rejecting malformed task message %s (not retried): %s", request.id, exc)
        raise Reject(f"malformed task message: {exc}", requeue=False) from exc

    try:
        store = _store(settings, spec.store)
    except InvalidInput as exc:
        log.error("rejecting task %s: cannot open its store (not retried): %s", request.id, exc)
        raise Reject(f"cannot open the store: {exc}", requeue=False) from exc
    info = {"worker": request.hostname, "task_id": request.id, "retries": request.retries}
    try:
        record = _run_and_record(task, spec, shard, store, settings, info)
    except TransientError as exc:
        # The store failed while recording a failure: retry, or leave the shard without a record for
        # `ascent resume` (the message is acknowledged, so it does not loop).
        _retry_or_give_up(task, spec, shard, exc)
        log.error(
            "shard %s/%s: could not record its failure (%s); run `ascent resume %s` later",
            spec.run_id,
            shard.shard_id,
            exc,
            spec.run_id,
        )
        raise
    items = record.get("items", [])
    return {
        "run_id": spec.run_id,
        "shard_id": shard.shard_id,
        "done": sum(1 for i in items if i.get("status") == "done"),
        "failed": sum(1 for i in items if i.get("status") == "failed"),
    }


def _retry_or_give_up(task: Task, spec: JobSpec, shard: Shard, exc: TransientError) -> None:
    """Raise ``task.retry`` with backoff while retries are left; return when they are used up."""
    retries = task.request.retries
    if retries >= MAX_RETRIES:
        return
    delay = backoff(retries)
    log.warning(
        "shard %s/%s: transient error, retry %d/%d in %.0fs: %s",
        spec.run_id,
        shard.shard_id,
        retries + 1,
        MAX_RETRIES,
        delay,
        exc,
    )
    raise task.retry(exc=exc, countdown=delay) from exc


def _run_and_record(
    task: Task, spec: JobSpec, shard: Shard, store: Store, settings: Settings, info: dict[str, Any]
) -> dict[str, Any]:
    """Run the shard through the handler; every permanent outcome ends up in the record it returns."""
    from worker import handlers

    try:
        return handlers.run_shard(spec, shard, store, settings, info=info)
    except TransientError as exc:
        _retry_or_give_up(task, spec, shard, exc)
        record = handlers.record_shard_failed(
            spec, shard, store, f"gave up after {MAX_RETRIES} retries of a transient error: {exc}", info=info
        )
    except InvalidInput as exc:
        # Permanent for the whole shard (e.g. a checkpoint that cannot be loaded): never retried.
        record = handlers.record_shard_failed(spec, shard, store, str(exc), info=info)
    except SoftTimeLimitExceeded:
        limit = task.soft_time_limit or task.app.conf.task_soft_time_limit
        record = handlers.record_shard_failed(
            spec, shard, store, f"shard timed out after {limit}s (use a smaller --shard-size)", info=info
        )
    except Exception as exc:
        # A bug or an unforeseen fault: keep the traceback in the worker log and record the reason, so
        # the run completes and the user sees which items it hit.
        log.exception("shard %s/%s failed", spec.run_id, shard.shard_id)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
            reason += " (use a smaller --shard-size)"
        record = handlers.record_shard_failed(spec, shard, store, reason, info=info)
    return record
