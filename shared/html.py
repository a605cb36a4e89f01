"""Building blocks of the HTML report (torch-free): escaping, numbers, cards, thumbnails, SVG bar
and line charts. The page itself is assembled by ``ascent.producer.report``; each job's section uses these.

Everything is self-contained: images are base64 PNG data URIs, charts inline SVG. Every string that
comes from a record is escaped (a source may be any URI, markup included).
"""

from __future__ import annotations

import base64
import html
import io
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

THUMB_PX = 128


def esc(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    """A number for people: integers as such, others to ``digits`` significant digits, None as '-'."""
    if value is None or isinstance(value, bool):
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return esc(value)


def pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def plural(n: Any, word: str) -> str:
    return f"{num(n)} {word}" if n == 1 else f"{num(n)} {word}s"


@dataclass(frozen=True)
class Card:
    """A headline number: ``value`` over ``label``; ``big`` for the run's one main figure."""

    value: str
    label: str
    big: bool = False

    def html(self) -> str:
        big = " big" if self.big else ""
        return f'<div class="card{big}"><div class=v>{self.value}</div><div class=k>{self.label}</div></div>'


def short_source(source: str, limit: int = 60) -> str:
    """A source for people: a ``file://`` URI as its path with ``..`` resolved (and its ``#row``); when
    longer than ``limit``, its last whole path segments after ``…/`` (never cut inside a name)."""
    text = source
    if text.startswith("file://"):
        parsed = urlsplit(text)
        text = posixpath.normpath(unquote(parsed.path)) + (f"#{parsed.fragment}" if parsed.fragment else "")
    if len(text) <= limit:
        return text
    parts = text.split("/")
    short = parts[-1]
    for part in reversed(parts[:-1]):
        if not part or len(part) + len(short) + 3 > limit:
            break
        short = f"{part}/{short}"
    return f"…/{short}"


def source_span(item: Mapping[str, Any], limit: int = 60) -> str:
    """The item's source as the user named it, shortened (``short_source``), escaped, on one line; the
    full text in a tooltip."""
    source = str(item.get("original") or item.get("source") or "")
    short = esc(short_source(source, limit))
    return f'<span class="muted" style="white-space:nowrap" title="{esc(source)}">{short}</span>'


def link(url: Any, text: str) -> str:
    """A link for URLs a browser can open; other URIs (s3://, memory://) give nothing."""
    if isinstance(url, str) and url.startswith(("https://", "http://", "file://")):
        return f'<a href="{esc(url)}">{esc(text)}</a>'
    return ""


def open_image(data: bytes) -> Image.Image | None:
    """The decoded image, None when the bytes are not a readable image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def thumbnail(data: bytes | None, size: int = THUMB_PX) -> tuple[str, int, int] | None:
    """(PNG data URI, width, height) of a thumbnail at most ``size`` px a side; None if unreadable."""
    image = open_image(data) if data else None
    if image is None:
        return None
    image = image.convert("L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    image.thumbnail((size, size))
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
    return uri, image.width, image.height


def difference_png(original: bytes, adversarial: bytes) -> tuple[bytes, int] | None:
    """|adversarial - original| per channel, scaled so its maximum maps to 255, as PNG bytes, with the
    maximum in 8-bit steps (0 when identical). None if either is unreadable or their sizes differ."""
    a, b = open_image(original), open_image(adversarial)
    if a is None or b is None or a.size != b.size:
        return None
    diff = np.abs(np.asarray(b.convert("RGB"), dtype=np.int16) - np.asarray(a.convert("RGB"), dtype=np.int16))
    peak = int(diff.max())
    scaled = np.rint(diff * (255.0 / peak)).astype(np.uint8) if peak else diff.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(scaled, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), peak


def figure(data: bytes | None, label: str, missing: str = "no image") -> str:
    """A captioned thumbnail, or a grey placeholder saying why there is none."""
    thumb = thumbnail(data)
    if thumb is None:
        reason = missing if data is None else "unreadable image"
        return f'<figure><div class="ph">{esc(reason)}</div>{esc(label)}</figure>'
    uri, w, h = thumb
    # Small images (tests, tiny class visualisations) are drawn at the tile size, not at their own.
    scale = THUMB_PX / max(w, h)
    w, h = round(w * scale), round(h * scale)
    return f'<figure><img src="{uri}" width="{w}" height="{h}" alt="{esc(label)}">{esc(label)}</figure>'


def tile(figures: Sequence[str], caption: str) -> str:
    """One item of the image grid: its figures side by side and a caption under them."""
    return f'<div class="tile"><div class="imgs">{"".join(figures)}</div><div class=cap>{caption}</div></div>'


def mark(ok: bool, yes: str, no: str) -> str:
    return f'<span class="ok">{esc(yes)} ✓</span>' if ok else f'<span class="no">{esc(no)} ✗</span>'


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """A table; cells are HTML already (escape them first); ``numeric`` right-aligns columns."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class=n>{cell}</td>" if i < len(numeric) and numeric[i] else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def histogram_svg(
    bins: list[int], counts: list[int], width: int = 640, height: int = 220, what: str = "iterations to fool"
) -> str:
    """An inline SVG bar chart of a histogram with integer-width bins (``bins`` are edges)."""
    if not counts:
        return '<p class="muted">No fooled images, so no iteration histogram.</p>'
    left, right, top, bottom = 40, 10, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts) or 1
    bar_w = plot_w / len(counts)
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="histogram of {esc(what)}">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#8a94a6"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#8a94a6"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">{esc(what)}</text>',
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
            f"<title>{span} iterations: {plural(count, 'image')}</title></rect>"
        )
        if count:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h - bar_h - 3:.1f}" text-anchor="middle">{count}</text>'
            )
        if i % label_every == 0:
            parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{lo}</text>')
    parts.append(f'<text x="{left + plot_w:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{bins[-1]}</text>')
    parts.append("</svg>")
    return "".join(parts)


SERIES_COLOURS = ("#b4232c", "#3a6ea5", "#1a7f37", "#8a5a00")


def line_chart_svg(
    xs: Sequence[float],
    series: Sequence[tuple[str, Sequence[float | None]]],
    x_labels: Sequence[str] | None = None,
    width: int = 640,
    height: int = 240,
    what: str = "x",
) -> str:
    """An inline SVG line chart of rates in [0, 1] (y axis 0–100 %) over ``xs``, points spaced evenly
    in the order given and labelled ``x_labels``; ``series`` are (name, values), None = no point
    there. A legend names the series; each point has a tooltip."""
    if not xs:
        return '<p class="muted">No points to draw.</p>'
    labels = list(x_labels) if x_labels is not None else [num(x) for x in xs]
    left, right, top, bottom = 44, 130, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(xs) - 1)

    def px(i: int) -> float:
        return left + (i * step if len(xs) > 1 else plot_w / 2)

    def py(v: float) -> float:
        return top + plot_h * (1 - min(1.0, max(0.0, v)))

    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(", ".join(name for name, _ in series))} vs {esc(what)}">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#8a94a6"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#8a94a6"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">100%</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0%</text>',
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">{esc(what)}</text>',
    ]
    for i, label in enumerate(labels):
        parts.append(f'<text x="{px(i):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{esc(label)}</text>')
    for k, (name, values) in enumerate(series):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        points = [(px(i), py(v), v, labels[i]) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y, v, label in points:
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                f"<title>{esc(name)} at {esc(label)}: {pct(v)}</title></circle>"
            )
        ly = top + 10 + 18 * k
        parts.append(
            f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 30}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"/><text x="{left + plot_w + 34}" y="{ly}">{esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
