"""The queue is nearly free: what ``ascent run`` costs per image on top of the kernel, and per task.

In one run (issue 6, "The queue is nearly free"), with the same thread count everywhere
(``OMP_NUM_THREADS`` = ``--threads``, default the CPUs this process may use, which is also what the
embedded mode gives its one worker):

(a) in-process kernel cost per image: ``shared.kernels.fool`` (SqueezeNet 1.1 with the shared weights)
    on the first ``small`` (5) and on all ``big`` (25) val images towards class 6, the images the CLI
    sees; cost per image = (t_big − t_small) / (big − small).
(b) ``ascent run fool`` as a subprocess (embedded Redis + 1 local worker, a ``file://`` store in a
    temporary folder) on an .npz of the first 5 images and on all 25, for each ``--shard-sizes`` (the
    default 16, and 25 = the whole set as one batch like (a)); marginal cost per image =
    (T_big − T_small) / (big − small), reported as a ratio to (a) (target ≤ 1.2). The run's timeline
    (start-up, submit, wait, stop, collect) comes from its stderr notes, the worker's own time per shard
    from the shard records (``seconds``), and the per-image iteration counts are checked against (a).
(c) per-task overhead of dispatch + store round-trip: one embedded Redis + 1 worker, ``ascent submit``
    of ``--tasks`` shards of one 32×32 image each (model ``tiny``, fool with 1 step), after a warm-up
    run. One worker with one pool process runs the tasks back to back, so in steady state the spacing of
    consecutive records' ``written_at`` is the full cycle of one task (Redis → worker → store → ack →
    next). Overhead per task = cycle − the same kernel call timed in-process; split into "outside the
    handler" (cycle − the handler's own ``seconds``: Celery, Redis, the record write) and "in the
    handler, not the kernel" (npz read, PNG encoding, output and attempt-marker writes). Redis's own
    cost per task comes from ``INFO commandstats`` / ``INFO cpu`` before and after.

Trials are interleaved (a, b, b, ...; repeated ``--trials`` times) and the best of each figure is
kept; before each timed segment the script waits for other processes to calm down, and reports how
busy they kept the CPU. ``--full`` (GPU): 200 and 1,000 images (the 25 tiled), shard sizes 16 and 1,000.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/bench_queue.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.common import (
    REPO,
    TARGET_CLASS,
    Report,
    Table,
    _own_cpu,
    _proc_stat,
    assets_dir,
    base_parser,
    environment,
    finish,
    fmt,
    load_model,
    log,
    measure,
    peak_memory,
    pick_device,
    sync,
    wait_for_quiet,
    weights_path,
)

ASCENT = [sys.executable, "-m", "ascent.producer"]  # the `ascent` command, from this interpreter
RUN_TIMEOUT = 1800.0


# ----------------------------------------------------------------------------- helpers (also used by
# bench_scaleout)


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ascent_env(**extra: str) -> dict[str, str]:
    """The environment for ``ascent`` subprocesses: the repository importable, no broker or store from
    the caller's environment (each call names its own), unbuffered output, plus ``extra``."""
    env = dict(os.environ)
    for name in ("ASCENT_BROKER_URL", "ASCENT_STORE", "ASCENT_FAULT_INJECT"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def settle(seconds: int = 3, max_wait: float | None = None) -> float:
    """Wait (up to ``max_wait``, default ``QUIET_WAIT`` s) until other processes have used less than a
    quarter of the CPU for ``seconds`` consecutive one-second windows: a shared 2-core machine runs other
    benchmarks and test suites, and a kernel whose OpenMP threads compete for the cores slows down many
    times over, not by the share it loses. Returns the share last seen."""
    deadline = time.monotonic() + (QUIET_WAIT if max_wait is None else max_wait)
    quiet = 0
    share = 0.0
    while quiet < seconds:
        share = wait_for_quiet(max_wait=0.0)  # one 1 s window
        quiet = quiet + 1 if share < 0.25 else 0
        if time.monotonic() > deadline:
            break
    return share


def children_cpu() -> float:
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
    busy0, _ = _proc_stat()
    own0 = _own_cpu() + children_cpu()
    started_at = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env), cwd=REPO, text=True
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
    busy1, _ = _proc_stat()
    ours = _own_cpu() + children_cpu() - own0
    others = max(0.0, (busy1 - busy0) - ours) / (wall * cpus())
    out = "".join(out_lines)
    return ProcRun(wall, proc.returncode, out, "".join(err_lines), notes, min(1.0, others), started_at)


def check(run: ProcRun, what: str) -> ProcRun:
    if run.rc != 0:
        raise SystemExit(f"{what} exited {run.rc}:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return run


def shard_records(store_root: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's shard records (file store), sorted by ``written_at``."""
    folder = store_root / "runs" / run_id / "records"
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    return sorted(records, key=lambda r: r["written_at"])


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, X=images, y=labels)
    return path


def val25_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The 25 val images (N×224×224×3 uint8) and labels, as the CLI reads them."""
    data = np.load(assets_dir() / "cs231n" / "datasets" / "imagenet_val_25.npz")
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


# ----------------------------------------------------------------------------- (a) in-process kernel


def inprocess_fool(
    model: Any, images: torch.Tensor, device: torch.device, shard_size: int | None = None
) -> tuple[float, float, list[int], dict[int, int]]:
    """(wall, others' CPU share, iterations, forward+backward calls by batch size) of ``fool`` towards
    class 6 on ``images``: one call, or one call per ``shard_size`` images in turn (what a worker does
    with the shards of a run). Batch sizes are as the network sees them (a lone image padded to 2 on
    the CPU)."""
    from ascent.shared.kernels import fool

    step = shard_size or images.shape[0]
    calls: dict[int, int] = {}

    def count(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        if torch.is_grad_enabled():
            calls[inputs[0].shape[0]] = calls.get(inputs[0].shape[0], 0) + 1

    def run() -> list[int]:
        iterations: list[int] = []
        for start in range(0, images.shape[0], step):
            iterations += fool(model, images[start : start + step], TARGET_CLASS).iterations.tolist()
        return iterations

    settle()
    hook = model.stack.register_forward_pre_hook(count)
    try:
        timing = measure(run, device)
    finally:
        hook.remove()
    return timing.wall, timing.others, [int(i) for i in timing.out], dict(sorted(calls.items()))


# ----------------------------------------------------------------------------- (b) `ascent run fool`


@dataclass
class CliRun:
    n: int
    shard_size: int
    wall: float
    others: float
    startup: float  # spawn -> Redis and the worker ready
    submit: float  # ready -> all tasks enqueued
    wait: float  # enqueued -> every item recorded and the cluster stopped
    collect: float  # stopped -> summary printed, process exited
    worker_seconds: float  # sum of the shards' handler time (records)
    worker_peak_mb: dict[str, float]  # the worker's peak memory (records: peak_rss_mb, gpu_peak_mb)
    iterations: list[int]
    store: Path
    run_id: str


def cli_run(npz: Path, n: int, shard_size: int, tmp: Path, tag: str, threads: int) -> CliRun:
    store = tmp / f"store-{tag}"
    argv = [*ASCENT, "run", "fool", "--images", str(npz), "--target", str(TARGET_CLASS)]
    argv += ["--weights", str(weights_path()), "--store", store.as_uri(), "--workers", "1"]
    argv += ["--shard-size", str(shard_size), "--run-id", f"bench-{tag}"]
    settle()
    run = check(run_proc(argv, ascent_env(OMP_NUM_THREADS=str(threads))), f"ascent run ({tag})")
    ready = run.note_time("embedded Redis at") or 0.0
    submitted = run.note_time(f"run bench-{tag}:") or ready
    stopped = run.note_time("stopped the embedded") or run.wall
    records = shard_records(store, f"bench-{tag}")
    items = sorted((i for r in records for i in r["items"]), key=lambda i: i["item_id"])
    return CliRun(
        n=n,
        shard_size=shard_size,
        wall=run.wall,
        others=run.others,
        startup=ready,
        submit=submitted - ready,
        wait=stopped - submitted,
        collect=run.wall - stopped,
        worker_seconds=sum(r["seconds"] for r in records),
        worker_peak_mb={
            key: max(float(r[key]) for r in records if key in r)
            for key in ("peak_rss_mb", "gpu_peak_mb")
            if any(key in r for r in records)
        },
        iterations=[int(i["iterations"]) for i in items],
        store=store,
        run_id=f"bench-{tag}",
    )


@dataclass
class PipelineCosts:
    """Per-image work of the pipeline outside the kernel, timed in-process (ms, best of several)."""

    encode_png: float  # one 224×224 PNG at the store's compress_level (the worker writes 2 per image)
    encode_png_fast: float  # the same at compress_level 6 (the store's before 2026-11-26), for comparison
    collect_per_image: float  # collector: (collect(big run) − collect(small run)) / (big − small)
    collect_big: float
    collect_small: float


def pipeline_costs(image: np.ndarray, big_run: CliRun, small_run: CliRun) -> PipelineCosts:
    """Time what the worker and the collector do per image besides the kernel: PNG encoding (inputs/ and
    outputs/, written by the handler) and the collector (summary, items.jsonl, report.html with an image
    grid), on the stores the CLI runs left."""
    import io

    from PIL import Image

    from ascent.producer.collector import collect
    from ascent.shared.images import encode_png
    from ascent.shared.store import FileStore

    def best_ms(fn: Any, k: int) -> float:
        out = float("inf")
        for _ in range(k):
            t = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t)
        return out * 1e3

    def fast_png() -> bytes:  # the former setting, for comparison
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=6)
        return buffer.getvalue()

    settle()
    enc = best_ms(lambda: encode_png(image), 20)
    enc_fast = best_ms(fast_png, 20)
    big = best_ms(lambda: collect(FileStore(big_run.store), big_run.run_id), 3)
    small = best_ms(lambda: collect(FileStore(small_run.store), small_run.run_id), 3)
    per_image = (big - small) / (big_run.n - small_run.n)
    return PipelineCosts(enc, enc_fast, per_image, big, small)


# ----------------------------------------------------------------------------- (c) per-task overhead


@dataclass
class TaskOverhead:
    tasks: int
    window: int  # tasks in the steady-state window
    cycle_ms: float  # per task, steady state, one worker
    handler_ms: float  # median of the records' `seconds`
    kernel_ms: float  # the same kernel call in-process (best)
    store_ms: float  # the shard's store operations and PNG encodes, in-process (best)
    redis: dict[str, Any]
    submit_wall: float
    others: float

    @property
    def overhead_ms(self) -> float:
        return self.cycle_ms - self.kernel_ms

    @property
    def outside_handler_ms(self) -> float:
        return self.cycle_ms - self.handler_ms

    @property
    def handler_not_kernel_ms(self) -> float:
        return self.handler_ms - self.kernel_ms


TINY = {"model": "tiny", "size": 32, "max_iters": 1, "extra_iters": 0}


def tiny_kernel_ms(image: np.ndarray, device: torch.device, repeat: int = 200) -> float:
    """Best time of the tiny fool call one task makes (1 image, 1 step), in-process."""
    from ascent.shared.kernels import fool
    from ascent.shared.models import load_classifier
    from ascent.shared.tensors import to_tensor

    model = load_classifier(TINY["model"], weights=None, device=device)
    x = to_tensor([image], device)  # as the handler builds it

    def call() -> None:
        fool(model, x, TARGET_CLASS, max_iters=TINY["max_iters"], extra_iters=TINY["extra_iters"])

    for _ in range(10):
        call()
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        call()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def store_ops_ms(root: Path, image: np.ndarray, repeat: int = 200) -> float:
    """Best time of the store work one shard of one item does, in-process on a ``file://`` store: record
    exists?, list attempts, attempt marker put and delete, input and output PNG (encode + put), record put."""
    from ascent.shared.images import encode_png
    from ascent.shared.keys import run_key
    from ascent.shared.store import FileStore

    store = FileStore(root)
    best = float("inf")
    for k in range(repeat):
        shard = f"shard-{k:05d}"
        t = time.perf_counter()
        record = run_key("ops", "records", f"{shard}.json")
        store.exists(record)
        store.list(run_key("ops", "attempts", shard) + "/")
        marker = run_key("ops", "attempts", shard, f"{time.time_ns()}.json")
        store.put_json(marker, {"host": "h", "pid": 1, "started_at": time.time()})
        store.put(run_key("ops", "inputs", f"{k:06d}.png"), encode_png(image), "image/png")
        store.put(run_key("ops", "outputs", f"{k:06d}.png"), encode_png(image), "image/png")
        store.delete(marker)
        store.put_json(record, {"run_id": "ops", "shard_id": shard, "items": [{"item_id": f"{k:06d}"}]})
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def per_task_overhead(tmp: Path, n_tasks: int, threads: int, device: torch.device) -> TaskOverhead:
    from ascent.producer.embedded import Embedded
    from ascent.shared.settings import Settings

    images, labels = small_images(max(n_tasks, 8), TINY["size"])
    warm_npz = write_npz(tmp / "tiny-warm.npz", images[:8], labels[:8])
    npz = write_npz(tmp / "tiny.npz", images[:n_tasks], labels[:n_tasks])
    settle()
    kernel_ms = tiny_kernel_ms(images[0], device)
    store_ms = store_ops_ms(tmp / "store-ops", images[0])
    store = tmp / "store-tasks"
    settings = Settings.from_env({"ASCENT_STORE": store.as_uri()})
    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the worker's thread pool, as in (a) and (b)
    try:
        with Embedded(settings, workers=1, loglevel="WARNING") as cluster:
            env = ascent_env(OMP_NUM_THREADS=str(threads))

            def submit(path: Path, run_id: str) -> ProcRun:
                argv = [*ASCENT, "submit", "fool", "--images", str(path), "--target", str(TARGET_CLASS)]
                argv += ["--model", TINY["model"], "--size", str(TINY["size"])]
                argv += ["--max-iters", str(TINY["max_iters"]), "--extra-iters", str(TINY["extra_iters"])]
                argv += ["--shard-size", "1", "--broker", cluster.broker_url, "--store", store.as_uri()]
                return check(run_proc([*argv, "--run-id", run_id], env), f"ascent submit {run_id}")

            def wait_done(run_id: str, n: int) -> None:
                folder = store / "runs" / run_id / "records"
                deadline = time.monotonic() + 600
                while len(list(folder.glob("*.json"))) < n:
                    cluster.check_workers()
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{run_id}: not complete after 600 s")
                    time.sleep(0.05)

            submit(warm_npz, "tasks-warm")  # the pool process loads the model and warms up
            wait_done("tasks-warm", 8)
            redis = RedisStats(cluster.broker_url)
            procs = [w.proc.pid for w in cluster.workers]
            assert cluster.redis is not None and cluster.redis.proc is not None
            procs.append(cluster.redis.proc.pid)
            settle()
            busy0, _ = _proc_stat()
            own0 = _own_cpu() + children_cpu() + tree_cpu(procs)
            t0 = time.perf_counter()
            before = redis.snapshot()
            sub = submit(npz, "tasks")
            wait_done("tasks", n_tasks)
            after = redis.snapshot()
            wall = time.perf_counter() - t0
            busy1, _ = _proc_stat()
            ours = _own_cpu() + children_cpu() + tree_cpu(procs) - own0
            redis.close()
            others = max(0.0, (busy1 - busy0) - ours) / (wall * cpus())
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
    settle()  # once more after the run: the best of both counts
    kernel_ms = min(kernel_ms, tiny_kernel_ms(images[0], device))
    store_ms = min(store_ms, store_ops_ms(tmp / "store-ops-2", images[0]))
    records = shard_records(store, "tasks")
    # Steady state: skip the tasks that overlapped the submitting process.
    skip = min(max(5, n_tasks // 10), n_tasks - 2)
    window = records[skip:]
    cycle = (window[-1]["written_at"] - window[0]["written_at"]) / (len(window) - 1)
    handler = statistics.median(r["seconds"] for r in window[1:])
    return TaskOverhead(
        tasks=n_tasks,
        window=len(window) - 1,
        cycle_ms=cycle * 1e3,
        handler_ms=handler * 1e3,
        kernel_ms=kernel_ms,
        store_ms=store_ms,
        redis=RedisStats.delta(before, after),
        submit_wall=sub.wall,
        others=min(1.0, others),
    )


# ----------------------------------------------------------------------------- main

QUIET_WAIT = 300.0
DISTURBED = 0.15  # a timed segment during which other processes used more of the CPU is run again


def best(values: Sequence[float]) -> float:
    return min(values)


def shares(values: Sequence[float]) -> str:
    return "/".join(f"{o:.0%}" for o in values)


def main(argv: list[str] | None = None) -> int:
    global QUIET_WAIT
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP/torch threads (default: the CPUs)")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials, best kept (default 3)")
    parser.add_argument("--retries", type=int, default=3, help="extra tries of a disturbed segment (default 3)")
    parser.add_argument("--small", type=int, default=None, help="images in the small run (5; --full 200)")
    parser.add_argument("--big", type=int, default=None, help="images in the big run (25; --full 1000)")
    parser.add_argument("--shard-sizes", default=None, help="comma-separated (default 16,<big>)")
    parser.add_argument("--tasks", type=int, default=120, help="tiny tasks for the per-task overhead")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="max seconds to wait for a quiet CPU")
    args = parser.parse_args(argv)
    QUIET_WAIT = args.quiet_wait
    device = pick_device(args.device)
    threads = args.threads or cpus()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    small = args.small or (200 if args.full else 5)
    big = args.big or (1000 if args.full else 25)
    sizes = list(dict.fromkeys(int(v) for v in args.shard_sizes.split(","))) if args.shard_sizes else [16, big]
    report = Report(
        bench="queue",
        title=f"the queue is nearly free: `ascent run fool` {big} vs {small} images, per-task overhead",
        env=environment(device),
        settings={
            "small": small,
            "big": big,
            "shard_sizes": "/".join(map(str, sizes)),
            "workers": 1,
            "OMP_NUM_THREADS": threads,
            "trials": args.trials,
            "tiny_tasks": args.tasks,
        },
    )

    # Images: the val set (tiled for --full), written as the .npz files the CLI reads. In-process, the
    # kernel gets exactly the tensor the worker's handler builds from them (to_tensor: a permuted view,
    # i.e. channels-last memory), and, for comparison, the same values as a contiguous NCHW tensor (what
    # bench_fool and a caller of the kernel would pass): the layout changes the CPU time of the kernel.
    from ascent.shared.images import resize_center_crop
    from ascent.shared.kernels import fool
    from ascent.shared.tensors import to_tensor

    x_u8, y = val25_uint8()
    reps = -(-big // len(x_u8))
    x_u8, y = np.tile(x_u8, (reps, 1, 1, 1))[:big], np.tile(y, reps)[:big]
    layouts = {"handler": to_tensor([resize_center_crop(a, 224) for a in x_u8], device)}
    layouts["nchw"] = layouts["handler"].contiguous()
    model = load_model(device)
    for x in layouts.values():
        fool(model, x[:2], TARGET_CLASS, max_iters=3)  # warm-up (oneDNN primitives, allocator)

    # In-process segments: (layout, images, shard size or None = one call).
    segments = [(lay, n, None) for lay in layouts for n in (small, big)]
    segments += [("handler", big, s) for s in sizes if s < big]
    # CLI runs: (images, shard size); the small run is one shard whatever the shard size.
    runs = [(small, min(sizes))] if all(s >= small for s in sizes) else [(small, s) for s in sizes]
    runs += [(big, s) for s in sizes]

    inproc: dict[tuple[str, int, int | None], list[tuple[float, float]]] = {}
    iters: dict[tuple[str, int, int | None], list[int]] = {}
    calls: dict[tuple[str, int, int | None], dict[int, int]] = {}
    cli: dict[tuple[int, int], list[CliRun]] = {}
    with tempfile.TemporaryDirectory(prefix="ascent-bench-queue-") as tmp_name:
        tmp = Path(tmp_name)
        npz = {
            small: write_npz(tmp / f"val{small}.npz", x_u8[:small], y[:small]),
            big: write_npz(tmp / f"val{big}.npz", x_u8, y),
        }
        for trial in range(args.trials):
            for seg in segments:
                lay, n, shard = seg
                for _attempt in range(1 + args.retries):
                    wall, others, its, batches = inprocess_fool(model, layouts[lay][:n], device, shard)
                    inproc.setdefault(seg, []).append((wall, others))
                    iters[seg], calls[seg] = its, batches
                    what = f"in-process fool ({lay}) on {n}" + (f" in shards of {shard}" if shard else "")
                    log(f"trial {trial}: {what}: {wall:.2f} s, {others:.0%} others")
                    if others <= DISTURBED:
                        break
            for n, s in runs:
                for attempt in range(1 + args.retries):
                    r = cli_run(npz[n], n, s, tmp, f"t{trial}-n{n}-s{s}-a{attempt}", threads)
                    cli.setdefault((n, s), []).append(r)
                    log(
                        f"trial {trial}: ascent run on {n}, shard size {s}: {r.wall:.2f} s "
                        f"(start-up {r.startup:.1f}, submit {r.submit:.1f}, wait {r.wait:.1f}, "
                        f"collect {r.collect:.2f}; worker {r.worker_seconds:.2f} s; others {r.others:.0%})"
                    )
                    if r.others <= DISTURBED:
                        break
        log("pipeline work per image outside the kernel: PNG encoding, the collector")
        one_batch = max(sizes)
        costs = pipeline_costs(x_u8[0], cli[(big, one_batch)][-1], cli[runs[0]][-1])
        log("per-task overhead: tiny tasks through the embedded Redis and one worker")
        task = per_task_overhead(tmp, args.tasks, threads, device)

    # ---- (a) and (b): marginal cost per image
    t_in = {seg: best([w for w, _ in v]) for seg, v in inproc.items()}
    per_image = {lay: (t_in[(lay, big, None)] - t_in[(lay, small, None)]) / (big - small) for lay in layouts}
    small_runs = cli[runs[0]]
    T_small = best([r.wall for r in small_runs])
    T_small_run = best([r.wall - r.startup for r in small_runs])
    ws_small = best([r.worker_seconds for r in small_runs])
    rows: list[list[Any]] = []
    for seg in segments:
        lay, n, shard = seg
        rows.append(
            [
                f"in-process fool ({lay})",
                n,
                shard or "one call",
                t_in[seg],
                "",
                "",
                "",
                "",
                "",
                sum(iters[seg]),
                shares([o for _, o in inproc[seg]]),
            ]
        )
    for (n, s), rs in cli.items():
        b = min(rs, key=lambda r: r.wall)
        rows.append(
            [
                "ascent run fool",
                n,
                s,
                b.wall,
                b.startup,
                b.submit,
                b.wait,
                b.collect,
                b.worker_seconds,
                sum(b.iterations),
                shares([r.others for r in rs]),
            ]
        )
    same_iters = all(r.iterations == iters[("handler", n, None)] for (n, _), rs in cli.items() for r in rs)
    ratio_rows = []
    for s in sizes:
        big_runs = cli[(big, s)]
        marginal = (best([r.wall for r in big_runs]) - T_small) / (big - small)
        marginal_run = (best([r.wall - r.startup for r in big_runs]) - T_small_run) / (big - small)
        worker_marginal = (best([r.worker_seconds for r in big_runs]) - ws_small) / (big - small)
        split_key = ("handler", big, s if s < big else None)
        split_marginal = (t_in[split_key] - t_in[("handler", small, None)]) / (big - small)
        ratio = marginal / per_image["handler"]
        ratio_rows.append(
            [
                s,
                marginal * 1e3,
                marginal_run * 1e3,
                worker_marginal * 1e3,
                split_marginal * 1e3,
                per_image["handler"] * 1e3,
                ratio,
                marginal / split_marginal,
                marginal / per_image["nchw"],
            ]
        )
        report.metric(
            f"`ascent run` marginal cost per image / in-process kernel's (shard size {s})",
            f"{ratio:.2f}× ({marginal * 1e3:.0f} vs {per_image['handler'] * 1e3:.0f} ms/image; "
            f"vs the kernel run in the same shards: {marginal / split_marginal:.2f}×)",
            "≤ 1.2×",
            ratio <= 1.2,
        )
    report.metric(
        "in-process kernel per image: handler's tensor (channels-last) vs contiguous NCHW",
        f"{per_image['handler'] * 1e3:.0f} vs {per_image['nchw'] * 1e3:.0f} ms/image "
        f"(NCHW {per_image['nchw'] / per_image['handler']:.2f}× slower)",
    )
    extra = 2 * costs.encode_png + costs.collect_per_image
    report.metric(
        "pipeline work per image outside the kernel (2 PNG encodes in the worker + the collector)",
        f"{extra:.0f} ms/image = {extra / (per_image['handler'] * 1e3):.0%} of the kernel's "
        f"({costs.encode_png:.1f} ms per PNG, collector {costs.collect_per_image:.1f} ms)",
    )
    report.metric(
        "per-task overhead, dispatch + store round-trip (tiny kernel, 1 worker)",
        f"{task.overhead_ms:.1f} ms/task (outside the handler {task.outside_handler_ms:.1f}, "
        f"in the handler beside the kernel {task.handler_not_kernel_ms:.1f})",
        "measured in ms",
    )
    rd = task.redis
    report.metric(
        "Redis per task (1 worker)",
        f"{rd['calls'] / task.tasks:.1f} commands, {rd['usec'] / task.tasks:.0f} µs in commands, "
        f"{rd['cpu'] / task.tasks * 1e6:.0f} µs server CPU",
    )
    report.metric(
        "same per-image iterations in-process (handler's tensor) and through the queue",
        "yes" if same_iters else "NO",
    )
    report.metric("peak memory (this process)", ", ".join(f"{k} {fmt(v)}" for k, v in peak_memory(device).items()))
    for (n, shard_size), runs_ in sorted(cli.items()):
        if n != big:
            continue
        fastest = min(runs_, key=lambda r: r.wall)
        peak = fastest.worker_peak_mb
        report.metric(
            f"worker peak memory and throughput (ascent run, {n} images, shard size {shard_size})",
            ", ".join(f"{k.removesuffix('_mb').replace('_', ' ')} {v:,.0f} MiB" for k, v in peak.items())
            + f"; {n / fastest.worker_seconds:.2f} images/s in the worker, {n / fastest.wall:.2f} images/s "
            "end to end",
        )

    report.tables.append(
        Table(
            "marginal cost per image (ms): (T_big − T_small) / (big − small), best of the trials",
            [
                "shard size",
                "ascent run",
                "ascent run minus start-up",
                "worker handler (records)",
                "in-process, same shards",
                "in-process, one call",
                "ratio (target ≤ 1.2)",
                "ratio vs same shards",
                "ratio vs NCHW one call",
            ],
            ratio_rows,
        )
    )
    report.tables.append(
        Table(
            "runs (best wall of the trials; s). ascent run: start-up = spawn → Redis and worker ready (input "
            "enumeration included); submit = → tasks enqueued; wait = → every item recorded and the "
            "cluster stopped; collect = → summary, report.html, exit; worker = Σ shard handler time",
            [
                "what",
                "images",
                "shard size",
                "wall",
                "start-up",
                "submit",
                "wait",
                "collect",
                "worker",
                "Σ iterations",
                "others' CPU (each try)",
            ],
            rows,
        )
    )
    report.tables.append(
        Table(
            "the kernel's forward+backward calls by batch size as the network sees it (in-process, handler's "
            "tensor; a lone image is padded to 2 on the CPU, so a call at batch 2 may carry one image)",
            ["images", "shard size", "calls", "calls at batch ≤ 2", "image-passes", "calls by batch size"],
            [
                [
                    n,
                    shard or "one call",
                    sum(calls[seg].values()),
                    sum(c for b, c in calls[seg].items() if b <= 2),
                    sum(b * c for b, c in calls[seg].items()),
                    " ".join(f"{b}:{c}" for b, c in calls[seg].items()),
                ]
                for seg in segments
                if seg[0] == "handler" and seg[1] == big
                for n, shard in [(seg[1], seg[2])]
            ],
        )
    )
    report.tables.append(
        Table(
            "per-image work outside the kernel, in-process (ms; best of several)",
            [
                "PNG encode 224 px (the store's encode_png)",
                "same at zlib level 6",
                "collector per image",
                f"collect() {big} images",
                f"collect() {small} images",
                "worker (2 PNGs) + collector",
            ],
            [
                [
                    costs.encode_png,
                    costs.encode_png_fast,
                    costs.collect_per_image,
                    costs.collect_big,
                    costs.collect_small,
                    extra,
                ]
            ],
        )
    )
    report.tables.append(
        Table(
            f"per-task overhead: {task.tasks} tasks of one {TINY['size']}×{TINY['size']} image (model tiny, "
            f"fool {TINY['max_iters']} step), 1 worker; steady state over the last {task.window} (ms)",
            [
                "cycle per task",
                "handler (records)",
                "kernel in-process",
                "overhead = cycle − kernel",
                "outside handler",
                "handler − kernel",
                "store ops in-process",
                "others' CPU",
            ],
            [
                [
                    task.cycle_ms,
                    task.handler_ms,
                    task.kernel_ms,
                    task.overhead_ms,
                    task.outside_handler_ms,
                    task.handler_not_kernel_ms,
                    task.store_ms,
                    f"{task.others:.0%}",
                ]
            ],
        )
    )
    report.notes.append(
        f"Redis during the {task.tasks} tiny tasks (submit included): {rd['calls']} commands "
        f"({rd['calls'] / task.tasks:.1f}/task; most frequent per task: {top_commands(rd, task.tasks)}), "
        f"{rd['usec'] / task.tasks:.0f} µs/task inside commands, {rd['cpu'] / task.tasks * 1e6:.0f} µs/task "
        f"of server CPU (user+sys, I/O included) over {rd['seconds']:.1f} s"
    )
    h, c = ("handler", big, None), ("nchw", big, None)
    report.notes.append(
        f"in-process layouts on {big} images: the handler's tensor (channels-last memory, from "
        f"worker.handlers.to_tensor) {t_in[h]:.2f} s, contiguous NCHW {t_in[c]:.2f} s; Σ iterations "
        f"{sum(iters[h])} vs {sum(iters[c])} (the layout changes float rounding, so a few images take a "
        "step more or less); the target compares like with like (the handler's tensor)"
    )
    report.notes.append(
        f"threads: OMP_NUM_THREADS={threads} and torch.set_num_threads({threads}) in-process; the same "
        "OMP_NUM_THREADS for the `ascent run` subprocess (the embedded worker inherits it). A segment "
        f"during which other processes used more than {DISTURBED:.0%} of the CPU was run again (up to "
        f"{args.retries} more times); the best of all tries counts"
    )
    if device.type != "cuda":
        report.notes.append("No GPU in this run: the --full (GPU) sizes were not measured.")
    finish(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
