"""Scale out, by simulation: a kernel that only sleeps, 1 to 16 worker processes against one Redis.

Issue 6, "Scale out, by simulation". Every shard sleeps ``--sleep`` S seconds before running
(``ASCENT_FAULT_INJECT=sleep:*:S``, the workers' testing hook) and then runs the real ``fool`` kernel on
one 16×16 image with the ``tiny`` model and one step (a few ms), so a task costs S plus what the
system adds. One local Redis (``producer.embedded.LocalRedis``) and a ``file://`` store in a temporary
folder serve every configuration. For each N in ``--workers`` (1, 2, 4, 8, 16):

- one ``ascent worker --concurrency N`` process (N prefork pool processes: the memory of one torch
  import shared copy-on-write, instead of N separate interpreters), ``OMP_NUM_THREADS=1``, started
  and stopped through ``producer.embedded`` (``bench.cluster.PoolCluster``, lent the one Redis);
- a warm-up run of N tasks (every pool process loads the model once), then the timed run:
  ``ascent submit`` of ``--rounds`` × N shards of one image (shard size 1), then
  ``ascent collect RUN --wait``;
- throughput = tasks / makespan, where the makespan runs from the first shard's start to the last
  record (from the records: ``written_at`` and the handler's ``seconds``); scaling efficiency =
  throughput_N / (N × throughput_1) (target ≥ 90 % up to 16); overhead per task = makespan × N / tasks
  − S (the wall time a task holds a worker beyond the sleep), split into the handler's own work beyond
  S (the tiny kernel, the store writes; from ``seconds``) and the rest (Celery, Redis, the record);
- the broker's cost: ``INFO commandstats`` (calls, µs inside commands) and ``INFO cpu`` (server CPU,
  user + sys) before and after the timed run, per task; and Redis's background load per idle worker
  process (``--idle`` seconds with the workers idle);
- the CPU the worker processes (main + pool) used per task, and how busy the machine was: on a 2-core
  box, N pool processes that all wake at once compete for the two cores.

From Redis's CPU per task and per idle worker process it estimates how many workers one Redis core can
feed at realistic GPU shard times (``--shard-times``, default 0.5, 2 and 10 s per shard).
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ascent.producer.processes import LocalRedis
from bench import cluster, common
from bench.cluster import RedisStats

SIZE = 16  # image side: the real kernel costs a few ms


@dataclass
class Config:
    workers: int
    tasks: int
    sleep: float
    makespan: float  # first shard start -> last record written (records)
    wall: float  # `ascent submit` start -> `ascent collect --wait` exit
    submit_wall: float
    handler_extra: float  # median of the records' `seconds` minus the sleep
    redis: dict[str, Any]
    redis_idle_cpu_per_s: float  # server CPU seconds per second with this worker idle
    redis_idle: dict[str, Any]  # the idle window's delta (commands by name)
    worker_cpu_main: float  # CPU seconds of the worker's main process during the timed run
    worker_cpu_pool: float  # ... of its pool processes
    machine_busy: float  # share of all cores busy during the timed run (everything)
    pss_mib: float  # worker main + pool, proportional set size (shared pages split)
    pids: int  # distinct pool processes that ran a timed task

    @property
    def throughput(self) -> float:
        return self.tasks / self.makespan

    @property
    def redis_cpu_per_task(self) -> float:
        """Redis server CPU per task, net of the load Redis has with this worker idle (its own cron and
        the worker's background traffic, counted separately per worker process) over the same time."""
        background = self.redis_idle_cpu_per_s * self.redis["seconds"]
        return max(0.0, self.redis["cpu"] - background) / self.tasks

    @property
    def overhead_per_task(self) -> float:
        """Wall time a task holds a worker slot beyond the sleep (s)."""
        return self.makespan * self.workers / self.tasks - self.sleep


def pss_mib(pid: int) -> float:
    import psutil

    total = 0
    for proc in [psutil.Process(pid), *cluster.pool_processes(pid)]:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            continue
    return total / 2**20


def run_config(
    n: int,
    rounds: int,
    sleep: float,
    idle: float,
    server: LocalRedis,
    tmp: Path,
    images: Any,
    labels: Any,
    quiet_wait: float = 60.0,
) -> Config:
    """One configuration on the running Redis ``server``: a worker with ``n`` pool processes, a warm-up
    run of ``n`` tasks, the timed run of ``rounds`` × ``n`` tasks, then ``idle`` seconds of Redis's load
    with the worker idle."""
    from ascent.shared.settings import Settings

    store = tmp / "store"
    tasks = rounds * n
    warm_npz = cluster.write_npz(tmp / f"warm-{n}.npz", images[:n], labels[:n])
    npz = cluster.write_npz(tmp / f"tasks-{n}.npz", images[:tasks], labels[:tasks])
    settings = Settings.from_env({"ASCENT_STORE": store.as_uri()})
    env = {"ASCENT_FAULT_INJECT": f"sleep:*:{sleep:g}", "OMP_NUM_THREADS": "1"}
    submit_env = cluster.ascent_env(OMP_NUM_THREADS="1")
    local = cluster.PoolCluster(
        settings, n, f"scale{n}", redis=cluster.lent(server), env=env, loglevel="WARNING", input_roots=[str(tmp)]
    )
    with local:
        pid = local.pid
        broker = local.broker_url

        def submit(path: Path, run_id: str) -> cluster.ProcRun:
            return cluster.submit_tiny(path, run_id, SIZE, broker, store.as_uri(), submit_env)

        def pool_cpu() -> float:
            return sum(cluster.tree_cpu([c.pid]) for c in cluster.pool_processes(pid))

        redis = RedisStats(broker)
        try:
            submit(warm_npz, f"warm-{n}")
            cluster.wait_records(store, f"warm-{n}", n, alive=local.check_workers)
            time.sleep(0.5)  # let the warm-up's acks and events settle

            run_id = f"scale-{n}"
            common.wait_for_quiet(max_wait=quiet_wait)
            busy0, total0 = common.proc_stat()
            pool0 = pool_cpu()
            main0 = cluster.tree_cpu([pid]) - pool0
            before = redis.snapshot()
            t0 = time.perf_counter()
            sub = submit(npz, run_id)
            collect_cmd = [*cluster.ASCENT, "collect", run_id, "--wait", "--timeout", "600", "--store", store.as_uri()]
            cluster.check(cluster.run_proc(collect_cmd, submit_env), f"ascent collect {run_id}")
            wall = time.perf_counter() - t0
            after = redis.snapshot()
            busy1, total1 = common.proc_stat()
            pool1 = pool_cpu()
            main1 = cluster.tree_cpu([pid]) - pool1
            memory = pss_mib(pid)

            time.sleep(0.5)
            idle0 = redis.snapshot()
            time.sleep(idle)
            idle1 = redis.snapshot()
            idle_delta = RedisStats.delta(idle0, idle1)
        finally:
            redis.close()

    records = cluster.shard_records(store, run_id)
    if len(records) != tasks:
        raise SystemExit(f"{run_id}: {len(records)} records for {tasks} tasks")
    starts = [r["written_at"] - r["seconds"] for r in records]
    makespan = max(r["written_at"] for r in records) - min(starts)
    return Config(
        workers=n,
        tasks=tasks,
        sleep=sleep,
        makespan=makespan,
        wall=wall,
        submit_wall=sub.wall,
        handler_extra=statistics.median(r["seconds"] for r in records) - sleep,
        redis=RedisStats.delta(before, after),
        redis_idle_cpu_per_s=idle_delta["cpu"] / idle_delta["seconds"],
        redis_idle=idle_delta,
        worker_cpu_main=main1 - main0,
        worker_cpu_pool=pool1 - pool0,
        machine_busy=(busy1 - busy0) / max(1e-9, total1 - total0),
        pss_mib=memory,
        pids=len({r.get("pid") for r in records}),
    )


def redis_benchmark(port: int | None, requests: int = 20000) -> dict[str, float]:
    """Requests/s of the commands a task uses most, from ``redis-benchmark`` (empty when it is absent)."""
    import shutil

    exe = shutil.which("redis-benchmark")
    if exe is None or port is None:
        return {}
    argv = [exe, "-h", "127.0.0.1", "-p", str(port), "-q", "-n", str(requests), "-c", "4"]
    argv += ["-t", "lpush,rpop,hset,zadd,publish"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    rps = {}
    for line in out.replace("\r", "\n").splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields[1:2] == ["requests"] and name.strip():
            try:
                rps[name.strip()] = float(fields[0])
            except ValueError:
                continue
    return rps


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], quiet_wait=60.0)
    parser.add_argument("--workers", default="1,2,4,8,16", help="pool sizes (default %(default)s)")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each shard sleeps (default 1.0)")
    parser.add_argument("--rounds", type=int, default=4, help="tasks per configuration = rounds × N (default 4)")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle Redis load measured per config")
    parser.add_argument("--shard-times", default="0.5,2,10", help="GPU seconds per shard for the estimate")
    args = parser.parse_args(argv)
    device = common.pick_device(args.device)
    counts = [int(v) for v in args.workers.split(",")]
    shard_times = [float(v) for v in args.shard_times.split(",")]
    report = common.Report(
        bench="scaleout",
        title=f"scale-out by simulation: a {args.sleep:g} s sleeping kernel, "
        f"{counts[0]}–{counts[-1]} workers, one Redis",
        env=common.environment(device),
        settings={
            "sleep_s": args.sleep,
            "tasks": f"{args.rounds}×N",
            "shard_size": 1,
            "workers": "one `ascent worker --concurrency N` (N prefork pool processes)",
            "kernel": f"fool, tiny model, {SIZE} px, 1 step",
            "store": "file:// (local disk)",
            "OMP_NUM_THREADS": 1,
        },
    )
    images, labels = cluster.small_images(args.rounds * max(counts), SIZE)
    results: list[Config] = []
    with tempfile.TemporaryDirectory(prefix="ascent-bench-scaleout-") as tmp_name:
        tmp = Path(tmp_name)
        with LocalRedis(tmp / "redis") as redis_server:
            stats = RedisStats(redis_server.url)
            time.sleep(0.5)
            idle0 = stats.snapshot()
            time.sleep(args.idle)
            empty = RedisStats.delta(idle0, stats.snapshot())
            stats.close()
            baseline = empty["cpu"] / empty["seconds"]  # Redis alone: its cron (hz 10), no clients
            for n in counts:
                started = time.perf_counter()
                c = run_config(
                    n,
                    args.rounds,
                    args.sleep,
                    args.idle,
                    redis_server,
                    tmp,
                    images,
                    labels,
                    args.quiet_wait,
                )
                results.append(c)
                common.log(
                    f"N={n}: {c.tasks} tasks, makespan {c.makespan:.2f} s, {c.throughput:.2f} tasks/s, "
                    f"overhead {c.overhead_per_task * 1e3:.0f} ms/task, machine busy {c.machine_busy:.0%} "
                    f"({time.perf_counter() - started:.0f} s with start-up)"
                )
            bench_rps = redis_benchmark(redis_server.port)

    base = next((c for c in results if c.workers == 1), results[0])
    per_worker_1 = base.throughput / base.workers
    rows = []
    for c in results:
        eff = c.throughput / (c.workers * per_worker_1)
        rd = c.redis
        rows.append(
            [
                c.workers,
                c.tasks,
                c.makespan,
                c.throughput,
                f"{eff:.1%}",
                c.overhead_per_task * 1e3,
                c.handler_extra * 1e3,
                (c.overhead_per_task - c.handler_extra) * 1e3,
                rd["calls"] / c.tasks,
                rd["usec"] / c.tasks,
                rd["cpu"] / c.tasks * 1e6,
                c.redis_cpu_per_task * 1e6,
                (c.worker_cpu_main + c.worker_cpu_pool) / c.tasks * 1e3,
                f"{c.machine_busy:.0%}",
                c.pss_mib,
                c.wall,
            ]
        )
    effs = {c.workers: c.throughput / (c.workers * per_worker_1) for c in results}
    worst = min(effs.items(), key=lambda kv: kv[1])
    report.metric(
        f"scaling efficiency, {counts[0]}–{counts[-1]} workers (throughput_N / (N × throughput_1))",
        ", ".join(f"{n}: {e:.0%}" for n, e in effs.items()),
        "≥ 90% up to 16",
        all(e >= 0.9 for e in effs.values()),
    )
    top = results[-1]
    report.metric(
        f"throughput at {top.workers} workers",
        f"{top.throughput:.2f} tasks/s (ideal {top.workers / args.sleep:.2f})",
    )
    report.metric(
        "overhead per task beyond the sleep (wall per task − S)",
        ", ".join(f"{c.workers}: {c.overhead_per_task * 1e3:.0f} ms" for c in results),
        "measured",
    )
    # Redis capacity: CPU per task (the largest configuration, the most realistic concurrency) and the
    # background load of an idle worker process (the N=1 configuration: one worker process).
    # Pooled over every configuration: Redis's CPU counters tick coarsely, a few ms per run of seconds.
    tasks_all = sum(c.tasks for c in results)
    c_task = sum(c.redis_cpu_per_task * c.tasks for c in results) / tasks_all
    c_idle = max(0.0, base.redis_idle_cpu_per_s - baseline)  # one idle worker process, Redis's own cron off
    # A run of a few tasks can net 0 (below the counters' tick): report it rather than divide by it.
    capacity = {t: 1.0 / (c_task / t + c_idle) if c_task / t + c_idle > 0 else math.inf for t in shard_times}
    per_core = f"{1 / c_task:,.0f} tasks/s per Redis core" if c_task > 0 else "below the counters' resolution"
    report.metric(
        "Redis server CPU per task (broker overhead)",
        f"{c_task * 1e6:.0f} µs (all {tasks_all} tasks; {top.redis['calls'] / top.tasks:.1f} commands and "
        f"{top.redis['usec'] / top.tasks:.0f} µs inside them at N={top.workers}) → {per_core}",
    )
    report.metric(
        "workers one Redis core can feed (100% busy; halve for headroom)",
        ", ".join(f"{common.fmt(w)} at {t:g} s/shard" for t, w in capacity.items()),
        "write down",
    )
    report.tables.append(
        common.Table(
            "per configuration (ms per task unless said; Redis figures per task; PSS = worker main + pool)",
            [
                "N",
                "tasks",
                "makespan s",
                "tasks/s",
                "efficiency",
                "overhead",
                "in handler beyond S",
                "outside handler",
                "Redis cmds",
                "Redis µs in cmds",
                "Redis CPU µs",
                "Redis CPU µs net",
                "worker CPU ms",
                "machine busy",
                "PSS MiB",
                "submit+collect wall s",
            ],
            rows,
        )
    )
    report.notes.append(
        f"Redis commands per task at N={top.workers} (submit, delivery, ack, events; most frequent): "
        f"{cluster.top_commands(top.redis, top.tasks, 8)}"
    )
    report.notes.append(
        f"Redis with no client: {baseline * 1e6:.0f} µs of CPU per second (its cron); 'Redis CPU µs net' = "
        "(server CPU over the timed run − the load measured with the same worker idle × its duration) / tasks"
    )
    report.notes.append(
        f"Redis background load of one idle worker process: {c_idle * 1e6:.0f} µs of server CPU per second "
        f"(N=1, Redis's own cron subtracted; with N={top.workers} pool processes in one worker: "
        f"{(top.redis_idle_cpu_per_s - baseline) * 1e6:.0f} µs/s — "
        "the consumer connection, heartbeats and event traffic are per worker process, not per pool process)"
    )
    idle = base.redis_idle
    report.notes.append(
        "what an idle worker process sends Redis per second (N=1): "
        + ", ".join(f"{name} {calls / idle['seconds']:.1f}" for name, (calls, _) in list(idle["per_cmd"].items())[:8])
    )
    if bench_rps:
        report.notes.append(
            "cross-check with redis-benchmark (same server, 4 clients, no pipelining, on this 2-core box "
            "with the client competing for the cores): "
            + ", ".join(f"{name} {rps:,.0f}/s" for name, rps in bench_rps.items())
            + f"; at {top.redis['calls'] / top.tasks:.1f} commands per task that is ≈ "
            f"{statistics.harmonic_mean(list(bench_rps.values())) / (top.redis['calls'] / top.tasks):,.0f} "
            "tasks/s"
        )
    report.notes.append(
        "capacity = 1 / (Redis CPU per task / shard time + idle load per worker process): one Redis core "
        "(Redis executes commands on one thread) fully busy; a fleet runs one worker process per GPU "
        "(--concurrency 1), so each GPU adds the per-process background load"
    )
    report.notes.append(
        f"worst efficiency {worst[1]:.1%} at N={worst[0]}; 'overhead' = makespan × N / tasks − S; "
        "'in handler beyond S' = median of the records' seconds − S (tiny kernel, attempt marker, PNG "
        "writes); 'outside handler' = the rest (Celery receive/ack, Redis, the record write, waiting for a "
        "core); 'worker CPU' = main + pool processes' CPU per task"
    )
    common.finish(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
