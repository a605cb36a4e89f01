"""The registry of jobs. ``JOBS`` is the literal list of ascent's own; ``registry(extra)`` adds the jobs
other packages declare in the ``ascent.jobs`` entry-point group and those named by the setting
``ASCENT_JOBS`` (``module:ATTRIBUTE``, comma-separated), the same in producer and workers.

Everything generic (spec validation, CLI options, worker dispatch, collector, report) reads a
registry; nothing outside a job's module branches on its name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points

from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.jobs import classviz, fool, saliency, style, verify
from ascent.shared.jobs.base import Job

JOBS: dict[str, Job] = {
    "fool": fool.JOB,
    "saliency": saliency.JOB,
    "classviz": classviz.JOB,
    "style": style.JOB,
    "verify": verify.JOB,
}
ENTRY_POINT_GROUP = "ascent.jobs"


def _as_job(obj: object, where: str) -> Job:
    if isinstance(obj, type) and issubclass(obj, Job):
        obj = obj()
    if not isinstance(obj, Job):
        raise InvalidInput(f"{where}: is a {type(obj).__name__}, not an ascent job (a Job instance or class)")
    return obj


def load_job(reference: str) -> Job:
    """The job at ``module:ATTRIBUTE`` (default attribute ``JOB``); InvalidInput naming it when it
    cannot be imported."""
    module_name, _, attribute = reference.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
        obj = getattr(module, attribute or "JOB")
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"job {reference!r} cannot be loaded ({type(exc).__name__}: {exc})") from None
    return _as_job(obj, f"job {reference!r}")


@cache
def registry(extra: tuple[str, ...] = ()) -> Mapping[str, Job]:
    """Built-in jobs, then entry points, then ``extra`` references; a later one may not reuse a name."""
    jobs = dict(JOBS)

    def add(job: Job, where: str) -> None:
        if job.name in jobs and jobs[job.name] is not job:
            raise InvalidInput(f"{where}: a job named {job.name!r} is already registered")
        jobs[job.name] = job

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        add(_as_job(entry.load(), f"entry point {entry.name}"), f"entry point {entry.name}")
    for reference in extra:
        add(load_job(reference), f"job {reference!r}")
    return jobs


def get_job(kind: str, jobs: Mapping[str, Job] | None = None) -> Job:
    """The job named ``kind``; InvalidSpec("kind") listing the known ones."""
    known = registry() if jobs is None else jobs
    job = known.get(kind) if isinstance(kind, str) else None
    if job is None:
        raise InvalidSpec("kind", f"unknown job kind {kind!r}; known: {', '.join(known)}")
    return job
