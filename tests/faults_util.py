"""Helpers for the reliability tests (tests/test_faults.py): a local cluster whose Redis can be killed and
restarted on the same port and whose workers get extra environment (fault injection, attempt limit), the
``ascent`` command as a subprocess, waiting on the store, and a fault-injecting HTTP proxy for S3."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import psutil
from PIL import Image

from ascent.producer.collector import Progress, progress, read_records
from ascent.producer.embedded import Embedded
from ascent.producer.processes import (
    REDIS_CONFIG,
    EmbeddedError,
    LocalRedis,
    find_redis_server,
    log_tail,
    spawn,
    stop_groups,
)
from ascent.shared.keys import run_key
from ascent.shared.settings import Settings
from ascent.shared.store import Store

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- Redis and workers


class RestartableRedis(LocalRedis):
    """A LocalRedis that can be SIGKILLed and started again, empty, on the same port."""

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, nothing saved: persistence is off anyway)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def restart(self, timeout: float = 20.0) -> None:
        """Start a new, empty server on the same port (the workers' URL stays valid)."""
        assert self.port is not None and self.directory is not None and self.log is not None
        argv = [find_redis_server(), "--port", str(self.port), "--dir", str(self.directory)]
        for name, value in REDIS_CONFIG.items():
            argv += [f"--{name}", value]
        deadline = time.monotonic() + timeout
        while True:  # the old socket may linger for a moment
            self.proc = spawn(argv, self.log)
            if self._wait_until_ready(timeout=5.0):
                return
            stop_groups([self.proc], grace=1.0)
            if time.monotonic() > deadline:
                raise EmbeddedError(f"could not restart redis on port {self.port}: {log_tail(self.log)}")

    def llen(self, queue: str) -> int:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            return int(client.llen(queue))
        finally:
            client.close()


class Cluster(Embedded):
    """``Embedded`` (real redis-server, real ``celery worker`` processes) with a restartable Redis and
    ``env`` added to the workers' environment. CPU only, one torch thread per worker."""

    def __init__(self, settings: Settings, workers: int = 2, env: Mapping[str, str] | None = None) -> None:
        # The tests' inputs live under the temporary folder: the workers may read there.
        env = {
            "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "ASCENT_INPUT_ROOTS": tempfile.gettempdir(),
            **(env or {}),
        }
        super().__init__(settings, workers, startup_timeout=120.0, stop_grace=5.0, redis=RestartableRedis, env=env)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def pool_pids(self) -> set[int]:
        """Pids of the workers' pool processes (the children that run tasks)."""
        pids = set()
        for w in self.workers:
            with suppress(psutil.NoSuchProcess):
                pids.update(c.pid for c in psutil.Process(w.proc.pid).children())
        return pids

    def worker_pids(self) -> list[int]:
        """Main and pool processes of every worker."""
        pids = []
        for w in self.workers:
            try:
                main = psutil.Process(w.proc.pid)
                pids += [main.pid, *(c.pid for c in main.children(recursive=True))]
            except psutil.NoSuchProcess:
                pass
        return pids

    def answering(self) -> int:
        """How many workers answer a broadcast ping now (through a fresh connection to the broker)."""
        from kombu.exceptions import OperationalError
        from redis.exceptions import RedisError

        from ascent.shared.queue import create_app

        app = create_app(self.settings)
        try:
            return len(app.control.ping(timeout=0.5) or [])
        except (OperationalError, RedisError, OSError):
            return 0
        finally:
            app.close()

    def logs(self) -> str:
        return "\n".join(w.log.read_text(errors="replace") for w in self.workers if w.log.exists())

    def workers_alive(self) -> bool:
        return all(w.proc.poll() is None for w in self.workers)


# ----------------------------------------------------------------------------- the ascent command


def ascent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCENT_")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def ascent(args: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m ascent.producer ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "ascent.producer", *args],
        cwd=cwd,
        env=ascent_env(**env),
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def ascent_ok(args: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    done = ascent(args, cwd, timeout, **env)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


# ----------------------------------------------------------------------------- waiting and checking


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    poll: float = 0.2,
    check: Callable[[], None] | None = None,
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def wait_complete(store: Store, run_id: str, timeout: float, check: Callable[[], None] | None = None) -> Progress:
    state: list[Progress] = []

    def complete() -> bool:
        state[:] = [progress(store, run_id)]
        return state[0].complete

    try:
        wait_until(complete, timeout, f"run {run_id} to complete", poll=0.5, check=check)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {state[0] if state else 'no progress'}") from None
    return state[0]


def shard_record_items(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every item record of every shard record, duplicates kept (for exactly-once checks)."""
    prefix = run_key(run_id, "records") + "/"
    items: list[dict[str, Any]] = []
    for key in store.list(prefix):
        items.extend(store.get_json(key)["items"])
    return items


def assert_exactly_once(store: Store, run_id: str, item_ids: list[str]) -> list[dict[str, Any]]:
    """Every planned item has exactly one line in items.jsonl and one item record across the shard
    records (no item recorded by two shards); returns the items.jsonl rows."""
    import json

    rows = [json.loads(line) for line in store.get(run_key(run_id, "items.jsonl")).decode().splitlines()]
    assert sorted(r["item_id"] for r in rows) == sorted(item_ids)
    recorded = sorted(i["item_id"] for i in shard_record_items(store, run_id))
    assert recorded == sorted(item_ids)
    assert len(read_records(store, run_id)) == len(item_ids)
    return rows


def write_npz(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """An .npz of ``n`` random ``size``×``size`` RGB images (X) with labels (y)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 1000, n)
    np.savez(path, X=x, y=y)
    return path


def write_png(path: Path, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- a flaky S3 endpoint

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_SERVICE_UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>injected fault: please retry</Message></Error>"
)


class FaultyProxy:
    """An HTTP proxy in front of an S3 server that fails one request in five, deterministically, plus an
    outage of ``burst`` requests in a row.

    Request k (counted from 0, all clients together) fares by ``k % 20``: 3 and 13 are answered
    503 ServiceUnavailable without being forwarded; 8 is forwarded (the server acts on it) and then
    answered 503; 18 is forwarded and its connection closed without an answer. Requests ``burst_at``
    to ``burst_at + burst - 1`` are all answered 503: longer than botocore's six attempts even when two
    workers' requests interleave in it, so the task-level retry has to step in. ``counts`` records what
    happened."""

    FATES: ClassVar[dict[int, str]] = {3: "before", 13: "before", 8: "after", 18: "drop"}

    def __init__(self, upstream: str, *, burst_at: int = 40, burst: int = 30) -> None:
        self.burst_at, self.burst = burst_at, burst
        host_port = upstream.split("://", 1)[1].rstrip("/")
        self.upstream_host, port = host_port.rsplit(":", 1)
        self.upstream_port = int(port)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "before": 0, "after": 0, "drop": 0}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def failed(self) -> int:
        return self.counts["before"] + self.counts["after"] + self.counts["drop"]

    def _fate(self) -> str:
        with self.lock:
            k = self.counts["requests"]
            fate = "before" if 0 <= k - self.burst_at < self.burst else self.FATES.get(k % 20, "ok")
            self.counts["requests"] += 1
            if fate != "ok":
                self.counts[fate] += 1
            return fate

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        fate = self._fate()
        if fate == "before":
            self._reply(req, 503, {"Content-Type": "application/xml"}, _SERVICE_UNAVAILABLE)
            return
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            # The Expect: 100-continue exchange was between the client and us.
            headers = {k: v for k, v in req.headers.items() if k.lower() not in {*_HOP_BY_HOP, "expect"}}
            conn.request(req.command, req.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP}
            status = resp.status
        finally:
            conn.close()
        if fate == "drop":
            req.close_connection = True
            req.connection.shutdown(2)
            return
        if fate == "after":
            self._reply(req, 503, {"Content-Type": "application/xml"}, _SERVICE_UNAVAILABLE)
            return
        self._reply(req, status, out_headers, data)

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], data: bytes) -> None:
        # A HEAD answer has no body but keeps the upstream's Content-Length (the object's size).
        length = {k.lower(): v for k, v in headers.items()}.get("content-length", "0")
        req.send_response(status)
        for k, v in headers.items():
            if k.lower() != "content-length":
                req.send_header(k, v)
        req.send_header("Content-Length", length if req.command == "HEAD" else str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)


@contextmanager
def sampled_memory(pids: Callable[[], list[int]], every: float = 0.1) -> Iterator[list[tuple[float, int, int]]]:
    """Sample ``pids()`` every ``every`` seconds in a thread while the block runs; yields the list it fills
    with (monotonic time, total RSS, total PSS) in bytes. PSS splits shared pages (the forked pool
    processes share torch with their parent) between the processes, so the PSS total does not count
    them twice; RSS does."""
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = pss = 0
            for pid in pids():
                try:
                    info = psutil.Process(pid).memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            samples.append((time.monotonic(), rss, pss))
            stop.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(5)
