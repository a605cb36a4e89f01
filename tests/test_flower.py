"""``ascent flower`` as a process against a private, password-protected Redis with two ``ascent worker``
processes: its HTTP API lists the workers and a run's tasks (with basic auth only), ``/metrics`` has
Prometheus metrics, ``/healthcheck`` answers without auth, and it refuses to listen on a non-loopback
address without auth."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from ascent.producer.processes import free_port, port_open, stop_groups
from tests.test_distributed import PasswordRedis, Workers, ascent, ascent_env

AUTH = ("operator", "flower-pw-8c1f")
DEADLINE = 90.0


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = DEADLINE) -> Any:
    """Call ``fetch`` until ``done(result)``; fail naming ``what`` and the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"{what}: still {result!r} after {timeout:.0f}s"
        time.sleep(0.5)


class Flower:
    """``ascent flower ARGS`` as a process in its own process group; its output goes to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ascent.producer", "flower", "--port", str(self.port), *args],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, auth: tuple[str, str] | None = AUTH) -> requests.Response:
        return requests.get(self.base + path, auth=auth, timeout=10)

    def wait_until_up(self) -> None:
        def health() -> int | None:
            assert self.proc.poll() is None, f"flower exited {self.proc.returncode}:\n{self.output()}"
            try:
                return self.get("/healthcheck", auth=None).status_code
            except requests.ConnectionError:
                return None

        poll(health, lambda code: code == 200, "GET /healthcheck")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_groups([self.proc], grace=10)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[PasswordRedis, Workers, dict[str, str]]]:
    server = PasswordRedis(tmp_path / "redis", password="redis-pw-for-flower-3e9a")
    env = ascent_env(ASCENT_BROKER_URL=server.url(), ASCENT_STORE=(tmp_path / "store").as_uri())
    # Started without -n, as an operator would: each takes a name of its own (two nodes, not one).
    workers = Workers(["flower-a", "flower-b"], env, tmp_path / "logs", tmp_path, named=False)
    try:
        workers.wait_until_ready()
        yield server, workers, env
    finally:
        workers.stop()
        server.stop()


def write_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.integration
@pytest.mark.slow
def test_flower_lists_both_workers_and_the_runs_tasks_and_serves_metrics(fleet, tmp_path):
    server, workers, env = fleet
    flower = Flower(["--basic-auth", ":".join(AUTH)], env, tmp_path / "flower.log", tmp_path)
    try:
        flower.wait_until_up()

        listed = poll(
            lambda: flower.get("/api/workers?refresh=1").json(),
            lambda found: workers.nodes <= set(found),
            "GET /api/workers",
        )
        assert ascent_task_registered(listed, workers.nodes)
        assert server.password not in json.dumps(listed)  # worker stats and conf leave the password out

        args = ["fool", "--images", str(write_images(tmp_path / "images", 4)), "--target", "6"]
        args += ["--model", "tiny", "--size", "32", "--max-iters", "3", "--shard-size", "2"]
        run_id = ascent(["submit", *args], env, tmp_path).stdout.splitlines()[-1]

        def run_tasks() -> list[dict[str, Any]]:
            tasks = flower.get("/api/tasks?taskname=ascent.run_shard").json().values()
            return [t for t in tasks if run_id in (t.get("args") or "")]

        tasks = poll(run_tasks, lambda ts: len(ts) == 2 and all(t["state"] == "SUCCESS" for t in ts), "tasks")
        assert {t["worker"] for t in tasks} <= workers.nodes

        metrics = flower.get("/metrics", auth=None).text
        for node in workers.nodes:
            assert f'flower_worker_online{{worker="{node}"}} 1.0' in metrics
        succeeded = re.findall(
            r'flower_events_total\{task="ascent.run_shard",type="task-succeeded",worker="[^"]+"\} (\d+)',
            metrics,
        )
        assert sum(float(n) for n in succeeded) >= 2
        assert "flower_task_runtime_seconds_bucket" in metrics

        assert flower.get("/api/workers", auth=None).status_code == 401
        assert flower.get("/api/tasks", auth=None).status_code == 401
        assert flower.get("/api/workers", auth=(AUTH[0], "wrong")).status_code == 401
        health = flower.get("/healthcheck", auth=None)
        assert (health.status_code, health.text) == (200, "OK")
    finally:
        flower.stop()
    assert server.password not in flower.output() and AUTH[1] not in flower.output()


def ascent_task_registered(listed: dict[str, Any], nodes: set[str]) -> bool:
    return all("ascent.run_shard" in listed[node].get("registered", []) for node in nodes)


@pytest.mark.integration
def test_flower_refuses_every_address_but_loopback_without_auth(tmp_path):
    env = ascent_env(ASCENT_BROKER_URL="redis://127.0.0.1:1/0")  # never reached: it refuses first
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "ascent.producer", "flower", "--address", "0.0.0.0", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "ascent: error: refusing to serve Flower on 0.0.0.0 without authentication: pass --basic-auth "
        "USER:PASSWORD or set ASCENT_FLOWER_BASIC_AUTH (or listen on 127.0.0.1)"
    )
    assert not port_open(port)


@pytest.mark.integration
def test_flower_takes_basic_auth_from_the_environment(tmp_path, redis_url):
    env = ascent_env(ASCENT_BROKER_URL=redis_url, ASCENT_FLOWER_BASIC_AUTH=":".join(AUTH))
    flower = Flower(["--address", "0.0.0.0"], env, tmp_path / "flower.log", tmp_path)
    try:
        flower.wait_until_up()
        assert flower.get("/api/workers", auth=None).status_code == 401
        assert flower.get("/api/workers").status_code == 200
        assert AUTH[1] not in " ".join(psutil.Process(flower.proc.pid).cmdline())  # not in `ps`
    finally:
        flower.stop()
    assert "Visit me at" in flower.output() and AUTH[1] not in flower.output()


@pytest.mark.integration
def test_flower_stops_on_sigterm_also_when_the_broker_is_gone(tmp_path):
    # Flower's periodic "enable events" broadcast retries for ever against a dead broker; the process
    # must still end on SIGTERM (docker compose down, systemctl stop), not wait for that thread.
    server = PasswordRedis(tmp_path / "redis", password="redis-pw-gone")
    flower = Flower([], ascent_env(ASCENT_BROKER_URL=server.url()), tmp_path / "flower.log", tmp_path)
    try:
        flower.wait_until_up()
        server.stop()
        time.sleep(6)  # past Flower's 5 s enable-events interval: a broadcast is now stuck retrying
        flower.proc.send_signal(signal.SIGTERM)
        assert flower.proc.wait(15) == 0, flower.output()
    finally:
        flower.stop()
        server.stop()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("flower.internal", False),
    ],
)
def test_only_loopback_addresses_may_go_without_auth(address, loopback):
    from ascent.producer.flower import is_loopback

    assert is_loopback(address) is loopback


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """``main()`` installs its SIGTERM/SIGHUP handlers in this process: put the old ones back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("auth", ["admin", "admin:", ":pw", "admin:pw,bob"])
def test_a_malformed_or_empty_password_is_refused_before_flower_starts(auth, capsys, monkeypatch, restore_signals):
    from ascent.producer.cli import main

    monkeypatch.delenv("ASCENT_FLOWER_BASIC_AUTH", raising=False)
    assert main(["flower", "--basic-auth", auth, "--broker", "redis://127.0.0.1:1/0"]) == 2
    assert "ascent: error: --basic-auth: must be USER:PASSWORD" in capsys.readouterr().err
