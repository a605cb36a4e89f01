"""The ``ascent`` command (also ``python -m ascent.producer``).

    ascent run JOB [job options] [run options]      embedded default: local Redis + workers
    ascent submit JOB [job options] [run options]   enqueue to ASCENT_BROKER_URL / --broker
    ascent status RUN_ID                            items done / failed / pending
    ascent collect RUN_ID [--wait] [--timeout S]    summary.json, items.jsonl, report.html
    ascent worker [--concurrency N] [--queues Q]    a Celery worker for ASCENT_BROKER_URL
    ascent flower [--port P] [--address A]          Flower for ASCENT_BROKER_URL
    ascent resume RUN_ID                            re-enqueue every shard without a record
    ascent runs | cancel RUN_ID | classes [PATTERN] | exporter [--port P]   operate runs (producer.operate)
    ascent verify RUN_ID [--model M ...]            outputs' sha256, claimed predictions, transfer

The jobs and their options come from the registry (``ascent.shared.jobs``: ``ascent run fool --help``
lists fool's). ``ascent run`` with no broker configured (neither ``ASCENT_BROKER_URL`` nor ``--broker``)
starts a private Redis and ``--workers`` local worker processes, submits, shows progress, collects,
prints the summary and stops everything it started (also on Ctrl-C). With a broker it submits there
and waits for the fleet. Everything is validated before anything is started or enqueued: an invalid
spec exits with status 2 and one line naming the field. Exit 0 means the run completed (item
failures are reported in the summary, they are not fatal); 1 a run that could not complete; 130/143
interrupted. The producer never imports torch.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ascent.producer import operate
from ascent.producer.build import DEFAULT_SHARD_SIZE, PROG
from ascent.producer.commands import COMMANDS, EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, note
from ascent.producer.flower import http_options
from ascent.producer.options import add_job_options
from ascent.producer.verify_command import add_verify_command
from ascent.shared.errors import AscentError, InvalidInput, StoreError
from ascent.shared.jobs import registry
from ascent.shared.jobs.base import Job
from ascent.shared.queue import DEFAULT_QUEUE
from ascent.shared.settings import Settings


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (stopping everything started) and exit 143."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("run options")
    g.add_argument(
        "--model",
        default="squeezenet1_1",
        help="the classifier: a torchvision model name (squeezenet1_1, resnet50, ...), timm:NAME, a file saved "
        "with torch.export.save (.pt2) or torch.jit.save, or package.module:factory (default %(default)s)",
    )
    g.add_argument(
        "--weights",
        help="DEFAULT (torchvision's or timm's pretrained weights through their caches; the default), random, "
        "or a state_dict file (.pth/.pt, or .safetensors)",
    )
    g.add_argument(
        "--mean",
        metavar="R,G,B",
        help="the normalisation the model was trained with (default: its own, else ImageNet's)",
    )
    g.add_argument("--std", metavar="R,G,B", help="see --mean")
    g.add_argument("--class-names", metavar="FILE", help="the model's class names, one per line (default: its own)")
    g.add_argument("--store", help="output store URI (default: ASCENT_STORE, else file://./ascent-data)")
    g.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL; unset: embedded Redis for `run`)")
    g.add_argument(
        "--shard-size",
        type=_positive_int,
        default=DEFAULT_SHARD_SIZE,
        help="items per task, run as one batch (default %(default)s)",
    )
    g.add_argument("--size", type=_positive_int, help="image side (default: the job's, or its preset's)")
    g.add_argument("--run-id", help="the run's id (default: <job>-<UTC time>-<random>)")
    return p


def _run_only_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("embedded run")
    g.add_argument("--workers", type=_positive_int, default=1, help="local worker processes (default %(default)s)")
    g.add_argument("--timeout", type=_positive_float, help="give up waiting after this many seconds")
    return p


def _run_id_command(commands: Any, name: str, help: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help)
    command.add_argument("run_id", metavar="RUN_ID")
    command.add_argument("--store", help="store URI (default: ASCENT_STORE)")
    return command


def build_parser(jobs: Mapping[str, Job] | None = None) -> argparse.ArgumentParser:
    """The parser for every command, with one sub-command per job of ``jobs`` (default: ``registry()``)."""
    jobs = registry() if jobs is None else jobs
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Batch gradient ascent on input images: adversarial images, saliency maps, "
        "class visualisations and style transfer, through a Redis/Celery queue.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common, run_only = _common_options(), _run_only_options()
    run = commands.add_parser("run", help="run a job to completion (embedded Redis and workers by default)")
    run_jobs = run.add_subparsers(dest="job", metavar="JOB", required=True)
    submit = commands.add_parser("submit", help="enqueue a job to the configured broker; prints the run id")
    submit_jobs = submit.add_subparsers(dest="job", metavar="JOB", required=True)
    for job in (j for j in jobs.values() if j.standalone):
        for subparsers, parents, verb in ((run_jobs, [common, run_only], "run"), (submit_jobs, [common], "submit")):
            command = subparsers.add_parser(
                job.name, parents=parents, help=f"{verb} {job.name}: {job.help}", description=job.help
            )
            add_job_options(command, job)

    _run_id_command(commands, "status", "items done, failed and pending of a run")
    collect = _run_id_command(commands, "collect", "write summary.json, items.jsonl, report.html; print the summary")
    collect.add_argument("--wait", action="store_true", help="wait (with a progress bar) until every item is recorded")
    collect.add_argument("--timeout", type=_positive_float, help="with --wait: give up after this many seconds")
    collect.add_argument("--presign", type=_positive_int, metavar="SECONDS", help="presigned URLs (s3:// stores)")

    worker = commands.add_parser("worker", help="run a Celery worker for the configured broker")
    worker.add_argument("--concurrency", type=_positive_int, default=1, help="pool processes (one per GPU)")
    worker.add_argument("--queues", default=DEFAULT_QUEUE, help="comma-separated queues (default %(default)s)")
    worker.add_argument(
        "-n",
        "--name",
        help="worker node name, unique per machine (default ascent-[gpu<i>-]<pid>@<host>, i from CUDA_VISIBLE_DEVICES)",
    )
    worker.add_argument("--loglevel", default="INFO", help="log level (default %(default)s)")
    worker.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL)")
    worker.add_argument("--store", help="store URI (default: ASCENT_STORE)")

    flower = commands.add_parser("flower", help="Flower (the Celery monitor) for the configured broker")
    http_options(flower, 5555, _positive_int)
    flower.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL)")

    resume = _run_id_command(
        commands,
        "resume",
        "re-enqueue every shard of a run that has no record in the store (after a broker restart, "
        "lost workers or a producer crash); safe to repeat, also while workers run. Without a broker, "
        "finishes the run with an embedded Redis and local workers",
    )
    add_verify_command(commands, _positive_int)
    export = _run_id_command(commands, "export", "write a run's outputs as a dataset (imagefolder, npz, webdataset)")
    export.add_argument("--format", required=True, choices=("imagefolder", "npz", "webdataset"), help="the layout")
    export.add_argument("--to", required=True, metavar="DIR|s3://BUCKET/PREFIX", help="where to write it")
    export.add_argument("--all", action="store_true", help="every done item, not only the successful ones")
    export.add_argument(
        "--shard-items", type=_positive_int, default=1000, help="items per webdataset tar (default %(default)s)"
    )

    operate.add_commands(commands, _run_id_command)
    resume.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL; unset: embedded)")
    resume.add_argument("--workers", type=_positive_int, default=1, help="local workers without a broker")
    resume.add_argument("--timeout", type=_positive_float, help="without a broker: give up waiting after this")
    return parser


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 run failed, 2 invalid, 130/143 interrupted)."""
    try:
        settings = Settings.from_env()
        jobs = settings.job_registry()
    except InvalidInput as exc:
        note(f"error: {exc}")
        return EXIT_USAGE
    args = build_parser(jobs).parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    try:
        settings = settings.with_overrides(broker=getattr(args, "broker", None), store=getattr(args, "store", None))
        return {**COMMANDS, **operate.COMMANDS}[args.command](args, settings)
    except InvalidInput as exc:
        note(f"error: {exc}")
        return EXIT_USAGE
    except (AscentError, StoreError) as exc:
        note(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        note("interrupted; everything this command started has been stopped")
        return EXIT_SIGINT
    except Terminated:
        note("terminated; everything this command started has been stopped")
        return EXIT_SIGTERM


if __name__ == "__main__":
    sys.exit(main())
