"""The command-line form of the jobs, generated from the registry: per job its input flag, a
``--preset`` when it has presets, and one option per parameter (help, default, accepted values from
its ``JobParams``); and back: the spec's ``params`` from the parsed flags.

Only flags the user gave go into ``params`` (the spec fills in the defaults); class names are
resolved to ids; file parameters become absolute URIs and must exist here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ascent.producer.inputs import check_local_files, input_uris
from ascent.shared.jobs.base import Job
from ascent.shared.params import ParamInfo, resolve_classes

#: Options every job command has (``ascent run JOB`` and ``ascent submit JOB``); no parameter may reuse them.
COMMON_DESTS = frozenset({"model", "weights", "store", "broker", "shard_size", "size", "run_id", "workers", "timeout"})


def _default_text(info: ParamInfo) -> str:
    value = info.default
    if info.required or value is None or value == () or isinstance(value, bool):
        return ""
    if isinstance(value, tuple):
        value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    elif isinstance(value, float):
        value = f"{value:g}"
    return f" (default {value})"


def add_job_options(parser: argparse.ArgumentParser, job: Job) -> None:
    """Add ``job``'s input flag, presets and parameter options to ``parser``."""
    group = parser.add_argument_group(f"{job.name} parameters")
    if job.inputs is not None:
        group.add_argument(
            job.inputs.flag,
            dest="inputs",
            nargs="+",
            action="extend",
            required=True,
            metavar="PATH",
            help=job.inputs.help,
        )
    if job.presets:
        group.add_argument("--preset", choices=sorted(job.presets), help="size and parameters of a named preset")
    for info in job.Params.infos():
        if info.name in COMMON_DESTS or info.name in ("inputs", "preset", "job", "command"):
            raise ValueError(f"job {job.name}: parameter {info.name!r} collides with a command-line option")
        if info.kind.switch:  # a bare flag; unset (None) unless given, so the spec fills in the default
            group.add_argument(
                info.flag, dest=info.name, action="store_const", const=not info.default, default=None, help=info.help
            )
            continue
        options: dict[str, Any] = {"dest": info.name, "type": info.kind.parse, "help": info.help + _default_text(info)}
        if info.kind.choices:
            options["choices"] = info.kind.choices
        elif info.kind.metavar:
            options["metavar"] = info.kind.metavar
        if info.append and info.kind.files:  # ``--style a.jpg b.jpg`` as well as ``--style a.jpg --style b.jpg``
            options.update(nargs="+", action="extend")
        elif info.append:
            options["action"] = "append"
        where: Any = group
        if info.flags:  # the flag and its alternatives: exactly one of them (when required)
            where = group.add_mutually_exclusive_group(required=info.cli_required)
            for flag, value, text in info.flags:
                where.add_argument(flag, dest=info.name, action="store_const", const=value, help=text)
        elif info.cli_required:
            options["required"] = True
        where.add_argument(info.flag, **options)


def _flatten(values: list[Any]) -> list[Any]:
    """Repeated flags whose values are lists (``--classes 1,2 --classes 3``) as one list."""
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


def job_params(
    job: Job, args: argparse.Namespace, resolve_class: Callable[[str], int]
) -> tuple[dict[str, Any], int | None]:
    """The spec's params from the flags the user gave, and the preset's size (or None).

    Raises InvalidSpec naming ``params.<field>`` for an unknown class name or a missing file."""
    params: dict[str, Any] = {}
    size: int | None = None
    preset = getattr(args, "preset", None)
    if preset:
        values = dict(job.presets[preset])
        size = values.pop("size", None)
        params.update(values)
    for info in job.Params.infos():
        value = getattr(args, info.name, None)
        if value is None:
            continue
        field = f"params.{info.name}"
        if info.append and isinstance(value, list):
            value = _flatten(value)
        if info.kind.classes:
            value = resolve_classes(value, info.kind, resolve_class, field)
        if info.kind.files and (isinstance(value, list) or value not in dict(info.kind.aliases)):
            uris = input_uris(value if isinstance(value, list) else [value], field)
            check_local_files(uris, field)
            value = uris if isinstance(value, list) else uris[0]
        params[info.name] = value
    return params, size
