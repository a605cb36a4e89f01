"""From a job command's flags to a validated spec, its items and its shard plan (nothing started or
written): what ``ascent run`` and ``ascent submit`` share."""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ascent.producer.inputs import enumerate_inputs, input_uris
from ascent.producer.model_choice import choose_model
from ascent.producer.options import job_params
from ascent.producer.submit import already_exists, plan_run, run_exists
from ascent.shared.errors import InvalidSpec
from ascent.shared.jobs import get_job
from ascent.shared.jobs.base import Job
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec, Manifest
from ascent.shared.store import Store

PROG = "ascent"
DEFAULT_SHARD_SIZE = 16


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


def prepare_job(
    args: argparse.Namespace, settings: Settings, jobs: Mapping[str, Job], *, local_weights: bool
) -> PlannedRun:
    """Validate everything and plan the shards; starts and writes nothing. Raises InvalidInput/InvalidSpec.

    ``local_weights`` (the embedded default): the model is loaded here once, so a model that cannot load
    stops the command before anything starts; otherwise only its local files must exist (remote workers
    load it, and the first that cannot marks the run failed)."""
    job = get_job(args.job, jobs)
    choice = choose_model(args, probe=local_weights)
    params, preset_size = job_params(job, args, choice.resolve_class)
    store = settings.open_store()
    paths = getattr(args, "inputs", None) or []
    spec = JobSpec(
        kind=job.name,
        run_id=args.run_id or default_run_id(job.name),
        store=store.uri,
        model=choice.model,
        weights=choice.weights,
        mean=choice.mean,
        std=choice.std,
        class_names=choice.class_names,
        num_classes=choice.num_classes,
        params=params,
        inputs=tuple(input_uris(paths)),
        size=args.size or preset_size,
    ).validate(jobs, settings.limits)
    lookup = choice.catalog.lookup if choice.catalog is not None else None
    found = enumerate_inputs(paths, settings=settings, resolve=lookup) if job.inputs is not None else []
    items = job.plan_run_items(spec, found)
    if len(items) > settings.max_items:  # a sweep or a target matrix multiplies the inputs
        raise InvalidSpec(
            "inputs",
            f"{len(found):,} inputs plan {len(items):,} items, over the limit of {settings.max_items:,} per run "
            "(ASCENT_MAX_ITEMS; raise it if this is intended)",
        )
    if choice.num_classes is not None:
        for item in items:
            for what, class_id in (("label", item.label), ("target", item.target)):
                if class_id is not None and class_id >= choice.num_classes:
                    raise InvalidSpec(
                        "inputs",
                        f"{item.path or item.source}: {what} {class_id} is out of range 0..{choice.num_classes - 1}",
                    )
    manifest = plan_run(spec, items, args.shard_size)
    if run_exists(store, spec.run_id):
        raise already_exists(store, spec.run_id)
    return PlannedRun(spec=spec, items=items, shard_size=args.shard_size, manifest=manifest, store=store)
