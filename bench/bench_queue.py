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

import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import cluster, common
from bench.cluster import ProcRun, RedisStats

TINY_SIZE = 32  # px of the one image of a tiny task (c)


def quiet_for(seconds: int = 3, max_wait: float | None = None) -> float:
    """Wait (up to ``max_wait``, default ``QUIET_WAIT`` s) until other processes have used less than a
    quarter of the CPU for ``seconds`` consecutive one-second windows: a shared 2-core machine runs other
    benchmarks and test suites, and a kernel whose OpenMP threads compete for the cores slows down many
    times over, not by the share it loses. Returns the share last seen."""
    deadline = time.monotonic() + (QUIET_WAIT if max_wait is None else max_wait)
    quiet = 0
    share = 0.0
    while quiet < seconds:
        share = common.wait_for_quiet(max_wait=0.0)  # one 1 s window
        quiet = quiet + 1 if share < 0.25 else 0
        if time.monotonic() > deadline:
            break
    return share


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

    def run() -> list[int]:
        iterations: list[int] = []
        for start in range(0, images.shape[0], step):
            iterations += fool(model, images[start : start + step], common.TARGET_CLASS).iterations.tolist()
        return iterations

    quiet_for()
    with common.calls_of(model.stack) as calls:
        timing = common.measure(run, device)
    batches = Counter(c.batch for c in calls if c.grad)
    return timing.wall, timing.others, [int(i) for i in timing.out], dict(sorted(batches.items()))


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
    argv = [*cluster.ASCENT, "run", "fool", "--images", str(npz), "--target", str(common.TARGET_CLASS)]
    argv += ["--weights", str(common.weights_path()), "--store", store.as_uri(), "--workers", "1"]
    argv += ["--shard-size", str(shard_size), "--run-id", f"bench-{tag}"]
    quiet_for()
    run = cluster.check(cluster.run_proc(argv, cluster.ascent_env(OMP_NUM_THREADS=str(threads))), f"ascent run ({tag})")
    ready = run.note_time("embedded Redis at") or 0.0
    submitted = run.note_time(f"run bench-{tag}:") or ready
    stopped = run.note_time("stopped the embedded") or run.wall
    records = cluster.shard_records(store, f"bench-{tag}")
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

    quiet_for()
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


def tiny_kernel_ms(image: np.ndarray, device: torch.device, repeat: int = 200) -> float:
    """Best time of the tiny fool call one task makes (1 image, 1 step), in-process."""
    from ascent.shared.kernels import fool
    from ascent.shared.models import load_classifier
    from ascent.shared.tensors import to_tensor

    model = load_classifier(cluster.TINY_MODEL, weights=None, device=device)
    x = to_tensor([image], device)  # as the handler builds it

    def call() -> None:
        fool(model, x, common.TARGET_CLASS, **cluster.TINY_FOOL)

    for _ in range(10):
        call()
    best = float("inf")
    for _ in range(repeat):
        common.sync(device)
        t = time.perf_counter()
        call()
        common.sync(device)
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

    images, labels = cluster.small_images(max(n_tasks, 8), TINY_SIZE)
    warm_npz = cluster.write_npz(tmp / "tiny-warm.npz", images[:8], labels[:8])
    npz = cluster.write_npz(tmp / "tiny.npz", images[:n_tasks], labels[:n_tasks])
    quiet_for()
    kernel_ms = tiny_kernel_ms(images[0], device)
    store_ms = store_ops_ms(tmp / "store-ops", images[0])
    store = tmp / "store-tasks"
    settings = Settings.from_env({"ASCENT_STORE": store.as_uri()})
    env = cluster.ascent_env(OMP_NUM_THREADS=str(threads))  # the worker's thread pool, as in (a) and (b)
    with Embedded(
        settings, workers=1, loglevel="WARNING", env={"OMP_NUM_THREADS": str(threads)}, input_roots=[str(tmp)]
    ) as local:

        def submit(path: Path, run_id: str) -> ProcRun:
            return cluster.submit_tiny(path, run_id, TINY_SIZE, local.broker_url, store.as_uri(), env)

        submit(warm_npz, "tasks-warm")  # the pool process loads the model and warms up
        cluster.wait_records(store, "tasks-warm", 8, alive=local.check_workers)
        redis = RedisStats(local.broker_url)
        procs = [w.proc.pid for w in local.workers]
        assert local.redis is not None and local.redis.proc is not None
        procs.append(local.redis.proc.pid)
        quiet_for()
        busy0, _ = common.proc_stat()
        own0 = common.own_cpu() + cluster.children_cpu() + cluster.tree_cpu(procs)
        t0 = time.perf_counter()
        before = redis.snapshot()
        sub = submit(npz, "tasks")
        cluster.wait_records(store, "tasks", n_tasks, alive=local.check_workers)
        after = redis.snapshot()
        wall = time.perf_counter() - t0
        busy1, _ = common.proc_stat()
        ours = common.own_cpu() + cluster.children_cpu() + cluster.tree_cpu(procs) - own0
        redis.close()
        others = max(0.0, (busy1 - busy0) - ours) / (wall * cluster.cpus())
    quiet_for()  # once more after the run: the best of both counts
    kernel_ms = min(kernel_ms, tiny_kernel_ms(images[0], device))
    store_ms = min(store_ms, store_ops_ms(tmp / "store-ops-2", images[0]))
    records = cluster.shard_records(store, "tasks")
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
    parser = common.base_parser(__doc__.splitlines()[0], quiet_wait=300.0)
    parser.add_argument("--threads", type=int, default=None, help="OMP/torch threads (default: the CPUs)")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials, best kept (default 3)")
    parser.add_argument("--retries", type=int, default=3, help="extra tries of a disturbed segment (default 3)")
    parser.add_argument("--small", type=int, default=None, help="images in the small run (5; --full 200)")
    parser.add_argument("--big", type=int, default=None, help="images in the big run (25; --full 1000)")
    parser.add_argument("--shard-sizes", default=None, help="comma-separated (default 16,<big>)")
    parser.add_argument("--tasks", type=int, default=120, help="tiny tasks for the per-task overhead")
    args = parser.parse_args(argv)
    QUIET_WAIT = args.quiet_wait
    device = common.pick_device(args.device)
    threads = args.threads or cluster.cpus()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    small = args.small or (200 if args.full else 5)
    big = args.big or (1000 if args.full else 25)
    sizes = list(dict.fromkeys(int(v) for v in args.shard_sizes.split(","))) if args.shard_sizes else [16, big]
    report = common.Report(
        bench="queue",
        title=f"the queue is nearly free: `ascent run fool` {big} vs {small} images, per-task overhead",
        env=common.environment(device),
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

    x_u8, y = cluster.val25_uint8()
    reps = -(-big // len(x_u8))
    x_u8, y = np.tile(x_u8, (reps, 1, 1, 1))[:big], np.tile(y, reps)[:big]
    layouts = {"handler": to_tensor([resize_center_crop(a, 224) for a in x_u8], device)}
    layouts["nchw"] = layouts["handler"].contiguous()
    model = common.load_model(device)
    for x in layouts.values():
        fool(model, x[:2], common.TARGET_CLASS, max_iters=3)  # warm-up (oneDNN primitives, allocator)

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
            small: cluster.write_npz(tmp / f"val{small}.npz", x_u8[:small], y[:small]),
            big: cluster.write_npz(tmp / f"val{big}.npz", x_u8, y),
        }
        for trial in range(args.trials):
            for seg in segments:
                lay, n, shard = seg
                for _attempt in range(1 + args.retries):
                    wall, others, its, batches = inprocess_fool(model, layouts[lay][:n], device, shard)
                    inproc.setdefault(seg, []).append((wall, others))
                    iters[seg], calls[seg] = its, batches
                    what = f"in-process fool ({lay}) on {n}" + (f" in shards of {shard}" if shard else "")
                    common.log(f"trial {trial}: {what}: {wall:.2f} s, {others:.0%} others")
                    if others <= DISTURBED:
                        break
            for n, s in runs:
                for attempt in range(1 + args.retries):
                    r = cli_run(npz[n], n, s, tmp, f"t{trial}-n{n}-s{s}-a{attempt}", threads)
                    cli.setdefault((n, s), []).append(r)
                    common.log(
                        f"trial {trial}: ascent run on {n}, shard size {s}: {r.wall:.2f} s "
                        f"(start-up {r.startup:.1f}, submit {r.submit:.1f}, wait {r.wait:.1f}, "
                        f"collect {r.collect:.2f}; worker {r.worker_seconds:.2f} s; others {r.others:.0%})"
                    )
                    if r.others <= DISTURBED:
                        break
        common.log("pipeline work per image outside the kernel: PNG encoding, the collector")
        one_batch = max(sizes)
        costs = pipeline_costs(x_u8[0], cli[(big, one_batch)][-1], cli[runs[0]][-1])
        common.log("per-task overhead: tiny tasks through the embedded Redis and one worker")
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
    report.metric(
        "peak memory (this process)", ", ".join(f"{k} {common.fmt(v)}" for k, v in common.peak_memory(device).items())
    )
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
        common.Table(
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
        common.Table(
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
        common.Table(
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
        common.Table(
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
        common.Table(
            f"per-task overhead: {task.tasks} tasks of one {TINY_SIZE}×{TINY_SIZE} image (model tiny, "
            f"fool {cluster.TINY_FOOL['max_iters']} step), 1 worker; steady state over the last {task.window} (ms)",
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
        f"({rd['calls'] / task.tasks:.1f}/task; most frequent per task: {cluster.top_commands(rd, task.tasks)}), "
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
    common.finish(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
