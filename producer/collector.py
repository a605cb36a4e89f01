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
from ascent.shared.errors import InvalidInput, NotFoundInStore, TransientError
from ascent.shared.jobs import get_job
from ascent.shared.jobs.base import Job
from ascent.shared.keys import RunKeys
from ascent.shared.records import DONE, FAILED, PENDING, RECORDED, SKIPPED, ShardRecord, json_safe
from ascent.shared.settings import Settings
from ascent.shared.sources import SourceReader
from ascent.shared.spec import JobSpec, Manifest
from ascent.shared.store import Store

# --- reading ------------------------------------------------------------------------------------


def read_records(store: Store, run_id: str, unreadable: list[str] | None = None) -> list[dict[str, Any]]:
    """Every item record of the run as a row, one per item_id, sorted by item_id.

    A shard recorded twice (redelivery) or an item retried in another shard counts once: a "done"
    record wins over a "failed" one, otherwise the later ``written_at``. Each row gets the
    ``shard_id``, ``written_at`` and (when known) ``worker`` of the shard record that carried it. A
    record that cannot be read or parsed is skipped (its items stay pending) and, with ``unreadable``,
    noted there as "key: reason".
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
        for item in record.items:
            row = item.to_dict()
            row.setdefault("shard_id", record.shard_id)
            row.setdefault("written_at", record.written_at)
            if record.worker is not None:
                row.setdefault("worker", record.worker)
            rows.append(row)
    return dedupe(rows)


def dedupe(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per item_id (done beats failed, then later ``written_at``, then later in the input),
    sorted by item_id. Rows that are not results (status "pending") are dropped."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("status") not in RECORDED:
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


@dataclass(frozen=True)
class Progress:
    """How far a run is: ``total`` items in the manifest, of which ``done``/``failed`` are recorded.

    ``workers`` counts recorded items per worker name (empty when records do not name workers).
    """

    run_id: str
    total: int
    done: int
    failed: int
    pending: int
    workers: dict[str, int] = field(default_factory=dict)
    unreadable: tuple[str, ...] = ()

    @property
    def finished(self) -> int:
        """Items with a record: done, failed or skipped (``--until-ci``)."""
        return self.total - self.pending

    @property
    def complete(self) -> bool:
        return self.pending == 0


def _counts(rows: list[dict[str, Any]]) -> tuple[Counter[str], dict[str, int]]:
    status = Counter(r["status"] for r in rows)
    workers = Counter(str(r["worker"]) for r in rows if r["status"] != PENDING and r.get("worker") is not None)
    return status, dict(sorted(workers.items()))


def progress(store: Store, run_id: str) -> Progress:
    """Read the manifest and the records; counts only items the manifest names."""
    manifest = Manifest.from_dict(store.get_json(RunKeys(run_id).manifest))
    unreadable: list[str] = []
    status, workers = _counts(item_table(manifest, read_records(store, run_id, unreadable)))
    counts = (status[DONE], status[FAILED], status[PENDING])
    return Progress(run_id, sum(status.values()), *counts, workers, tuple(unreadable))


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
        "n_recorded": status[DONE] + status[FAILED],
        "n_done": status[DONE],
        "n_failed": status[FAILED],
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
    summary.update(get_job(spec.kind, jobs).summarize(spec, rows, classes or run_classes(spec)))
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
    spec = JobSpec.from_dict(store.get_json(keys.spec), jobs)
    manifest = Manifest.from_dict(store.get_json(keys.manifest))
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


def format_summary(summary: Mapping[str, Any], max_failures: int = 10, jobs: Mapping[str, Job] | None = None) -> str:
    """A few lines for the terminal: counts, the job's headline numbers, failures, the report."""
    s = summary
    lines = [
        f"run {s['run_id']} ({s['kind']}, {s['model']}): {s['n_items']} items, {s['n_done']} done, "
        f"{s['n_failed']} failed, {s['n_pending']} pending"
    ]
    lines += get_job(s["kind"], jobs).summary_lines(s)
    failures = s["failures"]
    if failures:
        lines.append(f"failures ({len(failures)}):")
        lines.extend(
            f"  {f['item_id']} {f.get('original') or f['source']}: {f['error']}" for f in failures[:max_failures]
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
