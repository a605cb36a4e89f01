"""``python -m ascent.worker [--concurrency N] [--queues Q] [-n NAME] [--loglevel L] [--broker URL]
[--store URI]``: a prefork Celery worker for the configured broker (``ascent worker`` runs this).

This process never touches CUDA: it imports torch (``worker_init``) and forks its pool; each pool
process picks its device when its first shard arrives, within the ``CUDA_VISIBLE_DEVICES`` it
inherited (CUDA cannot start in a forked child once its parent used it). One worker per GPU.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ascent.shared.errors import InvalidInput
from ascent.shared.queue import DEFAULT_QUEUE
from ascent.shared.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ascent worker", description="a Celery worker for ascent's queue")
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes (one per GPU)")
    parser.add_argument("--queues", default=DEFAULT_QUEUE, help="comma-separated queues (default %(default)s)")
    parser.add_argument("-n", "--name", help="worker node name, unique per machine (default celery@<host>)")
    parser.add_argument("--loglevel", default="INFO", help="log level (default %(default)s)")
    parser.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL)")
    parser.add_argument("--store", help="store URI (default: ASCENT_STORE)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ascent.worker.app import worker_app

    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env().with_overrides(broker=args.broker, store=args.store)
        if not settings.broker_url:
            raise InvalidInput("no broker configured: set ASCENT_BROKER_URL or pass --broker redis://HOST:6379/0")
        if args.concurrency < 1:
            raise InvalidInput(f"--concurrency: {args.concurrency} must be a positive integer")
        app = worker_app(settings)
    except InvalidInput as exc:
        print(f"ascent: error: {exc}", file=sys.stderr)
        return 2
    print(f"ascent: worker with {settings!r}", file=sys.stderr, flush=True)  # repr hides passwords
    argv = ["worker", "--pool", "prefork", "--concurrency", str(args.concurrency)]
    argv += ["--queues", args.queues, "--loglevel", args.loglevel]
    if args.name:
        argv += ["--hostname", args.name]
    app.worker_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
