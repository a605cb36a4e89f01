"""fool's targetability matrix (``--target all`` or a list of classes): images × target classes, each
cell the iterations the image took to be classified as that class (None: never). Pure functions of
the run's rows, wired into the job by ``ascent.shared.jobs.fool``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ascent.shared import html
from ascent.shared.catalog import ClassCatalog
from ascent.shared.records import CANCELLED, DONE, FAILED, SKIPPED

CLEAN = "clean"  # the cell of an image's own clean prediction (not counted as a success)
_TARGET_PART = re.compile(r"-t\d+(?=$|-)")


def image_of(item_id: str) -> str:
    """The image an item of a matrix belongs to: its id without the ``-t<class>`` part."""
    return _TARGET_PART.sub("", item_id, count=1)


def matrix(rows: Sequence[Mapping[str, Any]], targets: Sequence[int]) -> dict[str, Any]:
    """``{"classes": [...], "rows": [{"image", "cells": [iterations | None per class], "n_fooled"}],
    "per_class": [{"class_id", "n", "n_fooled"}]}``; a cell is the iterations to success of a done,
    fooled item, None for one that was not fooled, "clean" where the class already was the clean
    prediction, its status for a failed, cancelled or skipped one ("pending" without a record). ``n``
    counts the cells that were attacked."""
    index = {c: k for k, c in enumerate(targets)}
    table: dict[str, list[Any]] = {}
    for row in rows:
        target = row.get("target")
        if target not in index or row.get("status") not in (DONE, FAILED, CANCELLED, SKIPPED):
            continue
        cells = table.setdefault(image_of(str(row["item_id"])), ["pending"] * len(targets))
        if row["status"] != DONE:
            cells[index[target]] = row["status"]
        elif row.get("pred_before") == target:  # nothing to attack: the model already predicted it
            cells[index[target]] = CLEAN
        else:
            fooled = row.get("fooled") is True and isinstance(row.get("iterations"), int)
            cells[index[target]] = row["iterations"] if fooled else None
    out_rows: list[dict[str, Any]] = [
        {"image": image, "cells": cells, "n_fooled": sum(isinstance(c, int) for c in cells)}
        for image, cells in sorted(table.items())
    ]
    per_class = [
        {
            "class_id": c,
            "n": sum(r["cells"][k] is None or isinstance(r["cells"][k], int) for r in out_rows),
            "n_fooled": sum(isinstance(r["cells"][k], int) for r in out_rows),
        }
        for k, c in enumerate(targets)
    ]
    return {"classes": list(targets), "rows": out_rows, "per_class": per_class}


_TITLES = {None: "not fooled", CLEAN: "already the clean prediction"}


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return f'<td class="n ok">{value}</td>'
    text = {None: "–", CLEAN: "="}.get(value, value)
    return f'<td class="n no" title="{html.esc(_TITLES.get(value, value))}">{html.esc(text)}</td>'


def section(table: Mapping[str, Any], classes: ClassCatalog) -> str:
    """The report's images × classes table (iterations to success; – never)."""
    head = "".join(f"<th>{html.esc(c)} {html.esc(classes.name(c) or '')}</th>" for c in table["classes"])
    body = "".join(
        f"<tr><th>{html.esc(r['image'])}</th>{''.join(_cell(c) for c in r['cells'])}"
        f"<td class=n>{r['n_fooled']}/{sum(c is None or isinstance(c, int) for c in r['cells'])}</td></tr>"
        for r in table["rows"]
    )
    totals = "".join(f"<td class=n>{p['n_fooled']}/{p['n']}</td>" for p in table["per_class"])
    return (
        f"<h2>Targetability: {len(table['rows'])} images × {len(table['classes'])} classes</h2>"
        "<p class=muted>Iterations until the model predicted the target class (– never; = the image's clean "
        "prediction, not attacked).</p>"
        f'<table class="targetability"><tr><th>image</th>{head}<th>fooled</th></tr>{body}'
        f"<tr><th>fooled</th>{totals}<td></td></tr></table>"
    )
