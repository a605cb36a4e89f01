"""Plan a run (items -> shards) and submit it: upload local inputs when the workers cannot read them,
record spec and manifest in the store, then enqueue.

No torch: tasks are sent by name (``ascent.shared.queue.RUN_SHARD_TASK``) with a JSON message that carries ids,
URIs and parameters, never pixels and never credentials. The store is the system of record: the spec
and the manifest are written *before* anything is enqueued, so a run that was (partly) enqueued can
always be compared with its records (``ascent status``, ``ascent collect``, and later ``resume``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from ascent.shared.errors import AlreadyExists, InvalidInput, InvalidSpec, NotFoundInStore, TransientError
from ascent.shared.jobs.base import Job
from ascent.shared.keys import RunKeys
from ascent.shared.messages import canonical, task_message
from ascent.shared.queue import DEFAULT_QUEUE, RUN_SHARD_TASK
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec, Manifest, Shard, shard_id
from ascent.shared.store import FileStore, Store
from ascent.shared.uris import parse_uri

MAX_SHARD_SIZE = 100_000
UPLOAD_THREADS = 8


def plan_run(spec: JobSpec, items: Sequence[Item], shard_size: int) -> Manifest:
    """The manifest: items in their order, shard k holding items [k·shard_size, (k+1)·shard_size).

    Raises InvalidSpec for a bad ``shard_size`` ("shard_size"), no items or duplicate item ids ("inputs")."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise InvalidSpec("shard_size", f"{shard_size!r} must be an integer 1..{MAX_SHARD_SIZE}")
    if not items:
        raise InvalidSpec("inputs", "no items to run")
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise InvalidSpec("inputs", f"duplicate item id {item.item_id!r}")
        seen.add(item.item_id)
    shards = tuple(
        Shard(shard_id(k), tuple(items[start : start + shard_size]))
        for k, start in enumerate(range(0, len(items), shard_size))
    )
    return Manifest(spec.run_id, shards, created_at=round(time.time(), 3))


def run_exists(store: Store, run_id: str) -> bool:
    keys = RunKeys(run_id)
    return store.exists(keys.manifest) or store.exists(keys.spec)


def already_exists(store: Store, run_id: str) -> InvalidSpec:
    return InvalidSpec("run_id", f"run {run_id!r} already exists in {store.uri}; choose another --run-id")


def record_run(spec: JobSpec, manifest: Manifest, store: Store) -> None:
    """Claim the run id by creating spec.json (one conditional write: of two submits with the same id
    exactly one gets it), then write manifest.json. Raises InvalidSpec("run_id") when the id is taken."""
    if run_exists(store, spec.run_id):
        raise already_exists(store, spec.run_id)
    keys = RunKeys(spec.run_id)
    try:
        store.create_json(keys.spec, spec.to_dict())
    except AlreadyExists:
        raise already_exists(store, spec.run_id) from None
    store.put_json(keys.manifest, manifest.to_dict())


# ----------------------------------------------------------------------------- uploads


def needs_upload(store: Store) -> bool:
    """Local inputs are uploaded unless the run is recorded in a local folder: workers on other
    machines can read the store but not this machine's files."""
    return not isinstance(store, FileStore)


@dataclass(frozen=True)
class Uploaded:
    """The spec and items pointing at the uploaded copies (items keep the input as given in
    ``original``), and how much was uploaded."""

    spec: JobSpec
    items: list[Item]
    files: int
    bytes: int


def _local_file(uri: str) -> tuple[Path, str] | None:
    """(local file, "#row" or "") for a local source; None for any other source."""
    parsed = parse_uri(uri)
    if parsed.scheme != "file":
        return None
    return parsed.local_path, "" if parsed.row is None else f"#{parsed.row}"


def upload_inputs(spec: JobSpec, items: Sequence[Item], store: Store, *, threads: int = UPLOAD_THREADS) -> Uploaded:
    """Copy every local input file to ``runs/<run_id>/uploads/`` in ``store``, once, and return the
    spec and items rewritten to read the copies.

    A file is uploaded once however many items name it (an .npz holds many): under the id of the
    first item that names it, ``uploads/<item_id><ext>``; files named by parameters (style images) as
    ``uploads/<param>-<k><ext>``. Sources that are not local files (``s3://``, ``class:``) are left as
    they are: read in place. Raises InvalidSpec ("inputs") for a file that vanished,
    StoreError/TransientError from the store."""
    keys: dict[Path, str] = {}
    run_keys = RunKeys(spec.run_id)

    def uploaded(uri: str, name: str) -> str | None:
        local = _local_file(uri)
        if local is None:
            return None
        path, row = local
        key = keys.setdefault(path, run_keys.upload(name, path.name))
        return store.url(key) + row

    new_items = []
    for item in items:
        source = uploaded(item.source, item.item_id)
        new_items.append(item if source is None else dataclasses.replace(item, source=source, original=item.source))
    changes = {
        name: [uploaded(u, f"{name}-{k}") or u for k, u in enumerate(uris)] for name, uris in spec.params.files()
    }
    new_spec = dataclasses.replace(spec, params=spec.params.with_files(changes)) if changes else spec

    def moved(uri: str | None, name: str) -> str | None:
        """The uploaded copy of a local model file (the model travels like the inputs)."""
        return uploaded(uri, name) or uri if uri is not None and uri.startswith("file:") else uri

    new_spec = dataclasses.replace(
        new_spec,
        model=moved(spec.model, "model") or spec.model,
        weights=moved(spec.weights, "weights"),
        class_names=moved(spec.class_names, "class-names"),
    )

    def put(path: Path, key: str) -> int:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InvalidSpec("inputs", f"{path} does not exist (it disappeared before the upload)") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read input {path}: {exc.strerror or exc}") from None
        store.put(key, data)
        return len(data)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(keys) or 1))) as pool:
        sizes = list(pool.map(lambda kv: put(*kv), keys.items()))
    return Uploaded(new_spec, new_items, files=len(sizes), bytes=sum(sizes))


def _model_files(spec: JobSpec) -> dict[str, str]:
    """The spec's model fields that name local files: model, weights, class_names."""
    named = {"model": spec.model, "weights": spec.weights, "class_names": spec.class_names}
    return {field: uri for field, uri in named.items() if uri is not None and uri.startswith("file:")}


def with_file_hashes(spec: JobSpec, store: Store, originals: dict[str, str]) -> JobSpec:
    """``spec`` with the sha256 of each model file recorded (workers check it before they load one).
    ``originals``: the uploaded copy's URI -> the local file it came from (hashed here, not read back)."""
    files = dict(spec.files)
    for uri in (spec.model, spec.weights, spec.class_names):
        if uri is None or uri in files or not ("://" in uri or uri.startswith("/")):
            continue
        local = originals.get(uri, uri)
        if not local.startswith("file:"):
            continue  # an s3:// model named by the user: its hash is not known here
        files[uri] = file_sha256(local)
    return dataclasses.replace(spec, files=files)


def file_sha256(uri: str) -> str:
    """The sha256 (hex) of the local file at ``uri`` (a file:// URI), read in blocks."""
    digest = hashlib.sha256()
    with open(parse_uri(uri, rows=False).local_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_file_for_workers(uri: str, name: str, run_id: str, store: Store, upload: bool) -> tuple[str, str]:
    """A local model file (file:// ``uri``) as workers will read it, and its sha256: with ``upload``, a
    copy in ``runs/<run_id>/uploads/<name><ext>`` (as ``upload_inputs`` moves --model), else ``uri``
    itself. Raises InvalidSpec ("model") when the file is gone, StoreError/TransientError from the store."""
    path = parse_uri(uri, rows=False).local_path
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidSpec("model", f"{path}: cannot be read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if not upload:
        return uri, digest
    key = RunKeys(run_id).upload(name, Path(path).name)
    store.put(key, data)
    return store.url(key), digest


# ----------------------------------------------------------------------------- enqueueing


def task_messages(spec: JobSpec, shards: Sequence[Shard], settings: Settings) -> list[dict[str, Any]]:
    """One message per shard, signed when ``settings`` have a signing key; raises InvalidSpec
    ("shard_size") before anything is sent when one would exceed the message size limit."""
    messages = [task_message(spec, shard, settings.signing_key) for shard in shards]
    for message in messages:
        size = len(canonical(message))
        if size > settings.max_message_bytes:
            raise InvalidSpec(
                "shard_size",
                f"a task message would take {size:,} bytes, over the limit of {settings.max_message_bytes:,} "
                "(ASCENT_MAX_MESSAGE_BYTES): use a smaller --shard-size",
            )
    return messages


def enqueue(run_id: str, messages: Sequence[dict[str, Any]], app: Celery) -> list[str]:
    """Send one ``ascent.run_shard`` task per message; return the task ids.

    Raises TransientError when the broker cannot be reached (retrying later can help)."""
    from kombu.exceptions import OperationalError

    ids = []
    try:
        for message in messages:
            ids.append(app.send_task(RUN_SHARD_TASK, args=[message], queue=DEFAULT_QUEUE).id)
    except OperationalError as exc:
        raise TransientError(
            f"cannot reach the broker to enqueue run {run_id} ({exc}); the run is recorded in the store: "
            f"`ascent resume {run_id}` enqueues what is missing once the broker is back"
        ) from exc
    return ids


def submit(
    spec: JobSpec,
    items: Sequence[Item],
    shard_size: int,
    store: Store,
    app: Celery,
    *,
    upload: bool | None = None,
    note: Callable[[str], None] | None = None,
    jobs: Mapping[str, Job] | None = None,
    settings: Settings | None = None,
) -> Manifest:
    """Validate, upload local inputs when needed, record the run in ``store`` (spec.json, manifest.json),
    enqueue one task per shard.

    ``upload``: copy local input files into the store first (``upload_inputs``); default
    ``needs_upload(store)``, i.e. for every store but a local folder. ``note`` hears about uploads.
    Every validation happens before the first write; returns the manifest."""
    settings = settings or Settings()
    spec = spec.validate(jobs, settings.limits)
    if spec.store != store.uri:
        raise InvalidSpec("store", f"the spec names {spec.store} but the run would be recorded in {store.uri}")
    manifest = plan_run(spec, items, shard_size)
    task_messages(spec, manifest.shards, settings)  # too large: refused before anything is written
    local_model_files = _model_files(spec)
    if needs_upload(store) if upload is None else upload:
        if run_exists(store, spec.run_id):
            raise already_exists(store, spec.run_id)
        done = upload_inputs(spec, items, store)
        if done.files and note is not None:
            where = store.url(RunKeys(spec.run_id).uploads)
            note(f"uploaded {done.files} local input file(s), {done.bytes / 2**20:.1f} MiB, to {where}/")
        spec = done.spec
        manifest = plan_run(spec, done.items, shard_size)
    copies = {getattr(spec, field): uri for field, uri in local_model_files.items()}
    spec = with_file_hashes(spec, store, copies)
    messages = task_messages(spec, manifest.shards, settings)
    record_run(spec, manifest, store)
    enqueue(spec.run_id, messages, app)
    return manifest


def unrecorded_shards(
    store: Store, run_id: str, jobs: Mapping[str, Job] | None = None
) -> tuple[JobSpec, list[Shard], int]:
    """The run's spec, the manifest's shards that have no record in ``store``, and the number of shards.

    Raises NotFoundInStore (naming the key) when the run has no spec or manifest."""
    keys = RunKeys(run_id)
    try:
        spec = JobSpec.from_dict(store.get_json(keys.spec), jobs)
        manifest = Manifest.from_dict(store.get_json(keys.manifest))
    except NotFoundInStore as exc:
        raise NotFoundInStore(
            f"run {run_id!r} is not (completely) recorded in {store.uri}: {exc}; submit it again"
        ) from None
    recorded = {keys.shard_of_record(key) for key in store.list(keys.records)}
    return spec, [s for s in manifest.shards if s.shard_id not in recorded], len(manifest.shards)


def resume(
    store: Store, run_id: str, app: Celery, jobs: Mapping[str, Job] | None = None, settings: Settings | None = None
) -> tuple[list[Shard], int]:
    """Re-enqueue every shard of ``run_id`` that has no record in ``store``; return them and the total.

    Safe to run any number of times and while workers still run: a worker skips a shard whose record
    exists, and the collector counts each item once, so a duplicate task costs at most one extra run
    of a shard. Use it after a broker restart lost queued tasks, after workers were gone, or after the
    producer died mid-submit (the manifest is written before the first task is sent)."""
    spec, missing, total = unrecorded_shards(store, run_id, jobs)
    enqueue(run_id, task_messages(spec, missing, settings or Settings()), app)
    return missing, total
