"""The shard handler: plain Python, no Celery. ``run_shard(spec, shard, store, settings)`` runs every item
of one shard through the job's kernel as one batch and writes the results to the store.

What it writes, under ``runs/<run_id>/`` (keys from run, shard and item ids only, never file names):

    inputs/<item_id>.png      the preprocessed image the kernel saw (fool, saliency, style)
    inputs/style-<k>.png      the style images after resizing (style runs, once per run)
    outputs/<item_id>.png     the result: adversarial image, saliency map (grayscale, normalised per
                              image), class visualisation or stylised image; 8-bit exact
    records/<shard_id>.json   the shard record (``shared.records``), written LAST: its presence means
                              every output it names exists (the commit marker)

Failures say whether retrying helps. An item whose image cannot be read or decoded is recorded
``failed`` with an error naming the item and the reason, and the rest of the shard still runs. A
shard-level permanent problem (a checkpoint that cannot be loaded, an unreadable style image) records
every item of the shard failed with the reason. ``TransientError`` (network, S3 5xx) propagates so the
task retries the shard. A shard whose record already exists is skipped (redelivery is harmless).

Attempts are counted in the store, the system of record (Celery requeues a task whose pool process was
killed, e.g. by the OOM killer, with no limit): each delivery writes ``attempts/<shard_id>/<unique>.json``
when it starts and deletes it when it returns (done, failed or raising), so what is left there are the
attempts whose process died. A delivery that finds ``Settings.max_attempts`` of them records the shard's
items failed with the reason instead of running it again.

``ASCENT_FAULT_INJECT`` is a testing facility (never set it in production): a comma-separated list of
``sleep:<item_id>:<seconds>`` (a shard holding that item sleeps before running), ``sleep:*:<seconds>``
(every shard sleeps that long once before running: the sleeping kernel of the scale-out benchmark,
bench/bench_scaleout.py) and ``kill:<item_id>`` (its pool process kills itself with SIGKILL, like the
OOM killer would). See docs/reliability.md.

Models load once per worker process (``get_model``: an LRU cache keyed by model, weights, device), on
CUDA when present, else the CPU; CUDA is never touched at import.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from shared import kernels
from shared.catalog import NUM_CLASSES
from shared.errors import InvalidInput, StoreError, TransientError
from shared.images import encode_png, resize_center_crop, resize_smaller_side
from shared.models import Classifier, load_classifier
from shared.records import item_done, item_failed, shard_record
from shared.sources import load_source_image
from shared.spec import Item, JobSpec, Shard
from shared.store import Store, run_key

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

CLASS_PREFIX = "class:"
PNG_THREADS = 4  # encoders and store writes in flight per shard (Context.record_outputs)


# ----------------------------------------------------------------------------- models and devices


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU (checked at call time, never at import)."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=4)
def _cached_model(name: str, weights: str | None, device: str) -> Classifier:
    log.info("loading model %s (weights %s) on %s", name, weights or "default", device)
    return load_classifier(name, weights=weights, device=device)


def get_model(name: str, weights: str | None, device: torch.device) -> Classifier:
    """The frozen classifier, loaded once per process per (name, weights, device)."""
    return _cached_model(name, weights, str(device))


# ----------------------------------------------------------------------------- conversions


def to_tensor(images: Sequence[np.ndarray], device: torch.device) -> Tensor:
    """Same-shape H×W×3 uint8 arrays -> N×3×H×W float32 in [0, 1] on ``device``."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
    return batch.to(device)


def to_uint8(images: Tensor) -> np.ndarray:
    """N×3×H×W in [0, 1] -> N×H×W×3 uint8, ``round(x·255)`` (exact for 8-bit-exact images)."""
    arr = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def saliency_to_uint8(maps: Tensor) -> np.ndarray:
    """N×H×W maps (≥ 0) -> N×H×W uint8, each map scaled so its maximum is 255 (all-zero stays 0)."""
    maps = maps.detach().float()
    peak = maps.flatten(1).amax(1).clamp_min(torch.finfo(torch.float32).tiny).view(-1, 1, 1)
    return (maps / peak).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def group_by_shape(arrays: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``arrays`` grouped by shape, in order of first appearance (each group is one batch)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, arr in enumerate(arrays):
        groups.setdefault(tuple(arr.shape), []).append(i)
    return list(groups.values())


def parse_class_source(source: str) -> int:
    """``"class:76"`` -> 76; InvalidInput for anything else or a class id out of range."""
    digits = source[len(CLASS_PREFIX) :]
    if not source.startswith(CLASS_PREFIX) or not digits.isdigit():
        raise InvalidInput(f"source {source!r} is not a class reference like 'class:76'")
    if not int(digits) < NUM_CLASSES:
        raise InvalidInput(f"class id {int(digits)} is out of range 0..{NUM_CLASSES - 1}")
    return int(digits)


# ----------------------------------------------------------------------------- the shard context


@dataclass
class Context:
    """What a job runner needs: the spec, where to write, the model and the settings."""

    spec: JobSpec
    store: Store
    settings: Settings
    model: Classifier
    device: torch.device

    def key(self, *parts: str) -> str:
        return run_key(self.spec.run_id, *parts)

    def put_png(self, key: str, image: np.ndarray) -> str:
        """Write ``image`` (H×W×3 or H×W uint8) as a PNG under ``key``; return its URI."""
        self.store.put(key, encode_png(image), "image/png")
        return self.store.url(key)

    def output(self, item: Item, image: np.ndarray) -> str:
        return self.put_png(self.key("outputs", f"{item.item_id}.png"), image)

    def save_input(self, item: Item, image: np.ndarray) -> str:
        return self.put_png(self.key("inputs", f"{item.item_id}.png"), image)

    def record_outputs(
        self,
        loaded: Sequence[Loaded],
        outputs: np.ndarray,
        metrics: Sequence[dict[str, Any]],
        records: dict[str, dict[str, Any]],
    ) -> None:
        """Store each item's preprocessed input and output PNG, and its done record in ``records``.

        The PNGs are encoded and written by a few threads (zlib and the store's I/O release the GIL):
        per image this is more work than the kernel's on a GPU, and S3 puts are network round-trips."""
        jobs = [(self.save_input, x.item, x.image) for x in loaded]
        jobs += [(self.output, x.item, image) for x, image in zip(loaded, outputs, strict=True)]
        if len(jobs) <= 2:  # one image: starting threads would cost more than they save
            uris = [write(item, image) for write, item, image in jobs]
        else:
            with ThreadPoolExecutor(max_workers=min(PNG_THREADS, len(jobs))) as pool:
                futures = [pool.submit(write, item, image) for write, item, image in jobs]
                uris = [future.result() for future in futures]  # re-raises the first error, in order
        for x, uri, item_metrics in zip(loaded, uris[len(loaded) :], metrics, strict=True):
            records[x.item.item_id] = item_done(x.item, uri, **item_metrics)


@dataclass(frozen=True)
class Loaded:
    """An item whose image loaded and was preprocessed; ``label`` is the item's or the source's."""

    item: Item
    image: np.ndarray
    label: int | None


def _item_error(item: Item, reason: str) -> str:
    return f"item {item.item_id} ({item.source}): {reason}"


def load_items(
    ctx: Context, items: Sequence[Item], preprocess: Callable[[np.ndarray], np.ndarray]
) -> tuple[list[Loaded], dict[str, dict[str, Any]]]:
    """Load and preprocess each item's image. Returns the loaded items and failed records by item id.

    Permanent problems (unreadable, corrupt, too large, not an image) fail only that item; a
    TransientError propagates so the shard is retried."""
    loaded: list[Loaded] = []
    failed: dict[str, dict[str, Any]] = {}
    for item in items:
        try:
            image, source_label = load_source_image(item.source, ctx.settings, ctx.settings.max_pixels)
            image = preprocess(image)
        except TransientError:
            raise
        except InvalidInput as exc:
            failed[item.item_id] = item_failed(item, _item_error(item, str(exc)))
            continue
        except Exception as exc:  # a decoder bug or an odd file: this item fails, not the shard
            log.warning("item %s: unexpected error while loading", item.item_id, exc_info=True)
            reason = f"cannot load: {type(exc).__name__}: {exc}"
            failed[item.item_id] = item_failed(item, _item_error(item, reason))
            continue
        label = item.label if item.label is not None else source_label
        loaded.append(Loaded(item, image, label))
    return loaded, failed


# ----------------------------------------------------------------------------- the four jobs


def run_fool(ctx: Context, items: Sequence[Item]) -> list[dict[str, Any]]:
    p = ctx.spec.params
    size = ctx.spec.size
    loaded, records = load_items(ctx, items, lambda a: resize_center_crop(a, size))
    target = p["target"]
    if loaded:
        result = kernels.fool(
            ctx.model,
            to_tensor([x.image for x in loaded], ctx.device),
            target,
            lr=p["lr"],
            max_iters=p["max_iters"],
            extra_iters=p["extra_iters"],
            loss=p["loss"],
            precision=p["precision"],
        )
        metrics = [
            {
                "fooled": bool(result.fooled[i]),
                "iterations": int(result.iterations[i]),
                "target": target,
                "pred_before": int(result.pred_before[i]),
                "pred_after": int(result.pred_after[i]),
                "l2": float(result.l2[i]),
                "linf": float(result.linf[i]),
            }
            for i in range(len(loaded))
        ]
        ctx.record_outputs(loaded, to_uint8(result.images), metrics, records)
    return [records[item.item_id] for item in items]


def run_saliency(ctx: Context, items: Sequence[Item]) -> list[dict[str, Any]]:
    size = ctx.spec.size
    loaded, records = load_items(ctx, items, lambda a: resize_center_crop(a, size))
    if loaded:
        images = to_tensor([x.image for x in loaded], ctx.device)
        with torch.no_grad():
            logits = ctx.model(images)
        preds = logits.argmax(1)
        # Explain the true class when it is known, else what the model predicts.
        classes = [x.label if x.label is not None else int(preds[i]) for i, x in enumerate(loaded)]
        maps = saliency_to_uint8(kernels.saliency(ctx.model, images, classes, loss=ctx.spec.params["loss"]))
        for i, x in enumerate(loaded):
            ctx.save_input(x.item, x.image)
            uri = ctx.output(x.item, maps[i])
            records[x.item.item_id] = item_done(
                x.item,
                uri,
                pred=int(preds[i]),
                class_id=classes[i],
                score=float(logits[i, classes[i]]),
                saliency=uri,
            )
    return [records[item.item_id] for item in items]


def run_classviz(ctx: Context, items: Sequence[Item]) -> list[dict[str, Any]]:
    p = ctx.spec.params
    records: dict[str, dict[str, Any]] = {}
    wanted: list[tuple[Item, int]] = []
    for item in items:
        try:
            wanted.append((item, parse_class_source(item.source)))
        except InvalidInput as exc:
            records[item.item_id] = item_failed(item, _item_error(item, str(exc)))
    if wanted:
        images = kernels.class_visualization(
            ctx.model,
            [c for _, c in wanted],
            iters=p["iters"],
            lr=p["lr"],
            l2_reg=p["l2_reg"],
            jitter=p["jitter"],
            blur_every=p["blur_every"],
            blur_sigma=p["blur_sigma"],
            seed=p["seed"],
            size=ctx.spec.size,
            precision=p["precision"],
        )
        outputs = to_uint8(images)
        # Score what the PNG holds, not the float image.
        with torch.no_grad():
            logits = ctx.model(to_tensor(list(outputs), ctx.device))
        for i, (item, class_id) in enumerate(wanted):
            uri = ctx.output(item, outputs[i])
            records[item.item_id] = item_done(
                item,
                uri,
                class_id=class_id,
                score=float(logits[i, class_id]),
                pred=int(logits[i].argmax()),
            )
    return [records[item.item_id] for item in items]


def load_style_images(ctx: Context) -> list[Tensor]:
    """The spec's style images resized (smaller side = style_size) as 1×3×h×w tensors; each is stored
    once per run as inputs/style-<k>.png. An unreadable style image is a permanent shard-level error."""
    p = ctx.spec.params
    styles = []
    for k, uri in enumerate(p["style"]):
        try:
            image, _ = load_source_image(uri, ctx.settings, ctx.settings.max_pixels)
            image = resize_smaller_side(image, p["style_size"])
        except InvalidInput as exc:
            raise InvalidInput(f"style image {k} ({uri}): {exc}") from exc
        key = ctx.key("inputs", f"style-{k}.png")
        if not ctx.store.exists(key):
            ctx.put_png(key, image)
        styles.append(to_tensor([image], ctx.device))
    return styles


def run_style(ctx: Context, items: Sequence[Item]) -> list[dict[str, Any]]:
    p = ctx.spec.params
    size = ctx.spec.size
    styles = load_style_images(ctx)
    loaded, records = load_items(ctx, items, lambda a: resize_smaller_side(a, size))
    # Contents of different aspect ratios have different shapes: one batched optimisation per shape.
    for group in group_by_shape([x.image for x in loaded]):
        batch = [loaded[i] for i in group]
        result = kernels.style_transfer(
            ctx.model,
            to_tensor([x.image for x in batch], ctx.device),
            styles,
            content_layer=p["content_layer"],
            content_weight=p["content_weight"],
            style_layers=tuple(p["style_layers"]),
            style_weights=tuple(p["style_weights"]),
            tv_weight=p["tv_weight"],
            iters=p["iters"],
            lr=p["lr"],
            decayed_lr=p["decayed_lr"],
            decay_at=p["decay_at"],
            init=p["init"],
            seed=p["seed"],
            precision=p["precision"],
            style_blend=p["style_blend"],
        )
        metrics = [
            {
                "content_loss": float(result.content[i]),
                "style_loss": float(result.style[i]),
                "tv_loss": float(result.tv[i]),
                "loss": float(result.loss[i]),
            }
            for i in range(len(batch))
        ]
        ctx.record_outputs(batch, to_uint8(result.images), metrics, records)
    return [records[item.item_id] for item in items]


#: Job kind -> runner(ctx, items) -> one record per item, in order.
JOB_RUNNERS: dict[str, Callable[[Context, Sequence[Item]], list[dict[str, Any]]]] = {
    "fool": run_fool,
    "saliency": run_saliency,
    "classviz": run_classviz,
    "style": run_style,
}


# ----------------------------------------------------------------------------- attempts and faults

ATTEMPTS_DIR = "attempts"
FAULT_INJECT_VAR = "ASCENT_FAULT_INJECT"
WILDCARD = "*"  # sleep:*:<seconds>: every shard (item ids never contain it)


def attempts_prefix(spec: JobSpec, shard: Shard) -> str:
    """``runs/<run_id>/attempts/<shard_id>/``: one object per attempt that has not returned."""
    return run_key(spec.run_id, ATTEMPTS_DIR, shard.shard_id) + "/"


def died_attempts(store: Store, spec: JobSpec, shard: Shard) -> list[str]:
    """Keys of the shard's attempts that started and never returned: their process died (SIGKILL, OOM,
    a hard time limit), or, rarely, a duplicate delivery is running them right now elsewhere."""
    return [k for k in store.list(attempts_prefix(spec, shard)) if k.endswith(".json")]


def died_reason(n: int) -> str:
    return (
        f"the worker process died {n} times while running this shard (killed, e.g. out of memory); "
        "not retried again (use a smaller --shard-size, or raise ASCENT_MAX_ATTEMPTS)"
    )


def start_attempt(store: Store, spec: JobSpec, shard: Shard, info: dict[str, Any] | None) -> str:
    """Write this attempt's marker (before any work, so a process killed later leaves it behind)."""
    # Time first so a listing is in start order; the random part keeps concurrent attempts apart.
    key = attempts_prefix(spec, shard) + f"{time.time_ns()}-{uuid.uuid4().hex[:12]}.json"
    host = socket.gethostname()
    marker = {"host": host, "pid": os.getpid(), "started_at": time.time()}
    marker.update({k: v for k, v in (info or {}).items() if v is not None})
    store.put_json(key, marker)
    return key


def end_attempt(store: Store, key: str) -> None:
    """Remove the marker of an attempt that returned (whatever its outcome). A store fault here only
    leaves the marker behind, which counts one death too many: logged, never raised."""
    try:
        store.delete(key)
    except (StoreError, TransientError, NotImplementedError) as exc:
        log.warning("could not remove the attempt marker %s (it will count as a died attempt): %s", key, exc)


@lru_cache(maxsize=1)
def fault_plan(value: str | None = None) -> dict[str, tuple[str, float]]:
    """``ASCENT_FAULT_INJECT`` (or ``value``) parsed: item id -> ("sleep", seconds) or ("kill", 0).

    A testing facility: ``sleep:<item_id>:<seconds>,kill:<item_id>``; ``sleep:*:<seconds>`` makes every shard
    sleep (key ``"*"``, never an item id). Raises InvalidInput when malformed."""
    text = os.environ.get(FAULT_INJECT_VAR, "") if value is None else value
    plan: dict[str, tuple[str, float]] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        parts = entry.split(":")
        try:
            if parts[0] == "kill" and len(parts) == 2 and parts[1] and parts[1] != WILDCARD:
                plan[parts[1]] = ("kill", 0.0)
                continue
            if parts[0] == "sleep" and len(parts) == 3 and parts[1] and float(parts[2]) >= 0:
                plan[parts[1]] = ("sleep", float(parts[2]))
                continue
        except ValueError:
            pass
        raise InvalidInput(
            f"{FAULT_INJECT_VAR}: {entry!r} is not sleep:<item_id|*>:<seconds> or kill:<item_id> "
            "(a testing facility; unset it in production)"
        )
    return plan


def inject_faults(items: Sequence[Item]) -> None:
    """Apply ``ASCENT_FAULT_INJECT`` to a shard about to run (nothing happens when it is unset)."""
    plan = fault_plan()
    action, seconds = plan.get(WILDCARD, ("", 0.0))
    if action == "sleep":  # once per shard, however many items it holds
        time.sleep(seconds)
    for item in items:
        action, seconds = plan.get(item.item_id, ("", 0.0))
        if action == "sleep":
            log.warning("%s: item %s: sleeping %.1fs", FAULT_INJECT_VAR, item.item_id, seconds)
            time.sleep(seconds)
        elif action == "kill":
            log.warning(
                "%s: item %s: killing this process (pid %d)", FAULT_INJECT_VAR, item.item_id, os.getpid()
            )
            os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- the handler


def record_key(spec: JobSpec, shard: Shard) -> str:
    return run_key(spec.run_id, "records", f"{shard.shard_id}.json")


def _record_info(
    info: dict[str, Any] | None, device: torch.device | str | None, started: float
) -> dict[str, Any]:
    host = socket.gethostname()
    merged: dict[str, Any] = {"worker": host, "host": host, "pid": os.getpid()}
    merged.update({k: v for k, v in (info or {}).items() if v is not None})
    merged["device"] = str(device) if device is not None else None
    merged["seconds"] = round(time.perf_counter() - started, 3)
    merged.update(peak_memory_mb(device))
    return merged


def peak_memory_mb(device: torch.device | str | None) -> dict[str, float]:
    """This process's peak memory so far, in MiB: host RSS, and on CUDA the caching allocator's peak."""
    rss_units = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * rss_units / 2**20, 1)}
    if device is not None and torch.device(device).type == "cuda":
        peak["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)
    return peak


def run_shard(
    spec: JobSpec,
    shard: Shard,
    store: Store,
    settings: Settings,
    device: str | torch.device | None = None,
    *,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every item of ``shard`` and write outputs, then the shard record; return the record.

    ``info`` adds fields to the record (the task passes the Celery worker name and task id). Raises
    TransientError (retry the shard); every permanent problem ends up in the record instead."""
    key = record_key(spec, shard)
    if store.exists(key):
        log.info("shard %s/%s already recorded: skipped", spec.run_id, shard.shard_id)
        return store.get_json(key)
    died = died_attempts(store, spec, shard)
    if len(died) >= settings.max_attempts:
        return record_shard_failed(
            spec, shard, store, died_reason(len(died)), info={**(info or {}), "attempts": len(died)}
        )
    started = time.perf_counter()
    dev = pick_device(device)
    try:
        model = get_model(spec.model, spec.weights, dev)
        # The attempt counts from here: the batch through the kernel is where memory runs out.
        attempt = start_attempt(store, spec, shard, info)
    except InvalidInput as exc:
        return record_shard_failed(spec, shard, store, str(exc), info=info, device=dev, started=started)
    try:
        inject_faults(shard.items)
        ctx = Context(spec=spec, store=store, settings=settings, model=model, device=dev)
        items = JOB_RUNNERS[spec.kind](ctx, shard.items)
    except InvalidInput as exc:
        return record_shard_failed(spec, shard, store, str(exc), info=info, device=dev, started=started)
    finally:
        end_attempt(store, attempt)
    record = shard_record(spec.run_id, shard.shard_id, spec.kind, items, **_record_info(info, dev, started))
    store.put_json(key, record)
    log.info(
        "shard %s/%s: %d done, %d failed in %.1fs on %s",
        spec.run_id,
        shard.shard_id,
        sum(i["status"] == "done" for i in items),
        sum(i["status"] == "failed" for i in items),
        record["seconds"],
        dev,
    )
    return record


def record_shard_failed(
    spec: JobSpec,
    shard: Shard,
    store: Store,
    reason: str,
    *,
    info: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Record every item of the shard failed with ``reason`` (unless the shard is already recorded)."""
    key = record_key(spec, shard)
    if store.exists(key):
        return store.get_json(key)
    items = [item_failed(item, _item_error(item, reason)) for item in shard.items]
    record = shard_record(
        spec.run_id,
        shard.shard_id,
        spec.kind,
        items,
        **_record_info(info, device, time.perf_counter() if started is None else started),
    )
    store.put_json(key, record)
    log.warning("shard %s/%s: all %d items failed: %s", spec.run_id, shard.shard_id, len(items), reason)
    return record
