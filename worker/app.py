"""The worker's Celery app: ``celery -A ascent.worker.app worker`` reads ``ascent.worker.app.app``,
created on first access from ``Settings.from_env()`` (``ascent.shared.queue.create_app``) with
ascent's task registered. Importing this module creates no app and opens no connection.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from ascent.shared.errors import InvalidInput
from ascent.shared.queue import create_app

if TYPE_CHECKING:
    from celery import Celery

    from ascent.shared.settings import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_app: Celery | None = None


def worker_app(settings: Settings, **limits: Any) -> Celery:
    """An app for ``settings`` with ``ascent.run_shard`` registered (``limits``: see ``create_app``).
    With ``settings.parent_pid`` (the embedded default) the worker dies with that process."""
    from celery.signals import worker_init

    from ascent.worker.tasks import register_tasks

    app = create_app(settings, **limits)
    register_tasks(app, settings)
    if settings.parent_pid is not None:
        parent = settings.parent_pid
        worker_init.connect(lambda **_: watch_parent(parent), weak=False, dispatch_uid="ascent-watch-parent")
    return app


def watch_parent(parent_pid: int, every: float = 0.5) -> threading.Thread:
    """A daemon thread that SIGKILLs this process's whole group (the worker and its pool) once
    ``parent_pid`` is gone: the ``ascent run`` that started it may have been SIGKILLed, which runs no
    clean-up, and a worker left behind would go on with its shard for as long as it takes."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        log.error("the process that started this worker (%d) is gone: stopping", parent_pid)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="ascent-parent-watch", daemon=True)
    thread.start()
    return thread


def get_app() -> Celery:
    """The process-wide app, created from the environment on first use."""
    global _app
    with _lock:
        if _app is None:
            from ascent.shared.settings import Settings

            settings = Settings.from_env()
            if not settings.broker_url:
                raise InvalidInput("ASCENT_BROKER_URL is not set: point it at the Redis broker (redis://HOST:6379/0)")
            _app = worker_app(settings)
            log.debug("ascent app created with %s", settings.redacted())
        return _app


def __getattr__(name: str) -> Any:
    # PEP 562: ``celery -A ascent.worker.app`` reads ``ascent.worker.app.app``; create it then, not at import.
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
