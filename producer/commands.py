"""What each ``ascent`` command does, given its parsed flags and the process's settings. Exit codes:
0 the command did what it says (item failures of a run are reported, not fatal), 1 a run that could
not complete, 2 invalid input (raised as InvalidInput, turned into status 2 by ``cli.main``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from celery import Celery

from ascent.producer.build import PROG, prepare_job
from ascent.producer.collector import collect, format_summary, progress
from ascent.producer.progress import RunFailed, RunTimeout, check_run_failure, print_progress, wait_for_run
from ascent.producer.submit import resume, submit, unrecorded_shards
from ascent.producer.verify_command import cmd_verify
from ascent.shared.errors import InvalidInput
from ascent.shared.queue import create_app
from ascent.shared.settings import Settings, redact_url
from ascent.shared.spec import Item, JobSpec
from ascent.shared.uris import parse_uri

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
NO_BROKER = "no broker configured: set ASCENT_BROKER_URL or pass --broker redis://HOST:6379/0"


def note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _broker_required(settings: Settings, hint: str = "") -> None:
    if not settings.broker_url:
        raise InvalidInput(NO_BROKER + hint)


def run_embedded(
    settings: Settings,
    spec: JobSpec,
    items: Sequence[Item],
    workers: int,
    timeout: float | None,
    enqueue: Callable[[Celery], None],
) -> None:
    """Start a private Redis and ``workers`` local workers (reading only the run's inputs), enqueue
    with ``enqueue(app)``, wait for every item of ``spec``'s run, stop everything."""
    from ascent.producer.embedded import Embedded

    note(f"starting an embedded Redis and {workers} local worker(s)")
    with Embedded(settings, workers=workers, input_roots=input_roots(spec, items)) as cluster:
        note(f"embedded Redis at {cluster.broker_url}, {workers} worker(s) ready")
        enqueue(cluster.app)
        wait_for_run(settings.open_store(), spec.run_id, check=cluster.check_workers, timeout=timeout)
    note("stopped the embedded Redis and workers")


def input_roots(spec: JobSpec, items: Sequence[Item]) -> list[str]:
    """What the local workers of a run may read: the folders of the items' local files (a manifest may
    list files anywhere), the file parameters and the model's files."""
    folders = sorted({str(parse_uri(i.source).local_path.parent) for i in items if i.source.startswith("file:")})
    files = [uri for _, uris in spec.params.files() for uri in uris]
    model_files = [u for u in (spec.model, spec.weights, spec.class_names) if u and u.startswith("file:")]
    return [*(Path(f).as_uri() for f in folders), *spec.inputs, *files, *model_files]


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    jobs = settings.job_registry()
    run = prepare_job(args, settings, jobs, local_weights=not settings.broker_url)
    spec = run.spec

    def enqueue(app: Celery) -> None:
        submit(spec, run.items, run.shard_size, run.store, app, note=note, jobs=jobs, settings=settings)
        note(f"run {spec.run_id}: {len(run.items)} items in {len(run.manifest.shards)} shards")

    if settings.broker_url:
        app = create_app(settings)
        try:
            enqueue(app)
            wait_for_run(run.store, spec.run_id, timeout=args.timeout)
        finally:
            app.close()
    else:
        run_embedded(settings, spec, run.items, args.workers, args.timeout, enqueue)
    summary = collect(run.store, spec.run_id, jobs=jobs)
    print(format_summary(summary, jobs=jobs))
    return exit_code(summary)


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    _broker_required(settings, f" (`{PROG} run` starts a local one)")
    jobs = settings.job_registry()
    run = prepare_job(args, settings, jobs, local_weights=False)
    app = create_app(settings)
    try:
        submit(run.spec, run.items, run.shard_size, run.store, app, note=note, jobs=jobs, settings=settings)
    finally:
        app.close()
    print(
        f"submitted {len(run.items)} items in {len(run.manifest.shards)} shards to "
        f"{redact_url(settings.broker_url)}; results in {run.store.uri}"
    )
    print(run.spec.run_id)
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    """Compare the run's manifest with the records in the store; re-enqueue the shards without one.
    Without a broker, in the embedded default: local Redis and workers finish the run and collect it."""
    store = settings.open_store()
    jobs = settings.job_registry()
    spec, missing, total = unrecorded_shards(store, args.run_id, jobs)

    def enqueue(app: Celery) -> None:
        resume(store, args.run_id, app, jobs, settings)
        recorded, where = total - len(missing), redact_url(app.conf.broker_url)
        print(f"run {args.run_id}: re-enqueued {len(missing)} of {total} shards to {where}", end="")
        print(f" ({recorded} already recorded)")

    if settings.broker_url:
        app = create_app(settings)
        try:
            enqueue(app)
        finally:
            app.close()
        return EXIT_OK
    run_embedded(settings, spec, [i for shard in missing for i in shard.items], args.workers, args.timeout, enqueue)
    summary = collect(store, args.run_id, jobs=jobs)
    print(format_summary(summary, jobs=jobs))
    return exit_code(summary)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    store = settings.open_store()
    state = progress(store, args.run_id)
    print_progress(state, None if state.complete else store.writable(args.run_id))
    check_run_failure(store, args.run_id)
    return EXIT_OK


def exit_code(summary: dict[str, Any]) -> int:
    """1 when no item of the run is done but some failed or were cancelled (nothing to show for it), else 0."""
    failed, cancelled = summary["n_failed"], summary.get("n_cancelled", 0)
    if summary["n_done"] == 0 and failed + cancelled > 0:
        if failed == summary["n_items"]:
            note(f"every item of run {summary['run_id']} failed (the reasons are above)")
        else:
            note(f"no item of run {summary['run_id']} is done ({failed} failed, {cancelled} cancelled)")
        return EXIT_FAILED
    return EXIT_OK


def cmd_collect(args: argparse.Namespace, settings: Settings) -> int:
    store = settings.open_store()
    jobs = settings.job_registry()
    code = EXIT_OK
    if args.wait:
        try:
            wait_for_run(store, args.run_id, timeout=args.timeout)
        except (RunTimeout, RunFailed) as exc:
            note(f"{exc}; collecting what is recorded")
            code = EXIT_FAILED
    summary = collect(store, args.run_id, presign=args.presign, jobs=jobs)
    print(format_summary(summary, jobs=jobs))
    return max(code, exit_code(summary))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Replace this process with ``python -m ascent.worker`` (the producer never imports the worker)."""
    _broker_required(settings)
    argv = [sys.executable, "-m", "ascent.worker", "--concurrency", str(args.concurrency), "--queues", args.queues]
    argv += ["--loglevel", args.loglevel, "--name", args.name or default_worker_name()]
    env = dict(os.environ, ASCENT_BROKER_URL=str(settings.broker_url), ASCENT_STORE=settings.store)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def default_worker_name(pid: int | None = None) -> str:
    """``ascent-<pid>@%h``, or ``ascent-gpu<i>-<pid>@%h`` for a worker given GPU i by CUDA_VISIBLE_DEVICES:
    unique per machine, so two workers started without ``-n`` are two nodes in Flower, not one."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    gpu = f"gpu{''.join(c for c in gpus if c.isalnum() or c == '-')}-" if gpus and gpus != "-1" else ""
    return f"ascent-{gpu}{os.getpid() if pid is None else pid}@%h"


def cmd_flower(args: argparse.Namespace, settings: Settings) -> int:
    from ascent.producer import flower

    flower.serve(settings, args.address, args.port, args.basic_auth, note)
    return EXIT_OK


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from ascent.producer.export import export

    store, to = settings.open_store(), settings.open_store(args.to)
    done = export(
        store,
        args.run_id,
        args.format,
        to,
        all_items=args.all,
        shard_items=args.shard_items,
        jobs=settings.job_registry(),
    )
    print(f"exported {done.items} items of run {args.run_id} as {args.format} ({done.files} files) to {done.to}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "run": cmd_run,
    "submit": cmd_submit,
    "status": cmd_status,
    "collect": cmd_collect,
    "worker": cmd_worker,
    "flower": cmd_flower,
    "resume": cmd_resume,
    "export": cmd_export,
    "verify": cmd_verify,
}
