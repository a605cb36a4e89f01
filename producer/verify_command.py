"""``ascent verify RUN_ID [--model M [--weights W] [--mean R,G,B] [--std R,G,B] [--size N]] ...``:
re-reads every stored output of a finished run (integrity against the records' sha256, the claimed
predictions with the run's model) and, for each ``--model`` (a victim: the options after it are its
own), how often the outputs succeed on it: the transfer table, in the verify run's verify.json and
report. It is a run of the ``verify`` job (``ascent.shared.jobs.verify``), through the queue like any
other: embedded Redis and workers by default, the configured broker with one.
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
from typing import Any

from celery import Celery

from ascent.producer.build import DEFAULT_SHARD_SIZE
from ascent.producer.collector import collect, format_summary, item_table, read_records
from ascent.producer.model_choice import choose_model
from ascent.producer.progress import wait_for_run
from ascent.producer.submit import already_exists, model_file_for_workers, needs_upload, run_exists, submit
from ascent.shared.errors import InvalidInput, NotFoundInStore
from ascent.shared.jobs import get_job
from ascent.shared.jobs.verify import JOB as VERIFY
from ascent.shared.jobs.verify import VerifyParams, Victim
from ascent.shared.keys import RunKeys
from ascent.shared.queue import create_app
from ascent.shared.records import PENDING
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec
from ascent.shared.store import Store

VICTIM_OPTIONS = ("weights", "mean", "std", "size")


class _Victim(argparse.Action):
    """``--model M``: a new victim; ``--weights/--mean/--std/--size`` after it are its own."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        victims = list(getattr(namespace, "victims", None) or [])
        if self.dest == "model":
            victims.append({"model": value})
        elif not victims:
            parser.error(f"{option} belongs to a --model: give --model M first, then its {option}")
        else:
            victims[-1][self.dest] = value
        namespace.victims = victims


def add_verify_command(commands: Any, size_type: Any) -> argparse.ArgumentParser:
    command = commands.add_parser(
        "verify",
        help="check a finished run's stored outputs (sha256, claimed predictions) and their transfer to other models",
    )
    command.add_argument("run_id", metavar="RUN_ID", help="the finished run (fool) to verify")
    command.set_defaults(victims=[])
    command.add_argument(
        "--model",
        action=_Victim,
        help="a victim model (repeatable), the syntax of `ascent run --model`; the --weights, --mean, --std "
        "and --size after it are its own (defaults: its own normalisation, the run's size)",
    )
    command.add_argument("--weights", action=_Victim, help="the last --model's weights (DEFAULT, random, a file)")
    command.add_argument("--mean", action=_Victim, metavar="R,G,B", help="the last --model's normalisation")
    command.add_argument("--std", action=_Victim, metavar="R,G,B", help="see --mean")
    command.add_argument("--size", action=_Victim, type=size_type, help="the side the last --model classifies at")
    command.add_argument("--store", help="store URI (default: ASCENT_STORE)")
    command.add_argument("--broker", help="Redis URL (default: ASCENT_BROKER_URL; unset: embedded)")
    command.add_argument("--verify-id", help="the verify run's id (default verify-<RUN_ID>-<random>)")
    command.add_argument("--shard-size", type=size_type, default=DEFAULT_SHARD_SIZE, help="outputs per task")
    command.add_argument("--workers", type=size_type, default=1, help="local workers without a broker")
    command.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    return command


def victims_of(args: argparse.Namespace, *, probe: bool) -> list[Victim]:
    """The victims of the flags, each checked as ``--model`` is (loaded here with ``probe``)."""
    victims = []
    for given in args.victims:
        flags = argparse.Namespace(class_names=None, **{k: given.get(k) for k in ("model", "weights", "mean", "std")})
        choice = choose_model(flags, probe=probe)
        victims.append(Victim(choice.model, choice.weights, choice.mean, choice.std, given.get("size")))
    return victims


def plan_verify(
    args: argparse.Namespace, settings: Settings, *, probe: bool
) -> tuple[JobSpec, list[Item], list[Victim]]:
    """The verify run's spec and items from the finished run ``args.run_id`` (InvalidInput when it is
    unknown or not finished)."""
    store = settings.open_store()
    jobs = settings.job_registry()
    keys = RunKeys(args.run_id)
    try:
        source = JobSpec.from_dict(store.get_json(keys.spec), jobs)
        rows = item_table(store.get_json(keys.manifest), read_records(store, args.run_id))
    except NotFoundInStore:
        raise InvalidInput(f"run {args.run_id} is not in {store.uri} (--store, ASCENT_STORE)") from None
    pending = [r["item_id"] for r in rows if r["status"] == PENDING]
    if pending:
        raise InvalidInput(
            f"run {args.run_id} is not finished: {len(pending)} items pending (wait with `ascent collect "
            f"{args.run_id} --wait`)"
        )
    source_format = get_job(source.kind, jobs).output_format(source.params)
    items = VERIFY.plan(source, rows)
    victims = victims_of(args, probe=probe)
    spec = JobSpec(
        kind=VERIFY.name,
        run_id=args.verify_id or f"verify-{args.run_id}-{secrets.token_hex(2)}",
        store=store.uri,
        model=source.model,
        weights=source.weights,
        mean=source.mean,
        std=source.std,
        class_names=source.class_names,
        num_classes=source.num_classes,
        files=source.files,
        size=source.size,
        params={
            "source_run": args.run_id,
            "source_format": source_format.text,
            "victims": [v.to_json() for v in victims],
        },
    ).validate(jobs, settings.limits)
    if run_exists(store, spec.run_id):
        raise already_exists(store, spec.run_id)
    return spec, items, victims


def with_victim_files(spec: JobSpec, store: Store, *, upload: bool) -> JobSpec:
    """``spec`` with each victim's local model and weights file as workers read it (with ``upload``,
    a copy in the run's uploads, as submit moves --model) and its sha256 in ``spec.files``, which
    workers check before they load it. Victims named otherwise (torchvision, timm, s3://) are kept."""
    p = spec.params
    assert isinstance(p, VerifyParams)
    files, victims = dict(spec.files), []
    for k, text in enumerate(p.victims):
        victim = Victim.from_json(text)
        uris: dict[str, str | None] = {"model": victim.model, "weights": victim.weights}
        for name, uri in uris.items():
            if uri is not None and uri.startswith("file:"):
                uris[name], digest = model_file_for_workers(uri, f"victim-{k}-{name}", spec.run_id, store, upload)
                files[str(uris[name])] = digest
        victims.append(dataclasses.replace(victim, model=str(uris["model"]), weights=uris["weights"]).to_json())
    return dataclasses.replace(spec, files=files, params=dataclasses.replace(p, victims=tuple(victims)))


def _roots(spec: JobSpec, victims: list[Victim]) -> list[str]:
    """What embedded workers may read: the run's model files and the victims' local files (the outputs
    they read from their own store)."""
    uris = [spec.model, spec.weights, spec.class_names] + [u for v in victims for u in (v.model, v.weights)]
    return [u for u in uris if u and u.startswith("file:")]


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from ascent.producer.commands import exit_code, note

    spec, items, victims = plan_verify(args, settings, probe=not settings.broker_url)
    store, jobs = settings.open_store(), settings.job_registry()
    spec = with_victim_files(spec, store, upload=needs_upload(store)).validate(jobs, settings.limits)

    def enqueue(app: Celery) -> None:
        manifest = submit(spec, items, args.shard_size, store, app, note=note, jobs=jobs, settings=settings)
        note(f"verify run {spec.run_id}: {len(items)} outputs of {args.run_id} in {len(manifest.shards)} shards")

    if settings.broker_url:
        app = create_app(settings)
        try:
            enqueue(app)
            wait_for_run(store, spec.run_id, timeout=args.timeout)
        finally:
            app.close()
    else:
        from ascent.producer.embedded import Embedded

        with Embedded(settings, workers=args.workers, input_roots=_roots(spec, victims)) as cluster:
            enqueue(cluster.app)
            wait_for_run(store, spec.run_id, check=cluster.check_workers, timeout=args.timeout)
    summary = collect(store, spec.run_id, jobs=jobs)
    print(format_summary(summary, jobs=jobs))
    print(f"verify.json: {store.url(RunKeys(spec.run_id).verify)}")
    return max(exit_code(summary), verdict(summary["verify"], args.run_id))


def verdict(verify: dict[str, Any], run_id: str) -> int:
    """1 (and a note saying why) when an output of ``run_id`` was tampered with, is missing or unreadable,
    or does not hold its claimed prediction; else 0."""
    from ascent.producer.commands import note

    found = [(name, verify.get(name) or []) for name in ("tampered", "missing", "unreadable", "claims_broken")]
    broken = [f"{len(ids)} {name.replace('_', ' ')}" for name, ids in found if ids]
    if not broken:
        return 0
    note(f"run {run_id} does not verify: {', '.join(broken)} (the items are listed above)")
    return 1
