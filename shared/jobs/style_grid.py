"""Grids of the ``style`` job: every combination of content × style (``--grid``) × content weight ×
style-weight scale (comma lists) is one item of one batched run, planned here; its contact sheet
(rows contents, columns the other choices) and the per-item strips of intermediate images.

An item's combination is its ``variant`` (``content``: the content's item id, ``style``: the style's
index, ``content_weight``, ``style_weight_scale``; only the swept ones besides ``content``) and its
id ``<content id>[-s<k>][-c<j>][-w<i>]`` (k, j, i: positions in ``--style``, ``--content-weight``,
``--style-weight-scale``); the worker records the values it ran with.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from ascent.shared import html
from ascent.shared.errors import InvalidInput
from ascent.shared.spec import Item

#: Result fields that say which combination an item ran (the sheet's columns come from these).
COMBINATION = ("style_index", "content_weight", "style_weight_scale")


def values(value: float | tuple[float, ...]) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else (value,)


def plan(
    items: list[Item], styles: int | None, content_weights: tuple[float, ...], scales: tuple[float, ...]
) -> list[Item]:
    """Each content once per combination, content-major. ``styles``: the style count with ``--grid``
    (None: styles are blended); a weight tuple of one value is not a sweep."""
    dims: list[tuple[str, str, Sequence[Any]]] = []
    if styles is not None:
        dims.append(("style", "s", range(styles)))
    if len(content_weights) > 1:
        dims.append(("content_weight", "c", content_weights))
    if len(scales) > 1:
        dims.append(("style_weight_scale", "w", scales))
    if not dims:
        return items
    planned = []
    for item in items:
        for combo in itertools.product(*(list(enumerate(v)) for _, _, v in dims)):
            suffix = "".join(f"-{letter}{k}" for (_, letter, _), (k, _) in zip(dims, combo, strict=True))
            variant = {"content": item.item_id, **{name: v for (name, _, _), (_, v) in zip(dims, combo, strict=True)}}
            planned.append(dataclasses.replace(item, item_id=item.item_id + suffix, variant=variant))
    return planned


def combination(
    item: Item, content_weight: float | tuple[float, ...], scale: float | tuple[float, ...]
) -> dict[str, Any]:
    """What ``item`` runs with: its style index (None: the blend), content weight, style-weight scale."""
    variant = item.variant
    chosen = {
        "style_index": variant.get("style"),
        "content_weight": variant.get("content_weight", values(content_weight)[0]),
        "style_weight_scale": variant.get("style_weight_scale", values(scale)[0]),
    }
    for name, value in chosen.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise InvalidInput(f"item {item.item_id}: variant {name} = {value!r} is not a non-negative number")
    return chosen


def _column(row: Mapping[str, Any], swept: Sequence[str]) -> str:
    parts = []
    for name in swept:
        value = row.get(name)
        parts.append(f"style {value}" if name == "style_index" else f"{name.replace('_', ' ')} {html.num(value, 4)}")
    return " · ".join(parts)


def sheet(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The contact sheet of the done rows: ``rows`` (content ids), ``names`` (their labels with the
    file name), ``columns`` (labels of the swept choices) and ``cells`` (item id or None, rows ×
    columns), ``styles`` (each column's style index, None when styles are not swept); None when
    nothing was swept."""
    swept = [name for name in COMBINATION if len({repr(r.get(name)) for r in rows}) > 1]
    if not swept and not any(r.get("style_index") is not None for r in rows):
        return None
    swept = swept or ["style_index"]
    contents = list(dict.fromkeys(str(r.get("content") or r["item_id"]) for r in rows))
    columns = list(dict.fromkeys(_column(r, swept) for r in rows))
    cells: list[list[str | None]] = [[None] * len(columns) for _ in contents]
    for r in rows:
        cells[contents.index(str(r.get("content") or r["item_id"]))][columns.index(_column(r, swept))] = r["item_id"]
    names = {str(r.get("content") or r["item_id"]): r.get("content_name") for r in rows}
    labels = [f"{c} {names[c]}" if names.get(c) else c for c in contents]
    styles = {_column(r, swept): r.get("style_index") for r in rows}
    column_styles = [styles[c] if "style_index" in swept else None for c in columns]
    return {"rows": contents, "names": labels, "columns": columns, "styles": column_styles, "cells": cells}


def sheet_html(table: Mapping[str, Any], media: Any) -> str:
    """The contact sheet as an HTML table of result thumbnails (rows contents, columns choices); a
    column of one style shows that style's image (the ``style-<k>`` rule of ``Style.grid_context``)."""
    styles = table.get("styles") or [None] * len(table["columns"])
    head = "".join(
        f'<th><div class="bg style-{k}"></div>{html.esc(c)}</th>'
        if isinstance(k, int) and not isinstance(k, bool)
        else f"<th>{html.esc(c)}</th>"
        for c, k in zip(table["columns"], styles, strict=True)
    )
    body = []
    names = table.get("names") or table["rows"]
    for content, cells in zip(names, table["cells"], strict=True):
        tds = "".join(
            f'<td class="imgs">{html.figure(media.output(i), i) if i else html.figure(None, "-", "not done")}</td>'
            for i in cells
        )
        body.append(f"<tr><th>{html.esc(content)}</th>{tds}</tr>")
    n, m = len(table["rows"]), len(table["columns"])
    return (
        f'<h2>Contact sheet ({n} × {m})</h2><table class="sheet"><tr><th>content</th>{head}</tr>{"".join(body)}</table>'
    )


def strip(item_id: str, steps: Sequence[int], media: Any) -> str:
    """The intermediate images of one item, in order, captioned with their iteration."""
    figures = [html.figure(media.item_image(item_id, f"step-{t:06d}"), f"iter {t}") for t in steps]
    return f'<div class="imgs strip">{"".join(figures)}</div>'


def describe(row: Mapping[str, Any]) -> str:
    """An item's combination in words: "style 1 · content weight 0.05 · style weight scale 2"."""
    return _column(row, [name for name in COMBINATION if row.get(name) is not None])
