"""The Celery side both producer and workers share, torch-free: the task and queue names and
``create_app(settings)``, the configured Celery app. The producer sends tasks by name with it; the
worker (``ascent.worker.app``) registers its task on it.

Configuration for long batch tasks on Redis (Celery's documentation and the issues cited):

- JSON only (``accept_content=['json']``): a pickled message is rejected without being unpickled.
- Late acks, ``task_reject_on_worker_lost`` and prefetch 1: a shard is acknowledged only after its record
  is in the store, and a worker holds at most one shard it has not started.
- soft time limit < hard time limit < Redis visibility timeout, the visibility timeout set identically in
  ``broker_transport_options``, ``result_backend_transport_options`` and ``visibility_timeout`` (Redis
  redelivers a task that is unacknowledged for longer, even while a worker still runs it: celery#5935).
- No result backend: the store is the system of record (per-shard records), so results are ignored.
- ``worker_max_tasks_per_child`` recycles pool processes (GPU memory creeps in long-lived children).
- Task events on, for Flower.
- Broker connection loss (a Redis restart, a network cut): the worker reconnects for ever
  (``broker_connection_max_retries=None``; Celery's default gives up after 100 tries and the worker
  exits) and resumes consuming; redis-py sockets get keepalive and timeouts, and kombu's health check
  drops a half-open BRPOP connection (``health_check_interval``). ``broker_heartbeat`` is AMQP only:
  the Redis transport has no heartbeats, the health check is its equivalent. Messages the restarted
  Redis lost are re-enqueued from the store by ``ascent resume`` (docs/reliability.md).

Importing this module creates no app, opens no connection and does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery

if TYPE_CHECKING:
    from ascent.shared.settings import Settings

#: The one task: run every item of a shard through a job kernel. Producer and worker name it here.
RUN_SHARD_TASK = "ascent.run_shard"

#: The queue ascent's tasks go to (so a shared Redis can also serve other Celery apps).
DEFAULT_QUEUE = "ascent"

#: Defaults in seconds. A shard is one batch through a kernel: minutes on a GPU, more on a CPU.
SOFT_TIME_LIMIT = 3300
TIME_LIMIT = 3480
VISIBILITY_TIMEOUT = 3600
MAX_TASKS_PER_CHILD = 200

#: redis-py connection options for the broker (seconds). A blocking command on a dead connection fails
#: after SOCKET_TIMEOUT instead of hanging; the consumer's BRPOP is not affected (it runs on the event
#: loop with a 1 s server-side timeout) and is checked every HEALTH_CHECK_INTERVAL instead.
REDIS_CONNECTION_OPTIONS: dict[str, Any] = {
    "socket_timeout": 30,
    "socket_connect_timeout": 10,
    "socket_keepalive": True,
    "retry_on_timeout": True,
    "health_check_interval": 10,
}


def _tls_options(broker_url: str | None) -> dict[str, Any] | None:
    """For ``rediss://`` URLs, verify the server certificate unless the URL says otherwise: kombu's
    default for a bare ``rediss://`` is ``CERT_NONE`` (encrypted, but anyone can impersonate Redis)."""
    if not broker_url or not broker_url.startswith("rediss://") or "ssl_cert_reqs" in broker_url:
        return None
    import ssl

    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def create_app(
    settings: Settings,
    *,
    soft_time_limit: float = SOFT_TIME_LIMIT,
    time_limit: float = TIME_LIMIT,
    visibility_timeout: float = VISIBILITY_TIMEOUT,
    max_tasks_per_child: int = MAX_TASKS_PER_CHILD,
) -> Celery:
    """A configured Celery app for ``settings`` (no task registered: ``ascent.worker.app`` adds it).

    Raises ValueError unless ``0 < soft_time_limit < time_limit < visibility_timeout``.
    """
    if not 0 < soft_time_limit < time_limit < visibility_timeout:
        raise ValueError(
            "time limits must satisfy 0 < soft_time_limit < time_limit < visibility_timeout, got "
            f"{soft_time_limit}, {time_limit}, {visibility_timeout}"
        )
    app = Celery("ascent", set_as_current=False)
    transport_options: dict[str, Any] = {"visibility_timeout": visibility_timeout}
    app.conf.update(
        broker_url=settings.broker_url,
        broker_use_ssl=_tls_options(settings.broker_url),
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        broker_transport_options={**transport_options, **REDIS_CONNECTION_OPTIONS},
        result_backend_transport_options=dict(transport_options),
        visibility_timeout=visibility_timeout,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_soft_time_limit=soft_time_limit,
        task_time_limit=time_limit,
        task_default_queue=DEFAULT_QUEUE,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=max_tasks_per_child,
        # A shard still running when the broker connection drops keeps running: its outputs and record
        # are keyed by run and shard, so the redelivered copy finds the record and is skipped.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        enable_utc=True,
    )
    return app
