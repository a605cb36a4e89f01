"""The shard handler: plain Python, no Celery. ``run_shard(spec, shard, store, runtime)`` runs every
item of one shard through its job (``ascent.shared.jobs``) as one batch and writes the results.

What it writes, under ``runs/<run_id>/`` (``ascent.shared.keys``: keys from ids only, never file names):
each item's ``inputs/<item_id>.png`` (what the kernel saw) and ``outputs/<item_id>.<ext>`` (the result:
PNG, 8-bit exact, or the job's ``output_format``; its sha256 in the record), then
``records/<shard_id>.json``, the shard record, LAST: its presence means every output it names exists
(the commit marker). With a job that ``stops_early`` (fool ``--until-ci``), a shard whose run is already
precise enough is recorded ``skipped`` without running.

Failures say whether retrying helps. An item whose input cannot be read or decoded is recorded
``failed`` with an error naming the item and the reason, and the rest of the shard still runs. A
shard-level permanent problem (a checkpoint that cannot be loaded, an unreadable style image) records
every item of the shard failed with the reason. ``TransientError`` propagates so the task retries the
shard. A shard whose record already exists is skipped (redelivery is harmless). Attempts and deaths
are counted as ``ascent.worker.attempts`` says.

A cancelled run (``ascent cancel``: the store's cancel marker) is checked before each shard, before its
kernel starts and between iterations of the ascent loop (``ascent.worker.watch``): what is left of the
shard is recorded ``cancelled``; a queued shard of a cancelled run is recorded so without loading a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ascent.shared.catalog import model_kind
from ascent.shared.codecs import PNG, SaveFormat, encode
from ascent.shared.control import cancel_marker
from ascent.shared.errors import AlreadyExists, InvalidInput, NotFoundInStore, RunCancelled, TransientError
from ascent.shared.images import encode_png
from ascent.shared.jobs import get_job
from ascent.shared.jobs.base import Job, Loaded, Outcome
from ascent.shared.kernels.loop import iteration_hook
from ascent.shared.keys import RunKeys
from ascent.shared.limits import Limits
from ascent.shared.models import Classifier
from ascent.shared.records import ItemRecord, ShardRecord
from ascent.shared.sources import SourceReader
from ascent.shared.spec import Item, JobSpec, Shard
from ascent.shared.store import Store
from ascent.shared.tensors import to_tensor
from ascent.worker.attempts import Attempts
from ascent.worker.finished import finished_rows
from ascent.worker.models import PRETRAINED, ModelCache
from ascent.worker.runtime import WorkerRuntime
from ascent.worker.watch import ShardWatch

log = logging.getLogger(__name__)
PNG_THREADS = 4  # encoders and store writes in flight per shard


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU (checked at call time, never at import)."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class ShardContext:
    """What a job sees while it runs a shard (``ascent.shared.jobs.base.WorkContext``)."""

    spec: JobSpec
    model: Classifier
    device: torch.device
    store: Store
    reader: SourceReader
    models: ModelCache | None = None

    @property
    def keys(self) -> RunKeys:
        return RunKeys(self.spec.run_id)

    @property
    def limits(self) -> Limits:
        return self.reader.limits

    def read_image(self, uri: str) -> tuple[np.ndarray, int | None]:
        return self.reader.load_image(uri)

    def put_png(self, key: str, image: np.ndarray) -> str:
        """Write ``image`` (H×W×3 or H×W uint8) as a PNG under ``key``; return its URI."""
        self.store.put(key, encode_png(image), "image/png")
        return self.store.url(key)

    def put_image(self, key: str, image: np.ndarray, fmt: SaveFormat) -> tuple[str, str]:
        """Write ``image`` in ``fmt`` under ``key``; return its URI and the sha256 of the bytes stored."""
        data = encode(image, fmt)
        self.store.put(key, data, fmt.media_type)
        return self.store.url(key), hashlib.sha256(data).hexdigest()

    def put_run_image(self, name: str, image: np.ndarray) -> str:
        key = self.keys.input(name)
        return self.store.url(key) if self.store.exists(key) else self.put_png(key, image)

    def put_item_image(self, item_id: str, name: str, image: np.ndarray) -> str:
        return self.put_png(self.keys.item_image(item_id, name), image)

    def tensor(self, images: Sequence[np.ndarray]) -> Tensor:
        return to_tensor(images, self.device)

    def read_stored(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except NotFoundInStore:
            return None

    def classifier(
        self, model: str, weights: str | None, mean: Sequence[float] | None, std: Sequence[float] | None
    ) -> Classifier:
        models = self.models or ModelCache()
        if model_kind(model) == "file":
            model = models.fetch(model, "--model", self.spec, self.reader)
        if weights not in PRETRAINED:
            weights = models.fetch(weights, "--weights", self.spec, self.reader)
        return models.get(model, weights, self.device, mean=mean and tuple(mean), std=std and tuple(std))


def _item_error(item: Item, reason: str) -> str:
    """``item <id> (<source>): <reason>``, the source named once (readers start their reasons with it)."""
    for name in (item.source, item.original):
        if name and reason.startswith(f"{name}: "):
            reason = reason[len(name) + 2 :]
    return f"item {item.item_id} ({item.source}): {reason}"


def load_items(job: Job, ctx: ShardContext, items: Sequence[Item]) -> tuple[list[Loaded], dict[str, ItemRecord]]:
    """Each item loaded by its job. Returns the loaded items and failed records by item id.

    Permanent problems (unreadable, corrupt, too large, not an image) fail only that item; a
    TransientError propagates so the shard is retried."""
    loaded: list[Loaded] = []
    failed: dict[str, ItemRecord] = {}
    for item in items:
        try:
            loaded.append(job.load(ctx, item))
        except TransientError:
            raise
        except InvalidInput as exc:
            failed[item.item_id] = ItemRecord.failed(item, _item_error(item, str(exc)))
        except Exception as exc:  # a decoder bug or an odd file: this item fails, not the shard
            log.warning("item %s: unexpected error while loading", item.item_id, exc_info=True)
            reason = f"cannot load: {type(exc).__name__}: {exc}"
            failed[item.item_id] = ItemRecord.failed(item, _item_error(item, reason))
    return loaded, failed


def write_outcomes(job: Job, ctx: ShardContext, outcomes: Sequence[Outcome]) -> dict[str, ItemRecord]:
    """Store each outcome's input and output PNGs; return the done records by item id.

    The PNGs are encoded and written by a few threads (zlib and the store's I/O release the GIL): per
    image this is more work than the kernel's on a GPU, and S3 puts are network round-trips."""
    keys, fmt = ctx.keys, job.output_format(ctx.spec.params)
    pngs = [(keys.input(o.item.item_id), o.input, PNG) for o in outcomes if o.input is not None]
    pngs += [(keys.output(o.item.item_id, fmt.ext), o.output, fmt) for o in outcomes if o.output is not None]
    if len(pngs) <= 2:  # one image: starting threads would cost more than they save
        written = [ctx.put_image(*args) for args in pngs]
    else:
        with ThreadPoolExecutor(max_workers=min(PNG_THREADS, len(pngs))) as pool:
            futures = [pool.submit(ctx.put_image, *args) for args in pngs]
            written = [future.result() for future in futures]  # re-raises the first error, in order
    stored = dict(zip((key for key, _, _ in pngs), written, strict=True))
    records = {}
    for o in outcomes:
        uri, sha256 = stored.get(keys.output(o.item.item_id, fmt.ext), (None, None))
        result = dict(o.result)
        if job.output_field is not None:
            result[job.output_field] = uri
        if sha256 is not None:  # what ``ascent verify`` checks the stored output against
            result["output_sha256"] = sha256
        records[o.item.item_id] = ItemRecord.done(o.item, uri, **result)
    return records


def peak_memory_mb(device: torch.device | str | None) -> dict[str, float]:
    """This process's peak memory so far, in MiB: host RSS, and on CUDA the caching allocator's peak."""
    rss_units = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * rss_units / 2**20, 1)}
    if device is not None and torch.device(device).type == "cuda":
        peak["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)
    return peak


def _record_info(info: dict[str, Any] | None, device: torch.device | None, started: float) -> dict[str, Any]:
    host = socket.gethostname()
    merged: dict[str, Any] = {"worker": host, "host": host, "pid": os.getpid()}
    merged.update({k: v for k, v in (info or {}).items() if v is not None})
    merged["device"] = str(device) if device is not None else None
    merged["seconds"] = round(time.perf_counter() - started, 3)
    merged.update(peak_memory_mb(device))
    return merged


def run_shard(
    spec: JobSpec,
    shard: Shard,
    store: Store,
    runtime: WorkerRuntime,
    device: str | torch.device | None = None,
    *,
    info: dict[str, Any] | None = None,
) -> ShardRecord:
    """Run every item of ``shard`` and write outputs, then the shard record; return the record.

    ``info`` adds fields to the record (the task passes the Celery worker name and task id). Raises
    TransientError (retry the shard); every permanent problem ends up in the record instead."""
    keys = RunKeys(spec.run_id)
    if store.exists(keys.record(shard.shard_id)):
        log.info("shard %s/%s already recorded: skipped", spec.run_id, shard.shard_id)
        return ShardRecord.from_dict(store.get_json(keys.record(shard.shard_id)))
    if cancel_marker(store, spec.run_id) is not None:  # before anything is loaded
        return record_shard_cancelled(spec, shard, store, {}, info=info)
    attempts = Attempts(store, spec.run_id, shard.shard_id)
    died = attempts.died()
    if len(died) >= runtime.policy.max_deaths:
        reason = runtime.policy.died_reason(len(died))
        return record_shard_failed(spec, shard, store, reason, info={**(info or {}), "attempts": len(died)})
    started = time.perf_counter()
    dev = pick_device(device)
    job = get_job(spec.kind, runtime.jobs)
    if job.stops_early(spec):
        stop = stopped(store, spec.run_id) or job.stop_reason(spec, finished_rows(store, spec.run_id))
        if stop is not None:
            with contextlib.suppress(AlreadyExists):  # once decided, later shards read one object
                store.create_json(RunKeys(spec.run_id).stopped, {"reason": stop, "at": time.time()})
            return record_shard_skipped(spec, shard, store, stop, info=info)
    failure = run_failure(store, spec.run_id)
    if failure is not None:  # another shard found the run cannot go on: no model load for this one
        return record_shard_failed(spec, shard, store, failure, info=info, device=dev, started=started)
    try:
        model = runtime.models.for_spec(spec, dev, runtime.reader)
    except InvalidInput as exc:  # the model does not load: the whole run fails, once, with this reason
        mark_run_failed(store, spec.run_id, str(exc), info)
        return record_shard_failed(spec, shard, store, str(exc), info=info, device=dev, started=started)
    try:
        # The attempt counts from here: the batch through the kernel is where memory runs out.
        attempt = attempts.start(info)
    except InvalidInput as exc:
        return record_shard_failed(spec, shard, store, str(exc), info=info, device=dev, started=started)
    records: dict[str, ItemRecord] = {}
    try:
        runtime.faults.apply(shard.items)
        ctx = ShardContext(
            spec=spec, model=model, device=dev, store=store, reader=runtime.reader, models=runtime.models
        )
        loaded, records = load_items(job, ctx, shard.items)
        if loaded:
            watch = ShardWatch(store, spec.run_id, shard.shard_id, len(shard.items), (info or {}).get("worker"))
            info = {**(info or {}), "kernel_started_at": watch.start()}
            with iteration_hook(watch):
                outcomes = job.run(ctx, loaded)
            records.update(write_outcomes(job, ctx, outcomes))
    except RunCancelled:
        return record_shard_cancelled(spec, shard, store, records, info=info, device=dev, started=started)
    except InvalidInput as exc:
        return record_shard_failed(spec, shard, store, str(exc), info=info, device=dev, started=started)
    finally:
        attempts.end(attempt)
    items = tuple(records[item.item_id] for item in shard.items)
    record = ShardRecord(spec.run_id, shard.shard_id, spec.kind, items, info=_record_info(info, dev, started))
    store.put_json(keys.record(shard.shard_id), record.to_dict())
    log.info(
        "shard %s/%s: %d done, %d failed in %.1fs on %s",
        spec.run_id,
        shard.shard_id,
        record.count("done"),
        record.count("failed"),
        record.info["seconds"],
        dev,
    )
    return record


def stopped(store: Store, run_id: str) -> str | None:
    """The reason recorded when a worker found the run's remaining shards need not run, else None."""
    try:
        return str(store.get_json(RunKeys(run_id).stopped).get("reason"))
    except (NotFoundInStore, InvalidInput, ValueError, AttributeError):
        return None


def record_shard_skipped(
    spec: JobSpec, shard: Shard, store: Store, reason: str, *, info: dict[str, Any] | None = None
) -> ShardRecord:
    """Record every item of the shard skipped, not run, because ``reason``; a record already there (another
    attempt's results) is kept and returned: the skip is written only if no record exists, in one step."""
    key = RunKeys(spec.run_id).record(shard.shard_id)
    items = tuple(ItemRecord.skipped(item, reason) for item in shard.items)
    record = ShardRecord(
        spec.run_id, shard.shard_id, spec.kind, items, info=_record_info(info, None, time.perf_counter())
    )
    try:
        store.create_json(key, record.to_dict())
    except AlreadyExists:
        log.info("shard %s/%s already recorded: not recorded skipped", spec.run_id, shard.shard_id)
        return ShardRecord.from_dict(store.get_json(key))
    log.info("shard %s/%s: %d items skipped: %s", spec.run_id, shard.shard_id, len(items), reason)
    return record


def run_failure(store: Store, run_id: str) -> str | None:
    """Why the run cannot go on, when a worker found out (``failure.json``), else None."""
    key = RunKeys(run_id).failure
    if not store.exists(key):
        return None
    try:
        return str(store.get_json(key).get("error"))
    except (InvalidInput, ValueError, AttributeError):
        return "the run was marked failed (runs/<run_id>/failure.json is unreadable)"


def mark_run_failed(store: Store, run_id: str, error: str, info: dict[str, Any] | None) -> None:
    """Record once, for the whole run, that it cannot go on (the first worker to find out wins)."""
    with contextlib.suppress(AlreadyExists):
        store.create_json(RunKeys(run_id).failure, {"error": error, "at": time.time(), **(info or {})})


def _record_unless_recorded(
    spec: JobSpec,
    shard: Shard,
    store: Store,
    items: Sequence[ItemRecord],
    info: dict[str, Any] | None,
    device: torch.device | None,
    started: float | None,
) -> tuple[ShardRecord, bool]:
    """(the shard's record, whether it was written now): ``items`` are written as its record unless the
    shard is already recorded, in which case that record is read and kept."""
    key = RunKeys(spec.run_id).record(shard.shard_id)
    if store.exists(key):
        return ShardRecord.from_dict(store.get_json(key)), False
    started = time.perf_counter() if started is None else started
    record = ShardRecord(spec.run_id, shard.shard_id, spec.kind, tuple(items), info=_record_info(info, device, started))
    store.put_json(key, record.to_dict())
    return record, True


def record_shard_cancelled(
    spec: JobSpec,
    shard: Shard,
    store: Store,
    kept: dict[str, ItemRecord],
    *,
    info: dict[str, Any] | None = None,
    device: torch.device | None = None,
    started: float | None = None,
) -> ShardRecord:
    """Record the shard's items cancelled, except those in ``kept`` (items that already failed)."""
    items = [kept.get(item.item_id) or ItemRecord.cancelled(item) for item in shard.items]
    record, written = _record_unless_recorded(spec, shard, store, items, info, device, started)
    if written:
        log.info("shard %s/%s: cancelled (%d items)", spec.run_id, shard.shard_id, record.count("cancelled"))
    return record


def record_shard_failed(
    spec: JobSpec,
    shard: Shard,
    store: Store,
    reason: str,
    *,
    info: dict[str, Any] | None = None,
    device: torch.device | None = None,
    started: float | None = None,
) -> ShardRecord:
    """Record every item of the shard failed with ``reason`` (unless the shard is already recorded)."""
    items = [ItemRecord.failed(item, _item_error(item, reason)) for item in shard.items]
    record, written = _record_unless_recorded(spec, shard, store, items, info, device, started)
    if written:
        log.warning("shard %s/%s: all %d items failed: %s", spec.run_id, shard.shard_id, len(items), reason)
    return record
