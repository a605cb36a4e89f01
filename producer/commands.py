"""What each ``ascent`` command does, given its parsed flags and the process's settings. Exit codes:
0 the command did what it says (item failures of a run are reported, not fatal), 1 a run that could
not complete, 2 invalid input (raised as InvalidInput, turned into status 2 by ``cli.main``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ascent.producer.build import PROG, prepare_job
from ascent.producer.collector import collect, format_summary, progress
from ascent.producer.progress import RunTimeout, print_progress, wait_for_run
from ascent.producer.submit import resume, submit
from ascent.shared.errors import InvalidInput
from ascent.shared.queue import create_app
from ascent.shared.settings import Settings, redact_url

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
NO_BROKER = "no broker configured: set ASCENT_BROKER_URL or pass --broker redis://HOST:6379/0"


def note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _broker_required(settings: Settings, hint: str = "") -> None:
    if not settings.broker_url:
        raise InvalidInput(NO_BROKER + hint)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    jobs = settings.job_registry()
    run = prepare_job(args, settings, jobs, local_weights=not settings.broker_url)
    spec = run.spec
    n_shards = len(run.manifest.shards)
    if settings.broker_url:
        app = create_app(settings)
        try:
            submit(spec, run.items, run.shard_size, run.store, app, note=note, jobs=jobs)
            note(f"submitted run {spec.run_id}: {len(run.items)} items in {n_shards} shards; waiting")
            wait_for_run(run.store, spec.run_id, timeout=args.timeout)
        finally:
            app.close()
    else:
        from ascent.producer.embedded import Embedded

        note(f"starting an embedded Redis and {args.workers} local worker(s)")
        with Embedded(settings, workers=args.workers) as cluster:
            note(f"embedded Redis at {cluster.broker_url}, {args.workers} worker(s) ready")
            submit(spec, run.items, run.shard_size, run.store, cluster.app, note=note, jobs=jobs)
            note(f"run {spec.run_id}: {len(run.items)} items in {n_shards} shards")
            wait_for_run(run.store, spec.run_id, check=cluster.check_workers, timeout=args.timeout)
        note("stopped the embedded Redis and workers")
    print(format_summary(collect(run.store, spec.run_id, jobs=jobs), jobs=jobs))
    return EXIT_OK


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    _broker_required(settings, f" (`{PROG} run` starts a local one)")
    jobs = settings.job_registry()
    run = prepare_job(args, settings, jobs, local_weights=False)
    app = create_app(settings)
    try:
        submit(run.spec, run.items, run.shard_size, run.store, app, note=note, jobs=jobs)
    finally:
        app.close()
    print(
        f"submitted {len(run.items)} items in {len(run.manifest.shards)} shards to "
        f"{redact_url(settings.broker_url)}; results in {run.store.uri}"
    )
    print(run.spec.run_id)
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    """Compare the run's manifest with the records in the store; re-enqueue the shards without one."""
    _broker_required(settings)
    store = settings.open_store()
    app = create_app(settings)
    try:
        missing, total = resume(store, args.run_id, app, settings.job_registry())
    finally:
        app.close()
    print(
        f"run {args.run_id}: re-enqueued {len(missing)} of {total} shards to "
        f"{redact_url(settings.broker_url)} ({total - len(missing)} already recorded)"
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    print_progress(progress(settings.open_store(), args.run_id))
    return EXIT_OK


def cmd_collect(args: argparse.Namespace, settings: Settings) -> int:
    store = settings.open_store()
    jobs = settings.job_registry()
    code = EXIT_OK
    if args.wait:
        try:
            wait_for_run(store, args.run_id, timeout=args.timeout)
        except RunTimeout as exc:
            note(f"{exc}; collecting what is recorded")
            code = EXIT_FAILED
    print(format_summary(collect(store, args.run_id, presign=args.presign, jobs=jobs), jobs=jobs))
    return code


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Replace this process with ``python -m ascent.worker`` (the producer never imports the worker)."""
    _broker_required(settings)
    argv = [sys.executable, "-m", "ascent.worker", "--concurrency", str(args.concurrency), "--queues", args.queues]
    argv += ["--loglevel", args.loglevel]
    if args.name:
        argv += ["--name", args.name]
    env = dict(os.environ, ASCENT_BROKER_URL=str(settings.broker_url), ASCENT_STORE=settings.store)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def cmd_flower(args: argparse.Namespace, settings: Settings) -> int:
    from ascent.producer import flower

    flower.serve(settings, args.address, args.port, args.basic_auth, note)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "run": cmd_run,
    "submit": cmd_submit,
    "status": cmd_status,
    "collect": cmd_collect,
    "worker": cmd_worker,
    "flower": cmd_flower,
    "resume": cmd_resume,
}
