"""The results collector: durable per-shard records in the store -> summary.json, items.jsonl, report.html.

Aggregation reads only what workers committed (``runs/<run_id>/records/*.json``), never the broker's
result backend (chords on Redis are unreliable: celery#4207, #5237), so it can run at any time, any
number of times, and gives the same bytes for the same records. The job's own numbers come from its
module (``Job.summarize``). No torch here: the producer's machine may not have it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ascent.producer.report import render_report
from ascent.shared.catalog import ClassCatalog, classes_of
from ascent.shared.control import read_progress
from ascent.shared.errors import InvalidInput, NotFoundInStore, TransientError
from ascent.shared.jobs import get_job
from ascent.shared.jobs.base import Job
from ascent.shared.keys import RunKeys
from ascent.shared.records import CANCELLED, DONE, FAILED, PENDING, SKIPPED, STATUSES, ShardRecord, json_safe
from ascent.shared.settings import Settings
from ascent.shared.sources import SourceReader
from ascent.shared.spec import JobSpec, Manifest
from ascent.shared.store import Store

# --- reading ------------------------------------------------------------------------------------


def read_records(
    store: Store, run_id: str, unreadable: list[str] | None = None, shards: list[ShardRecord] | None = None
) -> list[dict[str, Any]]:
    """Every item record of the run as a row, one per item_id, sorted by item_id.

    A shard recorded twice (redelivery) or an item retried in another shard counts once: a "done"
    record wins over a "failed" one, otherwise the later ``written_at``. Each row gets the
    ``shard_id``, ``written_at`` and (when known) ``worker`` of the shard record that carried it. A
    record that cannot be read or parsed is skipped (its items stay pending) and, with ``unreadable``,
    noted there as "key: reason". With ``shards``, the shard records read are appended there.
    """
    keys = RunKeys(run_id)
    rows = []
    for key in store.list(keys.records):
        if keys.shard_of_record(key) is None:
            continue
        try:
            record = ShardRecord.from_dict(store.get_json(key), where=key)
        except (InvalidInput, NotFoundInStore, ValueError) as exc:
            if unreadable is not None:
                unreadable.append(f"{key}: {exc}")
            continue
        if shards is not None:
            shards.append(record)
        for item in record.items:
            row = item.to_dict()
            row.setdefault("shard_id", record.shard_id)
            row.setdefault("written_at", record.written_at)
            if record.worker is not None:
                row.setdefault("worker", record.worker)
            rows.append(row)
    return dedupe(rows)


def dedupe(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per item_id (done beats failed and cancelled, then later ``written_at``, then later in
    the input), sorted by item_id. Rows that are not results (status "pending") are dropped."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("status") not in STATUSES:
            continue
        current = best.get(record["item_id"])
        if current is None or _preference(record) >= _preference(current):
            best[record["item_id"]] = dict(record)
    return [best[k] for k in sorted(best)]


def _preference(record: Mapping[str, Any]) -> tuple[int, float]:
    written_at = record.get("written_at")
    return (record.get("status") == DONE, written_at if isinstance(written_at, (int, float)) else 0.0)


def _manifest(manifest: Manifest | Mapping[str, Any]) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest)


def item_table(manifest: Manifest | Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per manifest item, sorted by item_id: its (deduplicated) record, or a "pending" row."""
    recorded = {r["item_id"]: r for r in dedupe(records)}
    rows = []
    for item in sorted(_manifest(manifest).items, key=lambda i: i.item_id):
        planned = item.to_dict()
        record = recorded.get(item.item_id)
        if record is None:
            rows.append({**planned, "status": PENDING, "error": None, "output": None})
            continue
        row = {**planned, **record}
        for name in ("source", "label"):
            if row.get(name) is None:
                row[name] = planned.get(name)
        rows.append(row)
    return rows


def _unexpected_ids(manifest: Manifest, records: Iterable[Mapping[str, Any]]) -> list[str]:
    planned = {i.item_id for i in manifest.items}
    return sorted({r["item_id"] for r in dedupe(records)} - planned)


# --- progress -----------------------------------------------------------------------------------


class UnknownRun(NotFoundInStore):
    """No run of that id in the store (exit status 1, like any store error)."""


def read_manifest(store: Store, run_id: str) -> Manifest:
    """The run's manifest; raises UnknownRun (naming the run, the store and the way to list runs)."""
    key = RunKeys(run_id).manifest
    if not store.exists(key):
        raise UnknownRun(f"no run {run_id!r} in store {store.uri} (`ascent runs` lists them)")
    return Manifest.from_dict(store.get_json(key))


@dataclass(frozen=True)
class WorkerStat:
    """One worker's part in a run: the ``items`` it ran (recorded done or failed; not skipped or
    cancelled ones), ``seconds`` busy on its shards, when it was last heard of (wall time) and the shards
    it is running now."""

    name: str
    items: int
    seconds: float
    last_seen: float
    running: int = 0

    @property
    def rate(self) -> float | None:
        """Images per second while busy, None before its first record."""
        return self.items / self.seconds if self.items and self.seconds > 0 else None


@dataclass(frozen=True)
class Progress:
    """How far a run is: ``total`` items in the manifest, of which ``done``/``failed``/``cancelled``/
    ``skipped`` are recorded. ``in_flight``: the items running shards are through, as their workers estimate.

    ``workers`` counts recorded items per worker name (empty when records do not name workers);
    ``fleet`` has each worker's numbers; ``started_at`` is when the first shard started (wall time).
    """

    run_id: str
    total: int
    done: int
    failed: int
    pending: int
    workers: dict[str, int] = field(default_factory=dict)
    unreadable: tuple[str, ...] = ()
    cancelled: int = 0
    in_flight: float = 0.0
    fleet: tuple[WorkerStat, ...] = ()
    cancel_requested: bool = False
    started_at: float | None = None
    skipped: int = 0

    @property
    def finished(self) -> int:
        """Items with a result, done, failed, cancelled or skipped."""
        return self.done + self.failed + self.cancelled + self.skipped

    @property
    def estimate(self) -> float:
        """Items through: recorded ones plus the running shards' estimates (at most ``total``)."""
        return min(float(self.total), self.finished + self.in_flight)

    @property
    def processed(self) -> float:
        """Items run: done or failed, plus the running shards' estimates; what rates count (skipped and
        cancelled items are recorded without running, in no time)."""
        return min(float(self.total), self.done + self.failed + self.in_flight)

    @property
    def complete(self) -> bool:
        return self.pending == 0


def _counts(rows: list[dict[str, Any]]) -> tuple[Counter[str], dict[str, int]]:
    status = Counter(r["status"] for r in rows)
    workers = Counter(str(r["worker"]) for r in rows if r["status"] != PENDING and r.get("worker") is not None)
    return status, dict(sorted(workers.items()))


def _fleet(shards: list[ShardRecord], markers: Mapping[str, Mapping[str, Any]]) -> tuple[WorkerStat, ...]:
    stats: dict[str, list[float]] = {}  # name -> [items, seconds, last seen, running]
    for shard in shards:
        if shard.worker is None:
            continue
        seconds = shard.info.get("seconds")
        stat = stats.setdefault(shard.worker, [0, 0.0, 0.0, 0])
        stat[0] += shard.count(DONE) + shard.count(FAILED)  # skipped and cancelled items were not run
        stat[1] += float(seconds) if isinstance(seconds, (int, float)) else 0.0
        stat[2] = max(stat[2], shard.written_at)
    for marker in markers.values():
        stat = stats.setdefault(str(marker.get("worker")), [0, 0.0, 0.0, 0])
        at = marker.get("at")
        stat[2] = max(stat[2], float(at) if isinstance(at, (int, float)) else 0.0)
        stat[3] += 1
    return tuple(WorkerStat(n, int(s[0]), s[1], s[2], int(s[3])) for n, s in sorted(stats.items()))


def _started_at(shards: list[ShardRecord], markers: Mapping[str, Mapping[str, Any]]) -> float | None:
    starts = [s.written_at - float(s.info.get("seconds") or 0.0) for s in shards]
    starts += [float(m["started_at"]) for m in markers.values() if isinstance(m.get("started_at"), (int, float))]
    return min(starts) if starts else None


def progress(store: Store, run_id: str, records: list[dict[str, Any]] | None = None) -> Progress:
    """Read the manifest, the records and the running shards' progress markers; counts only items
    the manifest names. With ``records``, the rows read (``read_records``) are appended there, for a
    caller that needs them too. Raises UnknownRun for a run that is not in the store."""
    manifest = read_manifest(store, run_id)
    unreadable: list[str] = []
    shards: list[ShardRecord] = []
    rows = read_records(store, run_id, unreadable, shards)
    if records is not None:
        records.extend(rows)
    status, workers = _counts(item_table(manifest, rows))
    markers = read_progress(store, run_id, skip={s.shard_id for s in shards}) if status[PENDING] else {}
    return Progress(
        run_id,
        sum(status.values()),
        status[DONE],
        status[FAILED],
        status[PENDING],
        workers,
        tuple(unreadable),
        cancelled=status[CANCELLED],
        in_flight=sum(float(m.get("finished") or 0.0) for m in markers.values()),
        fleet=_fleet(shards, markers),
        cancel_requested=store.exists(RunKeys(run_id).cancel),
        started_at=_started_at(shards, markers),
        skipped=status[SKIPPED],
    )


# --- summary ------------------------------------------------------------------------------------


def summarize(
    spec: JobSpec | Mapping[str, Any],
    manifest: Manifest | Mapping[str, Any],
    items: list[dict[str, Any]],
    jobs: Mapping[str, Job] | None = None,
    unreadable: list[str] | None = None,
    classes: ClassCatalog | None = None,
) -> dict[str, Any]:
    """The run's headline numbers from its spec, manifest and item rows.

    ``items`` are rows as ``read_records`` returns them (duplicates and "pending" rows are fine).
    Only items the manifest names are counted; others are listed in ``unexpected_items``. The job's
    own numbers (rates, iteration statistics...) come from ``Job.summarize``.
    """
    spec = spec.validate(jobs) if isinstance(spec, JobSpec) else JobSpec.from_dict(spec, jobs)
    manifest = _manifest(manifest)
    rows = item_table(manifest, items)
    status, workers = _counts(rows)
    summary: dict[str, Any] = {
        "run_id": spec.run_id,
        "kind": spec.kind,
        "model": spec.model,
        "params": spec.params.to_dict(),
        "n_items": len(rows),
        "n_recorded": status[DONE] + status[FAILED] + status[CANCELLED] + status[SKIPPED],
        "n_done": status[DONE],
        "n_failed": status[FAILED],
        "n_cancelled": status[CANCELLED],
        "n_pending": status[PENDING],
        "n_skipped": status[SKIPPED],
        "failures": [
            {
                "item_id": r["item_id"],
                "source": r.get("source"),
                **({"original": r["original"]} if r.get("original") else {}),
                "error": r.get("error"),
            }
            for r in rows
            if r["status"] == FAILED
        ],
        "workers": workers,
        "unexpected_items": _unexpected_ids(manifest, items),
        "unreadable_records": list(unreadable or []),
    }
    # A cancelled item was never run: the job's numbers are over the others (as if it had not been asked).
    ran = [r for r in rows if r["status"] != CANCELLED]
    summary.update(get_job(spec.kind, jobs).summarize(spec, ran, classes or run_classes(spec)))
    return json_safe(summary)


def run_classes(spec: JobSpec) -> ClassCatalog:
    """The class names of the run's model (its --class-names file, read here, when it had one)."""
    names = None
    if spec.class_names:
        try:
            text = SourceReader(Settings()).read(spec.class_names).decode("utf-8", errors="replace")
            names = [line.strip() for line in text.splitlines() if line.strip()]
        except (InvalidInput, TransientError):
            names = None  # the ids stand in for the names
    return classes_of(spec.model, spec.num_classes, names)


# --- collect ------------------------------------------------------------------------------------


def _presigned(
    store: Store, keys: RunKeys, rows: list[dict[str, Any]], expires: int, ext: str = "png"
) -> list[dict[str, Any]]:
    """Rows whose output (and any field naming the same object) are presigned URLs."""
    out = []
    for row in rows:
        row = dict(row)
        output = row.get("output")
        if output:
            url = store.url(keys.output(row["item_id"], ext), expires=expires)
            row.update({k: url for k, v in row.items() if v == output})
        out.append(row)
    return out


def items_jsonl(rows: list[dict[str, Any]]) -> bytes:
    """One sorted-keys JSON object per line, in the given order."""
    return "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in rows).encode()


def collect(
    store: Store, run_id: str, presign: int | None = None, jobs: Mapping[str, Job] | None = None
) -> dict[str, Any]:
    """Write runs/<run_id>/summary.json, items.jsonl and report.html; return the summary.

    Idempotent: the same records give the same bytes. With ``presign`` (seconds), output URLs and the
    report URL are presigned (``store.url(key, expires=presign)``), which of course differ per call.
    """
    keys = RunKeys(run_id)
    manifest = read_manifest(store, run_id)
    spec = JobSpec.from_dict(store.get_json(keys.spec), jobs)
    unreadable: list[str] = []
    records = read_records(store, run_id, unreadable)
    if presign is not None:
        records = _presigned(store, keys, records, presign, get_job(spec.kind, jobs).output_format(spec.params).ext)
    rows = item_table(manifest, records)
    classes = run_classes(spec)
    summary = summarize(spec, manifest, records, jobs, unreadable, classes)
    summary["report"] = store.url(keys.report, expires=presign)
    page = render_report(spec, manifest, summary, rows, store, jobs, classes=classes)
    store.put_json(keys.summary, summary)
    for name, content in get_job(spec.kind, jobs).run_files(summary).items():
        store.put_json(keys.key(name), content)
    store.put(keys.items, items_jsonl(rows), "application/x-ndjson")
    store.put(keys.report, page.encode("utf-8"), "text/html; charset=utf-8")
    return summary


# --- terminal -----------------------------------------------------------------------------------


def _reason(failure: Mapping[str, Any]) -> str:
    """A failure's error without the ``item <id> (<source>): `` it starts with (the line names both)."""
    error = str(failure.get("error"))
    prefix = f"item {failure['item_id']} ({failure.get('source')}): "
    return error[len(prefix) :] if error.startswith(prefix) else error


def format_summary(summary: Mapping[str, Any], max_failures: int = 10, jobs: Mapping[str, Job] | None = None) -> str:
    """A few lines for the terminal: counts, the job's headline numbers, failures, the report."""
    s = summary
    lines = [
        f"run {s['run_id']} ({s['kind']}, {s['model']}): {s['n_items']} items, {s['n_done']} done, "
        f"{s['n_failed']} failed, {s['n_pending']} pending"
        + (f", {s['n_cancelled']} cancelled" if s.get("n_cancelled") else "")
        + (f", {s['n_skipped']} skipped" if s.get("n_skipped") else "")
    ]
    lines += get_job(s["kind"], jobs).summary_lines(s)
    failures = s["failures"]
    if failures:
        lines.append(f"failures ({len(failures)}):")
        lines.extend(
            f"  {f['item_id']} {f.get('original') or f['source']}: {_reason(f)}" for f in failures[:max_failures]
        )
        if len(failures) > max_failures:
            lines.append(f"  ... and {len(failures) - max_failures} more (see items.jsonl)")
    if s.get("unreadable_records"):
        lines.append(f"unreadable records, their items counted pending: {'; '.join(s['unreadable_records'][:5])}")
    if s["unexpected_items"]:
        lines.append(f"records for items not in the manifest (ignored): {', '.join(s['unexpected_items'][:10])}")
    if s.get("report"):
        lines.append(f"report: {s['report']}")
    return "\n".join(lines)
