"""``ascent export RUN_ID --format imagefolder|npz|webdataset --to DIR|s3://...``: a finished run's
outputs as a dataset to train or evaluate on. The images are the run's stored outputs, byte for byte;
what each row carries is the job's (``Job.export_fields``: fool's target, predictions, fooled, ...).

    imagefolder  <to>/<class>/<original file stem>.png, the class being the true label's name (else the
                 target's); without either the input's relative path is kept. Names are made safe for
                 any file system and store ([A-Za-z0-9._-]); a name taken twice gets "-<item id>".
                 labels.csv beside them: path, item_id, source, label, label_name and the job's fields.
    npz          export.npz: X (N×H×W×3 uint8), y (label, -1 unknown) and the job's fields (-1 / NaN
                 where unknown)
    webdataset   export-000000.tar, ...: KEY.png and KEY.json per item (KEY = item id), at most
                 ``shard_items`` items a tar, in the webdataset convention

Only the items the job counts as successes (``Job.exported``: fool's fooled ones) unless ``all_items``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from ascent.producer.collector import item_table, read_records, run_classes
from ascent.shared.codecs import SaveFormat
from ascent.shared.errors import InvalidInput, NotFoundInStore
from ascent.shared.jobs import get_job
from ascent.shared.jobs.base import Job
from ascent.shared.keys import RunKeys
from ascent.shared.spec import JobSpec, Manifest
from ascent.shared.store import Store

FORMATS = ("imagefolder", "npz", "webdataset")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Exported:
    """What an export wrote: how many items, and where."""

    items: int
    files: int
    to: str


def safe_name(text: str) -> str:
    """``text`` with every run of characters outside [A-Za-z0-9._-] as one "_" (never empty, never ".")."""
    name = _UNSAFE.sub("_", text).strip("_.") or "_"
    return name


def _paths(rows: list[dict[str, Any]], classes: Any, ext: str = "png") -> list[str]:
    """The imagefolder path of each row (see the module docstring), unique, in row order."""
    taken: set[str] = set()
    paths = []
    for row in rows:
        original = PurePosixPath(row.get("path") or row["item_id"])
        folder = classes.name(row.get("label")) or classes.name(row.get("target"))
        parts = (
            [safe_name(folder), safe_name(original.stem)]
            if folder is not None
            else [*(safe_name(p) for p in original.parent.parts), safe_name(original.stem)]
        )
        path = "/".join(parts) + f".{ext}"
        if path in taken:
            path = "/".join([*parts[:-1], f"{parts[-1]}-{row['item_id']}"]) + f".{ext}"
        taken.add(path)
        paths.append(path)
    return paths


def _fields(row: Mapping[str, Any], job: Job) -> dict[str, Any]:
    return {name: row.get(name) for name in job.export_fields}


def export(
    store: Store,
    run_id: str,
    fmt: str,
    to: Store,
    *,
    all_items: bool = False,
    shard_items: int = 1000,
    jobs: Mapping[str, Job] | None = None,
) -> Exported:
    """Write the export to the store ``to``; raises InvalidInput for an unknown format or no items."""
    if fmt not in FORMATS:
        raise InvalidInput(f"--format {fmt}: choose {', '.join(FORMATS)}")
    keys = RunKeys(run_id)
    spec = JobSpec.from_dict(store.get_json(keys.spec), jobs)
    job, classes = get_job(spec.kind, jobs), run_classes(spec)
    rows = item_table(Manifest.from_dict(store.get_json(keys.manifest)), read_records(store, run_id))
    rows = [r for r in rows if r["status"] == "done" and (all_items or job.exported(r))]
    if not rows:
        raise InvalidInput(f"run {run_id}: nothing to export (no item succeeded; --all exports every done item)")
    save_as = job.output_format(spec.params)
    images = []
    for row in rows:
        try:
            images.append(store.get(keys.output(row["item_id"], save_as.ext)))
        except NotFoundInStore:
            raise InvalidInput(
                f"run {run_id}: item {row['item_id']} is recorded done but its output is missing"
            ) from None
    if fmt == "imagefolder":
        files = _imagefolder(rows, images, job, classes, to, save_as)
    elif fmt == "npz":
        files = _npz(rows, images, job, to)
    else:
        files = _webdataset(rows, images, job, classes, to, shard_items, save_as)
    return Exported(len(rows), files, to.uri)


def _imagefolder(
    rows: list[dict[str, Any]], images: list[bytes], job: Job, classes: Any, to: Store, fmt: SaveFormat
) -> int:
    paths = _paths(rows, classes, fmt.ext)
    table = io.StringIO()
    columns = ["path", "item_id", "source", "label", "label_name", *job.export_fields]
    writer = csv.DictWriter(table, columns, lineterminator="\n")
    writer.writeheader()
    for row, path, data in zip(rows, paths, images, strict=True):
        to.put(path, data, fmt.media_type)
        source = row.get("original") or row.get("source")
        writer.writerow(
            {
                "path": path,
                "item_id": row["item_id"],
                "source": source,
                "label": row.get("label"),
                "label_name": classes.name(row.get("label")),
                **_fields(row, job),
            }
        )
    to.put("labels.csv", table.getvalue().encode(), "text/csv")
    return len(rows) + 1


def _npz(rows: list[dict[str, Any]], images: list[bytes], job: Job, to: Store) -> int:
    pixels = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in images]
    if len({p.shape for p in pixels}) > 1:
        raise InvalidInput("--format npz: the outputs have different sizes; export them as imagefolder")
    arrays: dict[str, np.ndarray] = {"X": np.stack(pixels).astype(np.uint8)}
    arrays["y"] = np.array([r["label"] if isinstance(r.get("label"), int) else -1 for r in rows], dtype=np.int64)
    for name in job.export_fields:
        values = [r.get(name) for r in rows]
        if all(isinstance(v, bool) for v in values):
            arrays[name] = np.array(values, dtype=bool)
        elif all(isinstance(v, int) or v is None for v in values):
            arrays[name] = np.array([-1 if v is None else v for v in values], dtype=np.int64)
        else:
            arrays[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    arrays["item_id"] = np.array([r["item_id"] for r in rows])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    to.put("export.npz", buffer.getvalue(), "application/octet-stream")
    return 1


def _webdataset(
    rows: list[dict[str, Any]],
    images: list[bytes],
    job: Job,
    classes: Any,
    to: Store,
    shard_items: int,
    fmt: SaveFormat,
) -> int:
    if shard_items < 1:
        raise InvalidInput(f"--shard-items {shard_items}: must be a positive integer")
    shards = 0
    for start in range(0, len(rows), shard_items):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for row, data in zip(rows[start : start + shard_items], images[start : start + shard_items], strict=True):
                meta = {
                    "item_id": row["item_id"],
                    "source": row.get("original") or row.get("source"),
                    "label": row.get("label"),
                    "label_name": classes.name(row.get("label")),
                    **_fields(row, job),
                }
                for suffix, payload in ((fmt.ext, data), ("json", json.dumps(meta, sort_keys=True).encode())):
                    info = tarfile.TarInfo(f"{row['item_id']}.{suffix}")
                    info.size, info.mtime, info.mode = len(payload), 0, 0o644  # deterministic bytes
                    tar.addfile(info, io.BytesIO(payload))
        to.put(f"export-{shards:06d}.tar", buffer.getvalue(), "application/x-tar")
        shards += 1
    return shards
