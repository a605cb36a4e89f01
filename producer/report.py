"""One self-contained HTML page per run: headline numbers, charts, tables and an image grid.

Nothing is loaded from elsewhere: CSS is inline, charts are inline SVG, images are base64 PNG
thumbnails read from the store. Every string that comes from a record is escaped (a source may be
any URI, including one with markup in it). Deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from shared.catalog import NUM_CLASSES, class_names
from shared.errors import InvalidInput, NotFoundInStore
from shared.store import Store, run_key

THUMB_PX = 128
MAX_GRID = 200
TILE_THREADS = 4
LOSS_FIELDS = ("content_loss", "style_loss", "tv_loss", "loss")

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


def esc(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _class(class_id: Any) -> str:
    """'6 stingray' for a class id, '-' for None, the escaped value otherwise."""
    if class_id is None:
        return "-"
    if isinstance(class_id, int) and not isinstance(class_id, bool) and 0 <= class_id < NUM_CLASSES:
        return esc(f"{class_id} {class_names()[class_id]}")
    return esc(class_id)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or isinstance(value, bool):
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return esc(value)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _plural(n: Any, word: str) -> str:
    return f"{_num(n)} {word}" if n == 1 else f"{_num(n)} {word}s"


def _source(item: Mapping[str, Any], limit: int = 80) -> str:
    """The item's source, shortened in the middle when long, escaped; the full text in a tooltip."""
    source = str(item.get("original") or item.get("source") or "")  # the input as the user named it
    short = source if len(source) <= limit else source[: limit // 2 - 1] + "…" + source[-(limit // 2) :]
    return f'<span class="muted" title="{esc(source)}">{esc(short)}</span>'


# --- images -------------------------------------------------------------------------------------


def _read(store: Store, run_id: str, *parts: str) -> bytes | None:
    """The object's bytes, or None when it is absent or its key would be unsafe."""
    try:
        return store.get(run_key(run_id, *parts))
    except (NotFoundInStore, InvalidInput):
        return None


def _open(data: bytes) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return image


def thumbnail(data: bytes | None, size: int = THUMB_PX) -> tuple[str, int, int] | None:
    """(PNG data URI, width, height) of a thumbnail at most ``size`` px a side; None if unreadable."""
    image = _open(data) if data else None
    if image is None:
        return None
    image = image.convert("L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return (
        "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
        image.width,
        image.height,
    )


def perturbation_png(original: bytes, adversarial: bytes) -> tuple[bytes, int] | None:
    """|adversarial - original| per channel, scaled so its maximum maps to 255, as PNG bytes, with the
    maximum in 8-bit steps (0 when identical). None if either is unreadable or their sizes differ."""
    a, b = _open(original), _open(adversarial)
    if a is None or b is None or a.size != b.size:
        return None
    diff = np.abs(np.asarray(b.convert("RGB"), dtype=np.int16) - np.asarray(a.convert("RGB"), dtype=np.int16))
    peak = int(diff.max())
    scaled = np.rint(diff * (255.0 / peak)).astype(np.uint8) if peak else diff.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(scaled, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), peak


def _img(data: bytes | None, label: str, missing: str = "no image") -> str:
    thumb = thumbnail(data)
    if thumb is None:
        reason = missing if data is None else "unreadable image"
        return f'<figure><div class="ph">{esc(reason)}</div>{esc(label)}</figure>'
    uri, w, h = thumb
    # Small images (tests, tiny class visualisations) are drawn at the tile size, not at their own.
    scale = THUMB_PX / max(w, h)
    w, h = round(w * scale), round(h * scale)
    return f'<figure><img src="{uri}" width="{w}" height="{h}" alt="{esc(label)}">{esc(label)}</figure>'


def _link(url: Any, text: str) -> str:
    """A link for URLs a browser can open; other URIs (s3://, memory://) as plain text."""
    if isinstance(url, str) and url.startswith(("https://", "http://", "file://")):
        return f'<a href="{esc(url)}">{esc(text)}</a>'
    return ""


# --- charts and tables --------------------------------------------------------------------------


def histogram_svg(bins: list[int], counts: list[int], width: int = 640, height: int = 220) -> str:
    """An inline SVG bar chart of a histogram with integer-width bins (``bins`` are edges)."""
    if not counts:
        return '<p class="muted">No fooled images, so no iteration histogram.</p>'
    left, right, top, bottom = 40, 10, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts) or 1
    bar_w = plot_w / len(counts)
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="histogram of iterations to fool">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#8a94a6"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#8a94a6"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">iterations to fool</text>',
    ]
    label_every = max(1, len(counts) // 10)
    for i, count in enumerate(counts):
        lo, hi = bins[i], bins[i + 1] - 1
        bar_h = plot_h * count / peak
        x = left + i * bar_w
        span = f"{lo}" if lo == hi else f"{lo}–{hi}"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - bar_h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
            f'height="{bar_h:.1f}" fill="#3a6ea5">'
            f"<title>{span} iterations: {_plural(count, 'image')}</title></rect>"
        )
        if count:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h - bar_h - 3:.1f}" '
                f'text-anchor="middle">{count}</text>'
            )
        if i % label_every == 0:
            parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{lo}</text>')
    parts.append(
        f'<text x="{left + plot_w:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{bins[-1]}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _breakdown_table(title: str, rows: Mapping[str, Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_class(int(cid))}</td><td class=n>{r['n']}</td><td class=n>{r['n_fooled']}</td>"
        f"<td class=n>{_pct(r['fooling_rate'])}</td><td class=n>{_num(r['median_iterations'])}</td>"
        f"<td class=n>{r['n_failed']}</td></tr>"
        for cid, r in sorted(rows.items(), key=lambda kv: int(kv[0]))
    )
    return (
        f"<h2>{esc(title)}</h2><table><tr><th>class</th><th>images</th><th>fooled</th><th>rate</th>"
        f"<th>median iterations</th><th>failed</th></tr>{body}</table>"
    )


def _failures_table(failures: list[Mapping[str, Any]]) -> str:
    if not failures:
        return "<h2>Failures</h2><p class=muted>None.</p>"
    body = "".join(
        f"<tr><td>{esc(f['item_id'])}</td><td class=src>{esc(f.get('original') or f['source'])}</td>"
        f"<td class=err>{esc(f['error'])}</td></tr>"
        for f in failures
    )
    return (
        f"<h2>Failures ({len(failures)})</h2><table><tr><th>item</th><th>source</th><th>error</th></tr>"
        f"{body}</table>"
    )


def _card(value: str, key: str, big: bool = False) -> str:
    return (
        f'<div class="card{" big" if big else ""}"><div class=v>{value}</div><div class=k>{key}</div></div>'
    )


def _headline(summary: Mapping[str, Any]) -> str:
    s = summary
    counts = [
        _card(str(s["n_items"]), "items"),
        _card(str(s["n_done"]), "done"),
        _card(str(s["n_failed"]), "failed"),
        _card(str(s["n_pending"]), "pending"),
    ]
    kind = s["kind"]
    if kind == "fool":
        towards = ", ".join(f"{t['class_id']} {t['name']}" for t in s["targets"]) or "any other class"
        it, l2, linf = s["iterations"], s["l2"], s["linf"]
        cards = [
            _card(
                _pct(s["fooling_rate"]), f"fooled {s['n_fooled']} of {s['n_done']} → {esc(towards)}", big=True
            ),
            *counts,
            _card(
                f"{_num(it['median'])} / {_num(it['p90'])} / {_num(it['max'])}",
                "iterations median / p90 / max",
            ),
            _card(f"{_num(l2['median'])} / {_num(l2['max'])}", "L2 median / max (fooled)"),
            _card(f"{_num(linf['median'])} / {_num(linf['max'])}", "L∞ median / max (fooled)"),
        ]
    elif kind == "style":
        means = s["mean_losses"]
        cards = [*counts, *(_card(_num(means[k], 5), f"mean {k.replace('_', ' ')}") for k in LOSS_FIELDS)]
    elif kind == "saliency":
        cards = [
            _card(
                _pct(s["accuracy"]), f"top-1 correct {s['n_correct']} of {s['n_labelled']} labelled", big=True
            ),
            *counts,
        ]
    elif kind == "classviz":
        cards = [
            _card(
                _pct(s["hit_rate"]), f"top-1 is the requested class: {s['n_hit']} of {s['n_done']}", big=True
            ),
            *counts,
        ]
    else:
        cards = counts
    return f'<div class="cards">{"".join(cards)}</div>'


def _params_table(spec: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    rows = [
        ("model", spec.get("model")),
        ("weights", spec.get("weights")),
        ("size", spec.get("size")),
        ("shards", len(manifest.get("shards", []))),
    ]
    rows += [
        (f"params.{k}", json.dumps(v, sort_keys=True)) for k, v in sorted(spec.get("params", {}).items())
    ]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc('-' if v is None else v)}</td></tr>" for k, v in rows)
    return f"<details><summary>Job parameters</summary><table>{body}</table></details>"


# --- the image grid -----------------------------------------------------------------------------


def _fool_tile(store: Store, run_id: str, item: Mapping[str, Any]) -> str:
    item_id = item["item_id"]
    original = _read(store, run_id, "inputs", f"{item_id}.png")
    adversarial = _read(store, run_id, "outputs", f"{item_id}.png")
    diff = perturbation_png(original, adversarial) if original and adversarial else None
    if diff is None:
        perturbation = _img(None, "perturbation", "needs both images")
    else:
        png, peak = diff
        label = f"|Δ| ×{255 / peak:.0f} (max {peak}/255)" if peak else "|Δ| = 0"
        perturbation = _img(png, label)
    fooled = item.get("fooled") is True
    mark = '<span class="ok">fooled ✓</span>' if fooled else '<span class="no">not fooled ✗</span>'
    return (
        f'<div class="tile"><div class="imgs">{_img(original, "original")}{_img(adversarial, "adversarial")}'
        f"{perturbation}</div><div class=cap><b>{esc(item_id)}</b> · true {_class(item.get('label'))}<br>"
        f"pred {_class(item.get('pred_before'))} → {_class(item.get('pred_after'))}<br>"
        f"{mark} · {_plural(item.get('iterations'), 'iteration')} · L2 {_num(item.get('l2'))} · "
        f"L∞ {_num(item.get('linf'))}<br>{_source(item)} {_link(item.get('output'), 'full size')}</div></div>"
    )


def _saliency_tile(store: Store, run_id: str, item: Mapping[str, Any]) -> str:
    item_id = item["item_id"]
    original = _read(store, run_id, "inputs", f"{item_id}.png")
    # shared/store.py's layout names the map outputs/<item_id>.saliency.png; the worker writes .png.
    heat = _read(store, run_id, "outputs", f"{item_id}.png") or _read(
        store, run_id, "outputs", f"{item_id}.saliency.png"
    )
    return (
        f'<div class="tile"><div class="imgs">{_img(original, "original")}{_img(heat, "saliency")}</div>'
        f"<div class=cap><b>{esc(item_id)}</b> · true {_class(item.get('label'))}<br>"
        f"pred {_class(item.get('pred'))} · score {_num(item.get('score'))}<br>"
        f"{_source(item)} {_link(item.get('output'), 'full size')}</div></div>"
    )


def _classviz_tile(store: Store, run_id: str, item: Mapping[str, Any]) -> str:
    item_id = item["item_id"]
    image = _read(store, run_id, "outputs", f"{item_id}.png")
    hit = item.get("pred") is not None and item.get("pred") == item.get("class_id")
    mark = '<span class="ok">top-1 ✓</span>' if hit else '<span class="no">top-1 ✗</span>'
    return (
        f'<div class="tile"><div class="imgs">{_img(image, "generated")}</div>'
        f"<div class=cap><b>{_class(item.get('class_id'))}</b><br>score {_num(item.get('score'))} · "
        f"pred {_class(item.get('pred'))} {mark}<br><span class=muted>{esc(item_id)}</span> "
        f"{_link(item.get('output'), 'full size')}</div></div>"
    )


def _style_tile(store: Store, run_id: str, item: Mapping[str, Any], style_cells: str) -> str:
    item_id = item["item_id"]
    content = _read(store, run_id, "inputs", f"{item_id}.png")
    result = _read(store, run_id, "outputs", f"{item_id}.png")
    losses = " · ".join(f"{k.replace('_', ' ')} {_num(item.get(k), 5)}" for k in LOSS_FIELDS)
    return (
        f'<div class="tile"><div class="imgs">{_img(content, "content")}{style_cells}'
        f"{_img(result, 'result')}</div>"
        f"<div class=cap><b>{esc(item_id)}</b><br>{losses}<br>{_source(item)} "
        f"{_link(item.get('output'), 'full size')}</div></div>"
    )


def _style_images(store: Store, run_id: str) -> tuple[str, str]:
    """(CSS rules, figure cells) for the run's style images, embedded once and reused by every tile."""
    rules, cells = [], []
    for k, key in enumerate(store.list(run_key(run_id, "inputs") + "/style-")):
        thumb = thumbnail(store.get(key))
        if thumb is None:
            cells.append(_img(b"", f"style {k}", "unreadable image"))
            continue
        uri, w, h = thumb
        rules.append(f".style-{k}{{background-image:url({uri});width:{w}px;height:{h}px}}")
        cells.append(f'<figure><div class="bg style-{k}"></div>style {k}</figure>')
    if not cells:
        cells.append(_img(None, "style"))
    return "".join(rules), "".join(cells)


def _grid(
    spec: Mapping[str, Any], items: Sequence[Mapping[str, Any]], store: Store, run_id: str, max_grid: int
) -> tuple[str, str]:
    """(extra CSS, HTML) of the image grid over the done items, capped at ``max_grid``."""
    done = [i for i in items if i.get("status") == "done"]
    shown = done[:max_grid]
    kind = spec.get("kind")
    css = ""
    # Tiles are independent store reads and PNG decodes/encodes (which release the GIL): a few threads.
    with ThreadPoolExecutor(max_workers=TILE_THREADS) as pool:
        if kind == "style":
            css, style_cells = _style_images(store, run_id)
            tiles = list(pool.map(lambda i: _style_tile(store, run_id, i, style_cells), shown))
        elif kind == "fool":
            tiles = list(pool.map(lambda i: _fool_tile(store, run_id, i), shown))
        elif kind == "saliency":
            tiles = list(pool.map(lambda i: _saliency_tile(store, run_id, i), shown))
        elif kind == "classviz":
            tiles = list(pool.map(lambda i: _classviz_tile(store, run_id, i), shown))
        else:
            tiles = []
    if not done:
        note = "No finished images yet."
    elif len(done) > len(shown):
        note = (
            f"Showing the first {len(shown)} of {len(done)} finished images (every item is in items.jsonl)."
        )
    else:
        note = f"All {len(done)} finished images."
    return css, f'<h2>Images</h2><p class="muted">{note}</p><div class="grid">{"".join(tiles)}</div>'


# --- the page -----------------------------------------------------------------------------------


def render_report(
    spec: Mapping[str, Any],
    manifest: Mapping[str, Any],
    summary: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    store: Store,
    max_grid: int = MAX_GRID,
) -> str:
    """The report page for one run. ``items`` are the rows of items.jsonl (sorted by item_id); images
    come from ``store``: inputs/<item_id>.png (what the model saw), outputs/<item_id>.png, and for
    style runs inputs/style-<k>.png. Missing images show as grey placeholders."""
    run_id = str(summary["run_id"])
    kind = summary["kind"]
    sections = [_headline(summary)]
    if kind == "fool":
        hist = summary["iterations"]["histogram"]
        sections.append("<h2>Iterations to fool</h2>" + histogram_svg(hist["bins"], hist["counts"]))
        sections.append(_breakdown_table("Per target class", summary["per_target"]))
        sections.append(_breakdown_table("Per true class", summary["per_true_class"]))
    sections.append(_failures_table(summary["failures"]))
    grid_css, grid = _grid(spec, items, store, run_id, max_grid)
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
