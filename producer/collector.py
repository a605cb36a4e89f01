"""The results collector: durable per-shard records in the store -> summary.json, items.jsonl, report.html.

Aggregation reads only what workers committed (``runs/<run_id>/records/*.json``), never the broker's
result backend (REFERENCE.md §4.6), so it can run at any time, any number of times, and gives the
same bytes for the same records. No torch here: the producer's machine may not have it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from producer.report import render_report
from shared.catalog import NUM_CLASSES, class_names
from shared.errors import InvalidInput
from shared.records import DONE, FAILED
from shared.store import Store, run_key

PENDING = "pending"
HISTOGRAM_MAX_BINS = 20
LOSS_FIELDS = ("content_loss", "style_loss", "tv_loss", "loss")


# --- reading ------------------------------------------------------------------------------------


def read_records(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every item record of the run, one per item_id, sorted by item_id.

    A shard recorded twice (redelivery) or an item retried in another shard counts once: a "done"
    record wins over a "failed" one, otherwise the later ``written_at``. Each record gets the
    ``shard_id``, ``written_at`` and (when known) ``worker`` of the shard record that carried it.
    """
    prefix = run_key(run_id, "records") + "/"
    records = []
    for key in store.list(prefix):
        if not key.endswith(".json"):
            continue
        records.extend(_items_of_shard_record(key, store.get_json(key)))
    return dedupe(records)


def _items_of_shard_record(key: str, shard: Any) -> list[dict[str, Any]]:
    if not isinstance(shard, Mapping) or not isinstance(shard.get("items"), list):
        raise InvalidInput(f"{key}: not a shard record (expected an object with an 'items' list)")
    items = []
    for item in shard["items"]:
        if not isinstance(item, Mapping) or not isinstance(item.get("item_id"), str):
            raise InvalidInput(f"{key}: an item record without an item_id")
        row = dict(item)
        row.setdefault("shard_id", shard.get("shard_id"))
        row.setdefault("written_at", shard.get("written_at"))
        if shard.get("worker") is not None:
            row.setdefault("worker", shard["worker"])
        items.append(row)
    return items


def dedupe(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per item_id (done beats failed, then later ``written_at``, then later in the input),
    sorted by item_id. Rows that are not results (status "pending") are dropped."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("status") not in (DONE, FAILED):
            continue
        item_id = record["item_id"]
        current = best.get(item_id)
        if current is None or _preference(record) >= _preference(current):
            best[item_id] = dict(record)
    return [best[k] for k in sorted(best)]


def _preference(record: Mapping[str, Any]) -> tuple[int, float]:
    written_at = record.get("written_at")
    return (record.get("status") == DONE, written_at if isinstance(written_at, (int, float)) else 0.0)


def item_table(manifest: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per manifest item, sorted by item_id: its (deduplicated) record, or a "pending" row."""
    recorded = {r["item_id"]: r for r in dedupe(records)}
    rows = []
    for planned in _manifest_items(manifest):
        record = recorded.get(planned["item_id"])
        if record is None:
            rows.append({**planned, "status": PENDING, "error": None, "output": None})
            continue
        row = {**planned, **record}
        for name in ("source", "label"):
            if row.get(name) is None:
                row[name] = planned.get(name)
        rows.append(row)
    return sorted(rows, key=lambda r: r["item_id"])


def _manifest_items(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    items: dict[str, dict[str, Any]] = {}
    for shard in manifest.get("shards", []):
        for item in shard.get("items", []):
            row = {"item_id": item["item_id"], "source": item.get("source"), "label": item.get("label")}
            if item.get("original"):  # an uploaded local input: ``source`` is the copy the workers read
                row["original"] = item["original"]
            items[item["item_id"]] = row
    return [items[k] for k in sorted(items)]


def _unexpected_ids(manifest: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> list[str]:
    planned = {i["item_id"] for i in _manifest_items(manifest)}
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

    @property
    def finished(self) -> int:
        """Items with a result, done or failed."""
        return self.done + self.failed

    @property
    def complete(self) -> bool:
        return self.pending == 0


def progress(store: Store, run_id: str) -> Progress:
    """Read the manifest and the records; counts only items the manifest names."""
    manifest = store.get_json(run_key(run_id, "manifest.json"))
    rows = item_table(manifest, read_records(store, run_id))
    status = Counter(r["status"] for r in rows)
    workers = Counter(
        str(r["worker"]) for r in rows if r["status"] != PENDING and r.get("worker") is not None
    )
    return Progress(
        run_id=run_id,
        total=len(rows),
        done=status[DONE],
        failed=status[FAILED],
        pending=status[PENDING],
        workers=dict(sorted(workers.items())),
    )


# --- summary ------------------------------------------------------------------------------------


def class_name(class_id: Any) -> str | None:
    """The ImageNet name of ``class_id``, or None when it is not a class id."""
    if isinstance(class_id, int) and not isinstance(class_id, bool) and 0 <= class_id < NUM_CLASSES:
        return class_names()[class_id]
    return None


def _finite(value: Any) -> float | int | None:
    """``value`` if it is a finite number, else None (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def percentile_nearest_rank(values: Sequence[float], q: float) -> float:
    """The smallest value v with at least ``q`` % of ``values`` <= v (an observed value, no interpolation)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def size_stats(values: Sequence[Any]) -> dict[str, float | None]:
    """{mean, median, max} of the finite values; all None when there are none."""
    finite = [v for v in values if _finite(v) is not None]
    if not finite:
        return {"mean": None, "median": None, "max": None}
    return {"mean": statistics.fmean(finite), "median": statistics.median(finite), "max": max(finite)}


def iteration_histogram(iterations: list[int], max_bins: int = HISTOGRAM_MAX_BINS) -> dict[str, list[int]]:
    """Integer-width bins from 0, at most ``max_bins``.

    ``bins`` are the edges (len(counts) + 1); bin i counts bins[i] <= iterations < bins[i + 1].
    """
    if not iterations:
        return {"bins": [], "counts": []}
    top = max(iterations) + 1
    width = max(1, math.ceil(top / max_bins))
    n_bins = math.ceil(top / width)
    counts = [0] * n_bins
    for it in iterations:
        counts[it // width] += 1
    return {"bins": [i * width for i in range(n_bins + 1)], "counts": counts}


def iteration_stats(iterations: list[int]) -> dict[str, Any]:
    """{mean, median, p90 (nearest rank), max, histogram} of iterations-to-fool; None when empty."""
    if not iterations:
        return {"mean": None, "median": None, "p90": None, "max": None, "histogram": iteration_histogram([])}
    return {
        "mean": statistics.fmean(iterations),
        "median": statistics.median(iterations),
        "p90": percentile_nearest_rank(iterations, 90),
        "max": max(iterations),
        "histogram": iteration_histogram(iterations),
    }


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def _fooled_iterations(rows: Iterable[Mapping[str, Any]]) -> list[int]:
    return [
        r["iterations"]
        for r in rows
        if r.get("fooled") is True and isinstance(r.get("iterations"), int) and r["iterations"] >= 0
    ]


def _breakdown(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Fool results grouped by the class id in ``key`` (rows without one are left out)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if class_name(row.get(key)) is not None:
            groups.setdefault(row[key], []).append(row)
    out = {}
    for class_id in sorted(groups):
        done = [r for r in groups[class_id] if r["status"] == DONE]
        fooled = [r for r in done if r.get("fooled") is True]
        iterations = _fooled_iterations(fooled)
        out[str(class_id)] = {
            "name": class_name(class_id),
            "n": len(done),
            "n_failed": sum(r["status"] == FAILED for r in groups[class_id]),
            "n_fooled": len(fooled),
            "fooling_rate": _rate(len(fooled), len(done)),
            "median_iterations": statistics.median(iterations) if iterations else None,
        }
    return out


def _fool_summary(spec: Mapping[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    spec_target = spec.get("params", {}).get("target")
    # A failed record carries no target: it was aimed at the spec's.
    rows = [{**r, "target": r.get("target", spec_target)} for r in rows if r["status"] != PENDING]
    done = [r for r in rows if r["status"] == DONE]
    fooled = [r for r in done if r.get("fooled") is True]
    targets = sorted({r["target"] for r in rows if class_name(r["target"]) is not None})
    return {
        "target": spec_target,
        "target_name": class_name(spec_target),
        "targets": [{"class_id": t, "name": class_name(t)} for t in targets],
        "n_fooled": len(fooled),
        "fooling_rate": _rate(len(fooled), len(done)),
        "iterations": iteration_stats(_fooled_iterations(fooled)),
        "l2": size_stats([r.get("l2") for r in fooled]),
        "linf": size_stats([r.get("linf") for r in fooled]),
        "per_target": _breakdown(rows, "target"),
        "per_true_class": _breakdown(rows, "label"),
    }


def _style_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["status"] == DONE]
    losses = [
        {"item_id": r["item_id"], "output": r.get("output"), **{f: _finite(r.get(f)) for f in LOSS_FIELDS}}
        for r in done
    ]
    means = {}
    for name in LOSS_FIELDS:
        values = [x[name] for x in losses if x[name] is not None]
        means[name] = statistics.fmean(values) if values else None
    return {"losses": losses, "mean_losses": means}


def _saliency_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["status"] == DONE]
    labelled = [r for r in done if class_name(r.get("label")) is not None]
    correct = sum(r.get("pred") == r["label"] for r in labelled)
    return {
        "n_labelled": len(labelled),
        "n_correct": correct,
        "accuracy": _rate(correct, len(labelled)),
        "predictions": [
            {
                "item_id": r["item_id"],
                "label": r.get("label"),
                "label_name": class_name(r.get("label")),
                "pred": r.get("pred"),
                "pred_name": class_name(r.get("pred")),
                "score": _finite(r.get("score")),
                "output": r.get("output"),
            }
            for r in done
        ],
    }


def _classviz_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["status"] == DONE]
    hits = sum(r.get("pred") is not None and r.get("pred") == r.get("class_id") for r in done)
    return {
        "n_hit": hits,
        "hit_rate": _rate(hits, len(done)),
        "images": [
            {
                "item_id": r["item_id"],
                "class_id": r.get("class_id"),
                "class_name": class_name(r.get("class_id")),
                "pred": r.get("pred"),
                "pred_name": class_name(r.get("pred")),
                "score": _finite(r.get("score")),
                "output": r.get("output"),
            }
            for r in done
        ],
    }


def summarize(
    spec: Mapping[str, Any], manifest: Mapping[str, Any], items: list[dict[str, Any]]
) -> dict[str, Any]:
    """The run's headline numbers from its spec (JobSpec.to_dict()), manifest and item records.

    ``items`` are records as ``read_records`` returns them (duplicates and "pending" rows are fine).
    Only items the manifest names are counted; others are listed in ``unexpected_items``. Rates are
    over items that did not fail (null when there are none); fool iteration and L2/L∞ statistics are
    over fooled items, p90 by nearest rank.
    """
    rows = item_table(manifest, items)
    status = Counter(r["status"] for r in rows)
    workers = Counter(
        str(r["worker"]) for r in rows if r["status"] != PENDING and r.get("worker") is not None
    )
    kind = spec.get("kind")
    summary: dict[str, Any] = {
        "run_id": spec.get("run_id") or manifest.get("run_id"),
        "kind": kind,
        "model": spec.get("model"),
        "params": dict(spec.get("params", {})),
        "n_items": len(rows),
        "n_recorded": status[DONE] + status[FAILED],
        "n_done": status[DONE],
        "n_failed": status[FAILED],
        "n_pending": status[PENDING],
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
        "workers": dict(sorted(workers.items())),
        "unexpected_items": _unexpected_ids(manifest, items),
    }
    if kind == "fool":
        summary.update(_fool_summary(spec, rows))
    elif kind == "style":
        summary.update(_style_summary(rows))
    elif kind == "saliency":
        summary.update(_saliency_summary(rows))
    elif kind == "classviz":
        summary.update(_classviz_summary(rows))
    return _json_safe(summary)


def _json_safe(value: Any) -> Any:
    """Non-finite floats -> None, recursively, so the files are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# --- collect ------------------------------------------------------------------------------------


def _presigned(store: Store, run_id: str, rows: list[dict[str, Any]], expires: int) -> list[dict[str, Any]]:
    """Rows whose output (and the saliency field naming the same object) are presigned URLs."""
    out = []
    for row in rows:
        row = dict(row)
        if row.get("output"):
            url = store.url(run_key(run_id, "outputs", f"{row['item_id']}.png"), expires=expires)
            if row.get("saliency") == row["output"]:
                row["saliency"] = url
            row["output"] = url
        out.append(row)
    return out


def items_jsonl(rows: list[dict[str, Any]]) -> bytes:
    """One sorted-keys JSON object per line, in the given order."""
    return "".join(json.dumps(_json_safe(r), sort_keys=True) + "\n" for r in rows).encode()


def collect(store: Store, run_id: str, presign: int | None = None) -> dict[str, Any]:
    """Write runs/<run_id>/summary.json, items.jsonl and report.html; return the summary.

    Idempotent: the same records give the same bytes. With ``presign`` (seconds), output URLs and the
    report URL are presigned (``store.url(key, expires=presign)``), which of course differ per call.
    """
    spec = store.get_json(run_key(run_id, "spec.json"))
    manifest = store.get_json(run_key(run_id, "manifest.json"))
    records = read_records(store, run_id)
    if presign is not None:
        records = _presigned(store, run_id, records, presign)
    rows = item_table(manifest, records)
    summary = summarize(spec, manifest, records)
    report_key = run_key(run_id, "report.html")
    summary["report"] = store.url(report_key, expires=presign)
    html = render_report(spec, manifest, summary, rows, store)
    store.put_json(run_key(run_id, "summary.json"), summary)
    store.put(run_key(run_id, "items.jsonl"), items_jsonl(rows), "application/x-ndjson")
    store.put(report_key, html.encode("utf-8"), "text/html; charset=utf-8")
    return summary


# --- terminal -----------------------------------------------------------------------------------


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.{digits}g}"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def format_summary(summary: Mapping[str, Any], max_failures: int = 10) -> str:
    """A few lines for the terminal: counts, the kind's headline numbers, failures, the report."""
    s = summary
    lines = [
        f"run {s['run_id']} ({s['kind']}, {s['model']}): {s['n_items']} items, {s['n_done']} done, "
        f"{s['n_failed']} failed, {s['n_pending']} pending"
    ]
    if s["kind"] == "fool":
        towards = ", ".join(f"{t['class_id']} {t['name']}" for t in s["targets"]) or "any other class"
        lines.append(f"fooled {s['n_fooled']}/{s['n_done']} ({_pct(s['fooling_rate'])}) towards {towards}")
        it = s["iterations"]
        lines.append(
            f"iterations to fool: median {_num(it['median'])}, p90 {_num(it['p90'])}, max {_num(it['max'])}"
        )
        lines.append(
            f"perturbation (fooled): L2 median {_num(s['l2']['median'])} max {_num(s['l2']['max'])}, "
            f"Linf median {_num(s['linf']['median'])} max {_num(s['linf']['max'])}"
        )
    elif s["kind"] == "style":
        means = s["mean_losses"]
        lines.append("mean final losses: " + ", ".join(f"{k} {_num(means[k], 5)}" for k in LOSS_FIELDS))
    elif s["kind"] == "saliency":
        lines.append(f"top-1 correct {s['n_correct']}/{s['n_labelled']} labelled ({_pct(s['accuracy'])})")
    elif s["kind"] == "classviz":
        lines.append(f"top-1 is the requested class: {s['n_hit']}/{s['n_done']} ({_pct(s['hit_rate'])})")
    failures = s["failures"]
    if failures:
        lines.append(f"failures ({len(failures)}):")
        lines.extend(
            f"  {f['item_id']} {f.get('original') or f['source']}: {f['error']}"
            for f in failures[:max_failures]
        )
        if len(failures) > max_failures:
            lines.append(f"  ... and {len(failures) - max_failures} more (see items.jsonl)")
    if s["unexpected_items"]:
        lines.append(
            f"records for items not in the manifest (ignored): {', '.join(s['unexpected_items'][:10])}"
        )
    if s.get("report"):
        lines.append(f"report: {s['report']}")
    return "\n".join(lines)
