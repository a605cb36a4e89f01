"""The worker's Celery app: ``celery -A ascent.worker.app worker`` reads ``ascent.worker.app.app``,
created on first access from ``Settings.from_env()`` (``ascent.shared.queue.create_app``) with
ascent's task registered. Importing this module creates no app and opens no connection.
"""

from __future__ import annotations

import logging
import threading
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
    """An app for ``settings`` with ``ascent.run_shard`` registered (``limits``: see ``create_app``)."""
    from ascent.worker.tasks import register_tasks

    app = create_app(settings, **limits)
    register_tasks(app, settings)
    return app


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
