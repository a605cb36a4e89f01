"""fool's ``--until-ci W``: the run stops once the 95 % Wilson interval of the success rate (and of
robust accuracy, when items are labelled) is within ±W of the estimate. Items run in a seeded random
order (planned by the producer), so the items run first are a random sample; before each shard a
worker reads the run's finished records and, once precise enough, records the shard's items
``skipped`` instead. Pure functions of rows; ``ascent.shared.jobs.fool`` wires them in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ascent.shared import html
from ascent.shared.records import DONE, SKIPPED
from ascent.shared.stats import rate, wilson_interval

REASON = "precision reached"
MIN_ITEMS = 10  # an interval from fewer items is not trusted to stop a run


def _estimate(k: int, n: int) -> dict[str, Any] | None:
    interval = wilson_interval(k, n)
    if interval is None:
        return None
    p = k / n
    return {
        "k": k,
        "n": n,
        "rate": rate(k, n),
        "low": interval[0],
        "high": interval[1],
        "half": max(p - interval[0], interval[1] - p),
    }


def estimates(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Success over the done rows and robust accuracy (prediction still the label) over the labelled
    ones, each ``{"k", "n", "rate", "low", "high", "half"}`` (None without rows)."""
    done = [r for r in rows if r.get("status") == DONE]
    labelled = [r for r in done if isinstance(r.get("label"), int)]
    return {
        "success": _estimate(sum(r.get("fooled") is True for r in done), len(done)),
        "robust_accuracy": _estimate(sum(r.get("pred_after") == r["label"] for r in labelled), len(labelled)),
    }


def reached(rows: Sequence[Mapping[str, Any]], width: float) -> bool:
    """Every estimate that applies is from at least ``MIN_ITEMS`` items and within ±``width``."""
    found = [e for e in estimates(rows).values() if e is not None]
    return bool(found) and all(e["n"] >= MIN_ITEMS and e["half"] < width for e in found)


def summary(rows: Sequence[Mapping[str, Any]], width: float) -> dict[str, Any]:
    """The ``precision`` entry of summary.json."""
    skipped = sum(r.get("status") == SKIPPED for r in rows)
    return {"until_ci": width, "reached": skipped > 0 or reached(rows, width), "n_skipped": skipped, **estimates(rows)}


def _text(e: Mapping[str, Any] | None) -> str:
    if e is None:
        return "-"
    return f"{html.pct(e['rate'])} (95% CI {html.pct(e['low'])}–{html.pct(e['high'])}, ±{100 * e['half']:.1f} points)"


def lines(p: Mapping[str, Any]) -> list[str]:
    s = p["success"]
    used = 0 if s is None else s["n"]
    state = (
        f"precision ±{p['until_ci']:g} reached after {used} items, {p['n_skipped']} skipped (precision reached)"
        if p["reached"]
        else f"precision ±{p['until_ci']:g} not reached with all {used} items"
    )
    out = [state, f"  success rate {_text(s)}"]
    if p["robust_accuracy"] is not None:
        out.append(f"  robust accuracy {_text(p['robust_accuracy'])}")
    return out


def section(p: Mapping[str, Any]) -> str:
    body = "".join(f"<p>{html.esc(line.strip())}</p>" for line in lines(p))
    return f"<h2>Precision (--until-ci {p['until_ci']:g})</h2>{body}"
