"""``verify``'s summary and report: integrity (hashes, missing and unreadable outputs), the claims of
the run's model, and the transfer table (success per model with 95 % Wilson intervals, overall and per
class). Pure functions of the verify run's rows; ``ascent.shared.jobs.verify`` wires them in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ascent.shared import html
from ascent.shared.catalog import ClassCatalog
from ascent.shared.records import DONE, FAILED
from ascent.shared.stats import rate, wilson_interval


def proportion(k: int, n: int) -> dict[str, Any]:
    """``{"k", "n", "rate", "low", "high"}``: k of n with its 95 % Wilson interval (None when n = 0)."""
    interval = wilson_interval(k, n)
    low, high = interval if interval is not None else (None, None)
    return {"k": k, "n": n, "rate": rate(k, n), "low": low, "high": high}


def intact(row: Mapping[str, Any]) -> bool:
    """A verified output that counts in the transfer table: read back, decodable, hash not contradicted."""
    return row.get("status") == DONE and row.get("readable") is True and row.get("sha256_ok") is not False


def transfer(names: Sequence[str], rows: Sequence[Mapping[str, Any]], classes: ClassCatalog) -> list[dict[str, Any]]:
    """Per model (in ``names`` order): success over the intact rows, overall and per class (the target's
    class, untargeted the true class's; rows without either are only in the overall rate)."""
    table = []
    for k, name in enumerate(names):
        judged = [(r, r["success"][k]) for r in rows if intact(r) and r["success"][k] is not None]
        groups: dict[int, list[bool]] = {}
        for r, ok in judged:
            cls = r.get("target") if r.get("target") is not None else r.get("label")
            if isinstance(cls, int):
                groups.setdefault(cls, []).append(ok)
        per_class = [
            {"class_id": c, "name": classes.name(c), **proportion(sum(oks), len(oks))}
            for c, oks in sorted(groups.items())
        ]
        table.append({"model": name, **proportion(sum(ok for _, ok in judged), len(judged)), "per_class": per_class})
    return table


def verification(
    source_run: str, names: Sequence[str], rows: Sequence[Mapping[str, Any]], classes: ClassCatalog
) -> dict[str, Any]:
    """What verify.json holds: integrity, claims and the transfer table of the source run."""
    done = [r for r in rows if r.get("status") == DONE]
    return {
        "source_run": source_run,
        "n_outputs": len(rows),
        "n_checked": len(done),
        "n_failed": sum(r.get("status") == FAILED for r in rows),
        "n_hash_ok": sum(r.get("sha256_ok") is True for r in done),
        "n_no_hash": sum(r.get("sha256_ok") is None and not r.get("missing") for r in done),
        "tampered": sorted(r["item_id"] for r in done if r.get("sha256_ok") is False),
        "missing": sorted(r["item_id"] for r in done if r.get("missing")),
        "unreadable": sorted(r["item_id"] for r in done if not r.get("readable") and not r.get("missing")),
        "n_claims_hold": sum(r.get("claim_holds") is True for r in done),
        "claims_broken": sorted(r["item_id"] for r in done if r.get("claim_holds") is False),
        "transfer": transfer(names, done, classes),
    }


def _ids(ids: Sequence[str], limit: int = 20) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def summary_lines(v: Mapping[str, Any]) -> list[str]:
    lines = [
        f"verified run {v['source_run']}: {v['n_hash_ok']}/{v['n_checked']} outputs match their sha256, "
        f"{v['n_claims_hold']}/{v['n_checked']} claimed predictions hold"
    ]
    for what in ("tampered", "missing", "unreadable", "claims_broken"):
        if v[what]:
            lines.append(f"{what.replace('_', ' ')} ({len(v[what])}): {_ids(v[what])}")
    for t in v["transfer"]:
        lines.append(f"success on {t['model']}: {_rate(t)}")
    return lines


def _rate(p: Mapping[str, Any]) -> str:
    if p["rate"] is None:
        return "- (0 outputs)"
    return f"{html.pct(p['rate'])} ({p['k']}/{p['n']}, 95% CI {html.pct(p['low'])}–{html.pct(p['high'])})"


def headline(v: Mapping[str, Any]) -> list[html.Card]:
    bad = len(v["tampered"]) + len(v["missing"]) + len(v["unreadable"])
    return [
        html.Card(f"{v['n_hash_ok']}/{v['n_checked']}", "outputs intact (sha256)", big=True),
        html.Card(str(bad), "tampered, missing or unreadable"),
        html.Card(f"{v['n_claims_hold']}/{v['n_checked']}", "claimed predictions hold"),
    ]


def section(v: Mapping[str, Any], classes: ClassCatalog) -> str:
    """Integrity lists and the transfer table (per model, then per class)."""
    problems = (
        "".join(
            f"<p><b>{html.esc(what.replace('_', ' '))} ({len(v[what])})</b>: {html.esc(_ids(v[what], 200))}</p>"
            for what in ("tampered", "missing", "unreadable", "claims_broken")
            if v[what]
        )
        or "<p class=muted>Every output matches its recorded sha256 and its claimed prediction.</p>"
    )
    body = "".join(
        f"<tr><td>{html.esc(t['model'])}</td><td class=n>{t['k']}/{t['n']}</td>"
        f"<td class=n>{html.esc(_rate(t))}</td></tr>"
        for t in v["transfer"]
    )
    per_class = "".join(
        f"<tr><td>{html.esc(t['model'])}</td><td>{html.esc(c['class_id'])} {html.esc(c['name'] or '')}</td>"
        f"<td class=n>{c['k']}/{c['n']}</td><td class=n>{html.esc(_rate(c))}</td></tr>"
        for t in v["transfer"]
        for c in t["per_class"]
    )
    return (
        f"<h2>Verification of run {html.esc(v['source_run'])}</h2>{problems}"
        "<h2>Transfer</h2><p class=muted>Success (targeted: predicts the target; untargeted: not the true "
        "class) of the stored outputs on each model, 95 % Wilson intervals.</p>"
        f'<table class="transfer"><tr><th>model</th><th>success</th><th>rate</th></tr>{body}</table>'
        f"<details><summary>Per class</summary><table><tr><th>model</th><th>class</th><th>success</th>"
        f"<th>rate</th></tr>{per_class}</table></details>"
    )
