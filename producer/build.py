"""From a job command's flags to a validated spec, its items and its shard plan (nothing started or
written): what ``ascent run`` and ``ascent submit`` share."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ascent.producer.inputs import enumerate_inputs, input_uris, local_path
from ascent.producer.options import job_params
from ascent.producer.submit import already_exists, plan_run, run_exists
from ascent.shared.catalog import imagenet
from ascent.shared.errors import InvalidSpec
from ascent.shared.jobs import get_job
from ascent.shared.jobs.base import Job
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec, Manifest
from ascent.shared.store import Store

PROG = "ascent"
DEFAULT_SHARD_SIZE = 16
PRETRAINED = ("DEFAULT", "random")


@dataclass(frozen=True)
class PlannedRun:
    """A validated spec, its items and shard plan, and the store it will be recorded in."""

    spec: JobSpec
    items: list[Item]
    shard_size: int
    manifest: Manifest
    store: Store


def default_run_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def _weights(value: str | None, local_weights: bool) -> str | None:
    if value is None or value in PRETRAINED:
        return value
    path = local_path(value, "weights")
    if not path.is_file():
        if local_weights:
            raise InvalidSpec("weights", f"checkpoint {path} does not exist")
        print(f"{PROG}: note: --weights {path} does not exist here; the workers must have it", file=sys.stderr)
    return str(path)


def prepare_job(
    args: argparse.Namespace, settings: Settings, jobs: Mapping[str, Job], *, local_weights: bool
) -> PlannedRun:
    """Validate everything and plan the shards; starts and writes nothing. Raises InvalidInput/InvalidSpec.

    ``local_weights``: the checkpoint must exist here (embedded runs); otherwise a missing path is only
    noted, since remote workers may have it."""
    job = get_job(args.job, jobs)
    params, preset_size = job_params(job, args, imagenet().resolve)
    store = settings.open_store()
    paths = getattr(args, "inputs", None) or []
    spec = JobSpec(
        kind=job.name,
        run_id=args.run_id or default_run_id(job.name),
        store=store.uri,
        model=args.model,
        weights=_weights(args.weights, local_weights),
        params=params,
        inputs=tuple(input_uris(paths)),
        size=args.size or preset_size,
    ).validate(jobs, settings.limits)
    items = job.plan_items(spec.params, enumerate_inputs(paths, settings=settings) if job.inputs is not None else [])
    manifest = plan_run(spec, items, args.shard_size)
    if run_exists(store, spec.run_id):
        raise already_exists(store, spec.run_id)
    return PlannedRun(spec=spec, items=items, shard_size=args.shard_size, manifest=manifest, store=store)
