"""The commands that operate runs: ``ascent runs``, ``ascent cancel``, ``ascent classes`` and
``ascent exporter`` (their flags, added to the parser by ``add_commands``, and what they do)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ascent.producer.flower import http_options
from ascent.shared.errors import InvalidInput
from ascent.shared.settings import Settings


def add_commands(commands: Any, run_id_command: Callable[[Any, str, str], argparse.ArgumentParser]) -> None:
    runs = commands.add_parser("runs", help="the runs in a store, newest first, with their counts and state")
    runs.add_argument("--store", help="store URI (default: ASCENT_STORE)")
    run_id_command(
        commands,
        "cancel",
        "cancel a run on every worker: finished items are kept, the rest is recorded cancelled",
    )
    classes = commands.add_parser("classes", help="list or search the class names of a model (for --target)")
    classes.add_argument("pattern", metavar="PATTERN", nargs="?", default="", help="part of a name (any case)")
    classes.add_argument("--model", default="squeezenet1_1", help="the model (default %(default)s)")
    classes.add_argument("--class-names", metavar="FILE", help="the model's class names, one per line")
    exporter = commands.add_parser("exporter", help="Prometheus metrics of runs, queues and workers over HTTP")
    http_options(exporter, 9808, int)
    exporter.add_argument("--store", help="store URI (default: ASCENT_STORE)")
    exporter.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL)")
    exporter.add_argument("--queues", default=None, help="comma-separated queues to measure (default: ascent's)")


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    from ascent.producer.runs import format_runs, list_runs

    store = settings.open_store()
    rows = list_runs(store)
    print(format_runs(rows) if rows else f"no runs in store {store.uri}")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from ascent.producer.runs import cancel_run

    print(cancel_run(settings.open_store(), args.run_id))
    return 0


def cmd_classes(args: argparse.Namespace, settings: Settings) -> int:
    from ascent.shared.catalog import classes_of

    names = None
    if args.class_names:
        path = Path(args.class_names)
        if not path.is_file():
            raise InvalidInput(f"--class-names: {args.class_names} is not a file")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    catalog = classes_of(args.model, None, names)
    if catalog.ids_only or not len(catalog):
        raise InvalidInput(
            f"--model: the class names of {args.model} are not known without loading it; "
            "give them with --class-names FILE (one per line)"
        )
    hits = catalog.search(args.pattern)
    if not hits:
        raise InvalidInput(f"no class name of {args.model} contains {args.pattern!r} (`ascent classes` lists all)")
    for i in hits:
        print(f"{i:>4}  {catalog.names[i]}")
    return 0


def cmd_exporter(args: argparse.Namespace, settings: Settings) -> int:
    from ascent.producer import exporter

    exporter.serve(settings, args.address, args.port, args.basic_auth, args.queues)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "runs": cmd_runs,
    "cancel": cmd_cancel,
    "classes": cmd_classes,
    "exporter": cmd_exporter,
}
