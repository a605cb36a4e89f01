"""What the queue benchmarks (bench_queue, bench_scaleout) share: the ``ascent`` command as a timed
subprocess, the input files it reads, the shard records it leaves in a ``file://`` store, Redis's own
counters, the CPU of process trees, and local clusters started through the product's
``ascent.producer.embedded`` (its ``LocalRedis``, ``Embedded`` and process-group handling).

- ``run_proc``: run ``ascent ...`` to completion, timestamping its ``ascent:`` notes on stderr.
- ``submit_tiny``: ``ascent submit fool`` of one-image shards of the cheapest kernel call.
- ``wait_records`` / ``shard_records``: wait for, and read, a run's shard records.
- ``RedisStats``: ``INFO commandstats`` / ``INFO cpu`` snapshots and their difference.
- ``lent``: a Redis factory for ``Embedded`` that hands it a server started (and stopped) by the
  caller, so that several clusters in turn share one server.
- ``PoolCluster``: ``Embedded`` with one ``ascent worker --concurrency N`` (N prefork pool processes)
  instead of N single-process workers, the way a fleet host runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ascent.producer.embedded import Embedded, LocalWorker
from ascent.producer.processes import EmbeddedError, LocalRedis, log_tail, spawn
from ascent.shared.settings import Settings
from bench import common

ASCENT = [sys.executable, "-m", "ascent.producer"]  # the `ascent` command, from this interpreter
RUN_TIMEOUT = 1800.0
# fool's cheapest call, a few ms per image: the tiny model, one step, no extra steps
TINY_MODEL = "tiny"
TINY_FOOL = {"max_iters": 1, "extra_iters": 0}


# ----------------------------------------------------------------------------- CPU of processes


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def children_cpu() -> float:
    """CPU seconds (user + sys) of this process's reaped children."""
    t = os.times()
    return t.children_user + t.children_system


def tree_cpu(pids: Sequence[int]) -> float:
    """CPU seconds (user + sys) of the processes ``pids`` and their live descendants."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def pool_processes(pid: int) -> list[Any]:
    """The live descendants of ``pid`` (a prefork worker's pool processes), as psutil processes."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


# ----------------------------------------------------------------------------- the ascent command


def ascent_env(**extra: str) -> dict[str, str]:
    """The environment for ``ascent`` subprocesses: no broker, store or fault injection from the
    caller's environment (each call names its own), unbuffered output, plus ``extra``."""
    env = dict(os.environ)
    for name in ("ASCENT_BROKER_URL", "ASCENT_STORE", "ASCENT_FAULT_INJECT"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class ProcRun:
    """A finished subprocess: wall seconds, exit code, output, the wall time (since start) of each stderr
    line that begins with ``ascent:``, and the share of the machine other processes used meanwhile."""

    wall: float
    rc: int
    stdout: str
    stderr: str
    notes: list[tuple[float, str]] = field(default_factory=list)
    others: float = 0.0
    started_at: float = 0.0  # time.time() at start

    def note_time(self, startswith: str) -> float | None:
        for t, line in self.notes:
            if line.startswith(startswith):
                return t
        return None


def run_proc(argv: Sequence[str], env: Mapping[str, str], timeout: float = RUN_TIMEOUT) -> ProcRun:
    """Run ``argv`` to completion, timestamping its ``ascent:`` notes as they arrive on stderr.

    ``others``: busy CPU of the whole machine minus this process and its (reaped) descendants, as a share
    of all cores, over the run (the subprocess's own workers and Redis are reaped by it, so they count
    as ours)."""
    busy0, _ = common.proc_stat()
    own0 = common.own_cpu() + children_cpu()
    started_at = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env), cwd=common.REPO, text=True
    )
    notes: list[tuple[float, str]] = []
    err_lines: list[str] = []
    out_lines: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            for part in line.replace("\r", "\n").splitlines():
                if part.startswith("ascent:"):
                    notes.append((time.perf_counter() - start, part.removeprefix("ascent:").strip()))

    def read_stdout() -> None:
        assert proc.stdout is not None
        out_lines.extend(proc.stdout)

    readers = [threading.Thread(target=f, daemon=True) for f in (read_stderr, read_stdout)]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # `ascent run` stops everything it started on SIGTERM
        proc.wait(60)
    wall = time.perf_counter() - start
    for reader in readers:
        reader.join(10)
    busy1, _ = common.proc_stat()
    ours = common.own_cpu() + children_cpu() - own0
    others = max(0.0, (busy1 - busy0) - ours) / (wall * cpus())
    out = "".join(out_lines)
    return ProcRun(wall, proc.returncode, out, "".join(err_lines), notes, min(1.0, others), started_at)


def check(run: ProcRun, what: str) -> ProcRun:
    if run.rc != 0:
        raise SystemExit(f"{what} exited {run.rc}:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return run


def submit_tiny(images: Path, run_id: str, size: int, broker: str, store: str, env: Mapping[str, str]) -> ProcRun:
    """``ascent submit fool`` of ``images`` (an .npz) towards class 6 in shards of one image each, with
    the tiny kernel call (``TINY_MODEL``, ``TINY_FOOL``) at ``size`` px; exits with the command's output
    if it fails."""
    argv = [*ASCENT, "submit", "fool", "--images", str(images), "--target", str(common.TARGET_CLASS)]
    argv += ["--model", TINY_MODEL, "--size", str(size)]
    argv += ["--max-iters", str(TINY_FOOL["max_iters"]), "--extra-iters", str(TINY_FOOL["extra_iters"])]
    argv += ["--shard-size", "1", "--broker", broker, "--store", store, "--run-id", run_id]
    return check(run_proc(argv, env), f"ascent submit {run_id}")


# ----------------------------------------------------------------------------- inputs and records


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, X=images, y=labels)
    return path


def val25_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The 25 val images (N×224×224×3 uint8) and labels, as the CLI reads them."""
    data = np.load(common.assets_dir() / "cs231n" / "datasets" / "imagenet_val_25.npz")
    return np.asarray(data["X"]), np.asarray(data["y"])


def small_images(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` size×size×3 uint8 images: the val images downscaled (tiled), or noise without the assets."""
    from PIL import Image

    try:
        images, labels = val25_uint8()
        small = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in images])
    except (OSError, KeyError):
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (25, size, size, 3), dtype=np.uint8)
        labels = np.zeros(25, dtype=np.int64)
    reps = -(-n // len(small))
    return np.tile(small, (reps, 1, 1, 1))[:n].copy(), np.tile(labels, reps)[:n].copy()


def shard_records(store_root: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's shard records (file store), sorted by ``written_at``."""
    folder = store_root / "runs" / run_id / "records"
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    return sorted(records, key=lambda r: r["written_at"])


def wait_records(
    store_root: Path, run_id: str, n: int, timeout: float = 600, alive: Callable[[], None] | None = None
) -> None:
    """Until the run has ``n`` shard records in the file store; ``alive`` (e.g. a cluster's
    ``check_workers``) is called meanwhile to fail early when a process it watches has died."""
    folder = store_root / "runs" / run_id / "records"
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("*.json"))) < n:
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"{run_id}: {n} records not written after {timeout:.0f} s")
        time.sleep(0.05)


# ----------------------------------------------------------------------------- Redis


class RedisStats:
    """Redis's own cost between two snapshots: commands (calls, usec from INFO commandstats) and the
    server's CPU seconds (INFO cpu, user + sys, all threads)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def snapshot(self) -> dict[str, Any]:
        stats = self.client.info("commandstats")
        cpu = self.client.info("cpu")
        return {
            "commands": {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in stats.items()},
            "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            "time": time.perf_counter(),
        }

    @staticmethod
    def delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
        per_cmd = {}
        for name, (calls, usec) in after["commands"].items():
            c0, u0 = before["commands"].get(name, (0, 0))
            if calls - c0 > 0:
                per_cmd[name] = (calls - c0, usec - u0)
        # INFO itself (our snapshots) is not the workload.
        per_cmd.pop("info", None)
        return {
            "calls": sum(c for c, _ in per_cmd.values()),
            "usec": sum(u for _, u in per_cmd.values()),
            "cpu": after["cpu"] - before["cpu"],
            "seconds": after["time"] - before["time"],
            "per_cmd": dict(sorted(per_cmd.items(), key=lambda kv: -kv[1][0])),
        }

    def close(self) -> None:
        self.client.close()


def top_commands(delta: Mapping[str, Any], per: float, k: int = 6) -> str:
    return ", ".join(f"{name} {calls / per:.1f}" for name, (calls, _) in list(delta["per_cmd"].items())[:k])


# ----------------------------------------------------------------------------- clusters


class _LentRedis(LocalRedis):
    """A running ``LocalRedis`` as an ``Embedded`` cluster sees it: starting it returns it as it is,
    stopping it leaves it running (its owner stops it)."""

    def __init__(self, server: LocalRedis) -> None:
        super().__init__(server.directory)
        self.proc, self.port, self.log = server.proc, server.port, server.log

    def start(self, attempts: int = 3) -> LocalRedis:
        return self

    def stop(self) -> None:
        pass


def lent(server: LocalRedis) -> Callable[[Path], LocalRedis]:
    """A Redis factory for ``Embedded(redis=...)`` that hands it ``server`` (already started by the
    caller, which also stops it): one server, and one set of counters, for several clusters in turn."""
    if server.proc is None:
        raise EmbeddedError("lend a started LocalRedis")
    return lambda _folder: _LentRedis(server)


class PoolCluster(Embedded):
    """``Embedded`` with one worker process, ``ascent worker --concurrency N`` (N prefork pool
    processes sharing one torch import copy-on-write), named ``name``: ready when it answers a ping and
    has forked its N pool processes. Everything else (Redis from the factory, the worker's environment,
    process groups, stopping) is ``Embedded``'s."""

    def __init__(self, settings: Settings, concurrency: int, name: str, **embedded: Any) -> None:
        super().__init__(settings, workers=1, **embedded)
        self.concurrency = concurrency
        self.name = name

    @property
    def pid(self) -> int:
        """The worker's main process."""
        return self.workers[0].proc.pid

    def _start_workers(self) -> None:
        assert self.tmpdir is not None
        log = self.tmpdir / "worker-0.log"
        argv = [*ASCENT, "worker", "--concurrency", str(self.concurrency), "-n", f"{self.name}@%h"]
        argv += ["--loglevel", self.loglevel]
        self.workers.append(LocalWorker(0, self.name, spawn(argv, log, self.worker_env()), log))

    def _wait_for_workers(self) -> None:
        super()._wait_for_workers()
        deadline = time.monotonic() + self.startup_timeout
        while len(pool_processes(self.pid)) < self.concurrency:
            self.check_workers()
            if time.monotonic() > deadline:
                worker = self.workers[0]
                raise EmbeddedError(
                    f"{worker.name} has not forked {self.concurrency} pool processes after "
                    f"{self.startup_timeout:.0f} s:\n{log_tail(worker.log)}"
                )
            time.sleep(0.2)
