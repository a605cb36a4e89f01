"""One self-contained HTML page per run: the run's parameters, headline cards, the job's sections
(``Job.headline``, ``Job.report_sections``), failures and an image grid of the job's tiles.

Nothing is loaded from elsewhere: CSS is inline, charts are inline SVG, images are base64 PNG
thumbnails read from the store (``ascent.shared.html``). Every string that comes from a record is
escaped. Deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ascent.shared.catalog import ClassCatalog, classes_of
from ascent.shared.errors import InvalidInput, NotFoundInStore
from ascent.shared.html import Card, esc
from ascent.shared.jobs import get_job
from ascent.shared.jobs.base import Job
from ascent.shared.keys import RunKeys
from ascent.shared.spec import JobSpec, Manifest
from ascent.shared.store import Store

MAX_GRID = 200
TILE_THREADS = 4

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
  padding:0 16px;color:#1d2430;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5a6577;margin-bottom:16px}.muted{color:#6b7585}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:10px 14px;min-width:140px}
.card .v{font-size:22px;font-weight:600}.card .k{color:#5a6577;font-size:12px}
.card.big .v{font-size:44px;color:#b4232c}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.err{color:#b4232c;max-width:640px;word-break:break-word}td.src{max-width:360px;word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.tile{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:8px}
.imgs{display:flex;gap:6px}.imgs figure{margin:0;text-align:center;font-size:11px;color:#5a6577}
.imgs img,.ph,.bg{display:block;image-rendering:auto;border-radius:3px}
.ph{width:128px;height:128px;background:#e4e8ee;color:#6b7585;font-size:11px;display:flex;
  align-items:center;justify-content:center;text-align:center}
.cap{font-size:12px;margin-top:6px;max-width:420px;word-break:break-word}
.ok{color:#1a7f37;font-weight:600}.no{color:#b4232c;font-weight:600}
svg text{font:11px system-ui,sans-serif;fill:#5a6577}
"""


class RunMedia:
    """The run's stored images (``ascent.shared.jobs.base.Media``): None where one is absent."""

    def __init__(self, store: Store, run_id: str, ext: str = "png") -> None:
        self.store = store
        self.keys = RunKeys(run_id)
        self.ext = ext  # of the outputs (``Job.output_format``)

    def _read(self, key: Callable[[], str]) -> bytes | None:
        try:
            return self.store.get(key())
        except (NotFoundInStore, InvalidInput):  # absent, or a key that would be unsafe
            return None

    def input(self, name: str) -> bytes | None:
        return self._read(lambda: self.keys.input(name))

    def output(self, item_id: str) -> bytes | None:
        return self._read(lambda: self.keys.output(item_id, self.ext))

    def item_image(self, item_id: str, name: str) -> bytes | None:
        return self._read(lambda: self.keys.item_image(item_id, name))

    def run_inputs(self, prefix: str) -> list[bytes | None]:
        """Run-level inputs named ``<prefix><k>`` (e.g. ``style-0``, ``style-1``, ...), in the order of k
        (``style-10`` after ``style-9``); names without a number after the prefix come last, by name."""
        keys = self.store.list(self.keys.inputs + prefix)

        def order(key: str) -> tuple[int, str]:
            stem = key.rsplit("/", 1)[-1][len(prefix) :].split(".", 1)[0]
            return (int(stem), "") if stem.isdigit() else (2**63, key)

        return [self._read(lambda: key) for key in sorted(keys, key=order)]  # noqa: B023 (called at once)


def _failures_table(failures: list[Mapping[str, Any]]) -> str:
    if not failures:
        return "<h2>Failures</h2><p class=muted>None.</p>"
    body = "".join(
        f"<tr><td>{esc(f['item_id'])}</td><td class=src>{esc(f.get('original') or f['source'])}</td>"
        f"<td class=err>{esc(f['error'])}</td></tr>"
        for f in failures
    )
    return (
        f"<h2>Failures ({len(failures)})</h2><table><tr><th>item</th><th>source</th><th>error</th></tr>{body}</table>"
    )


def _headline(summary: Mapping[str, Any], job: Job) -> str:
    s = summary
    cards = job.headline(s)
    extra = tuple(k for k in ("n_cancelled", "n_skipped") if s.get(k))
    names = ("n_items", "n_done", "n_failed", "n_pending", *extra)
    counts = [Card(str(s[k]), k[2:]) for k in names]
    ordered = cards[:1] + counts + cards[1:] if cards and cards[0].big else counts + cards
    return f'<div class="cards">{"".join(c.html() for c in ordered)}</div>'


def _params_table(spec: JobSpec, manifest: Manifest) -> str:
    rows: list[tuple[str, Any]] = [
        ("model", spec.model),
        ("weights", spec.weights),
        ("size", spec.size),
        ("shards", len(manifest.shards)),
    ]
    rows += [(f"params.{k}", json.dumps(v, sort_keys=True)) for k, v in sorted(spec.params.to_dict().items())]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc('-' if v is None else v)}</td></tr>" for k, v in rows)
    return f"<details><summary>Job parameters</summary><table>{body}</table></details>"


def _grid(
    job: Job, items: Sequence[Mapping[str, Any]], media: RunMedia, classes: ClassCatalog, max_grid: int
) -> tuple[str, str]:
    """(extra CSS, HTML) of the image grid over the done items, capped at ``max_grid``."""
    done = [i for i in items if i.get("status") == "done"]
    shown = done[:max_grid]
    css, shared = job.grid_context(media)
    # Tiles are independent store reads and PNG decodes/encodes (which release the GIL): a few threads.
    with ThreadPoolExecutor(max_workers=TILE_THREADS) as pool:
        tiles = list(pool.map(lambda row: job.tile(row, media, classes, shared), shown))
    if not done:
        note = "No finished images yet."
    elif len(done) > len(shown):
        note = f"Showing the first {len(shown)} of {len(done)} finished images (every item is in items.jsonl)."
    else:
        note = f"All {len(done)} finished images."
    return css, f'<h2>Images</h2><p class="muted">{note}</p><div class="grid">{"".join(tiles)}</div>'


def render_report(
    spec: JobSpec,
    manifest: Manifest,
    summary: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    store: Store,
    jobs: Mapping[str, Job] | None = None,
    max_grid: int = MAX_GRID,
    classes: ClassCatalog | None = None,
) -> str:
    """The report page for one run. ``items`` are the rows of items.jsonl (sorted by item_id); images
    come from ``store`` (inputs/ and outputs/ of the run). Missing images show as grey placeholders."""
    job = get_job(spec.kind, jobs)
    classes = classes or classes_of(spec.model, spec.num_classes)
    run_id = str(summary["run_id"])
    kind = summary["kind"]
    media = RunMedia(store, run_id, job.output_format(spec.params).ext)
    sections = [_headline(summary, job), *job.report_sections(summary, classes)]
    sections += job.media_sections(summary, media, classes)
    sections.append(_failures_table(summary["failures"]))
    grid_css, grid = _grid(job, items, media, classes, max_grid)
    sections.append(grid)
    if summary.get("unexpected_items"):
        sections.append(
            "<h2>Records for items not in the manifest</h2><p class=muted>"
            + esc(", ".join(summary["unexpected_items"]))
            + "</p>"
        )
    title = f"{run_id} · {kind}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>ascent {esc(title)}</title><style>{CSS}{grid_css}</style></head><body>"
        f"<h1>ascent run {esc(run_id)} — {esc(kind)}</h1>"
        f'<div class="sub">model {esc(summary.get("model"))} · {summary["n_items"]} items · '
        f"summary.json and items.jsonl beside this page hold every number</div>"
        f"{_params_table(spec, manifest)}{''.join(sections)}</body></html>\n"
    )
