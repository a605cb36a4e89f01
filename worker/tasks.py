"""The one Celery task, ``ascent.run_shard(message)``: decode, call the plain handler, decide about retries.

All the work is in ``ascent.worker.handler.run_shard`` (testable without Celery); the retry policy is
``ascent.worker.attempts``. What the task adds:

- a malformed message or an unknown version is logged and rejected without requeue (``Reject``): retrying
  cannot fix it, and it must not loop;
- a message whose envelope is malformed (a body that is not Celery's ``[args, kwargs, embed]``, headers
  without an id...) is rejected by ``guarded_strategy`` before it reaches the task: Celery's own strategy
  raises there, and the exception stops the whole worker (which, restarted, meets the message again);
- ``TransientError`` (network, S3 5xx) is retried with exponential backoff and jitter, at most
  ``Settings.max_retries`` times; then the shard's items are recorded failed with the reason, so the
  run still completes (a store fault while recording a failure is retried the same way);
- ``InvalidInput`` is never retried (the handler records per-item and per-shard failures itself);
- a shard that runs past the soft time limit, or hits an unexpected error, is recorded failed with the
  reason rather than left without a record.

This module does not import torch; the handler is imported on first use (and preloaded in the worker's
main process by ``worker_init``, before the pool forks, so recycled children start fast). Each pool
process builds its runtime (``ascent.worker.runtime``) when it starts (``worker_process_init``).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init

from ascent.shared.errors import InvalidInput, StoreUnavailable, TransientError
from ascent.shared.queue import RUN_SHARD_TASK
from ascent.shared.records import ShardRecord
from ascent.shared.spec import JobSpec, Shard
from ascent.shared.store import Store
from ascent.worker import runtime as runtimes
from ascent.worker.guard import Malformed, Refused, admit

if TYPE_CHECKING:
    from ascent.shared.settings import Settings
    from ascent.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def _preload_handler(**_: Any) -> None:
    # Runs in the worker's main process before the pool starts: import torch there, without touching
    # CUDA (a forked child cannot start it once the parent has), so every pool child, recycled ones
    # too, forks with it already loaded.
    import ascent.worker.handler  # noqa: F401


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
    """Register ``ascent.run_shard`` on ``app``; ``settings`` build each process's runtime."""
    worker_init.connect(_preload_handler, weak=False, dispatch_uid="ascent-preload-handler")

    def build_runtime(**_: Any) -> None:
        runtimes.current(settings)  # in the pool child, after the fork; a malformed setting stops it here

    worker_process_init.connect(build_runtime, weak=False, dispatch_uid="ascent-build-runtime")

    # shared=False: the task belongs to this app (and its settings) only, not to every app created later.
    @app.task(
        name=RUN_SHARD_TASK,
        bind=True,
        shared=False,
        max_retries=settings.max_retries,
        acks_late=True,
        ignore_result=True,
        Strategy="ascent.worker.tasks:guarded_strategy",
    )
    def run_shard(self: Task, message: dict[str, Any]) -> dict[str, Any]:
        return execute(self, message, runtimes.current(settings))


def _describe(message: Any) -> str:
    """ "run/shard" of a message for logs, whatever its shape."""
    try:
        return f"{message['spec']['run_id']}/{message['shard']['shard_id']}"
    except (TypeError, KeyError):
        return "(unreadable message)"


def execute(task: Task, message: Any, runtime: WorkerRuntime) -> dict[str, Any]:
    """The task body; returns a small summary of the shard record (for logs and Flower)."""
    request = task.request
    try:
        spec, shard, store = admit(runtime, message)
    except Malformed as exc:
        log.error("rejecting malformed task message %s (not retried): %s", request.id, exc)
        raise Reject(f"malformed task message: {exc}", requeue=False) from exc
    except Refused as exc:
        log.error("refusing task %s (discarded, not retried): %s", request.id, exc)
        raise Reject(f"refused: {exc}", requeue=False) from exc
    except TransientError as exc:  # the store could not be read to admit it: try again later
        _retry_or_give_up(task, _describe(message), exc, runtime)
        log.error("task %s: gave up admitting it (%s); `ascent resume` re-enqueues its shard", request.id, exc)
        raise
    info = {"worker": request.hostname, "task_id": request.id, "retries": request.retries}
    where = f"{spec.run_id}/{shard.shard_id}"
    try:
        record = _run_and_record(task, spec, shard, store, runtime, info)
    except TransientError as exc:
        # The store failed while recording a failure: retry, or leave the shard without a record for
        # `ascent resume` (the message is acknowledged, so it does not loop).
        _retry_or_give_up(task, where, exc, runtime)
        log.error("shard %s: could not record its failure (%s); run `ascent resume %s` later", where, exc, spec.run_id)
        raise
    return {
        "run_id": spec.run_id,
        "shard_id": shard.shard_id,
        "done": record.count("done"),
        "failed": record.count("failed"),
    }


def _retry_or_give_up(task: Task, where: str, exc: TransientError, runtime: WorkerRuntime) -> None:
    """Raise ``task.retry`` with backoff while retries are left; return when they are used up. A store
    that cannot be written (StoreUnavailable: full, unreachable) is waited for without a limit: giving
    up would record the items failed, and nothing may be lost to a full disk."""
    retries, policy = task.request.retries, runtime.policy
    unlimited = isinstance(exc, StoreUnavailable)
    if retries >= policy.max_retries and not unlimited:
        return
    delay = policy.backoff(min(retries, policy.max_retries))
    limit = "until the store takes it" if unlimited else f"{retries + 1}/{policy.max_retries}"
    log.warning("shard %s: transient error, retry %s in %.0fs: %s", where, limit, delay, exc)
    # Celery reads max_retries=None as "the task's default"; infinity is what never runs out.
    raise task.retry(exc=exc, countdown=delay, max_retries=math.inf if unlimited else policy.max_retries) from exc


def _run_and_record(
    task: Task, spec: JobSpec, shard: Shard, store: Store, runtime: WorkerRuntime, info: dict[str, Any]
) -> ShardRecord:
    """Run the shard through the handler; every permanent outcome ends up in the record it returns."""
    from ascent.worker import handler as handlers

    try:
        return handlers.run_shard(spec, shard, store, runtime, info=info)
    except TransientError as exc:
        _retry_or_give_up(task, f"{spec.run_id}/{shard.shard_id}", exc, runtime)
        record = handlers.record_shard_failed(spec, shard, store, runtime.policy.gave_up_reason(exc), info=info)
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
