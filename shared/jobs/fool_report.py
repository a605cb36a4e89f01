"""The ``fool`` job's summary and report: statistics over its records (success rate with its interval,
clean and robust accuracy, per target / true class / ε, confusions) and the HTML sections and tiles.
Pure functions of records and a class catalog; ``ascent.shared.jobs.fool`` wires them into the job."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ascent.shared import html
from ascent.shared.catalog import FOOL_TARGET_MODES, ClassCatalog
from ascent.shared.jobs.base import Media
from ascent.shared.records import DONE, FAILED, PENDING
from ascent.shared.spec import JobSpec
from ascent.shared.stats import finite, iteration_stats, rate, size_stats, wilson_interval


def eps_text(eps: Any) -> str:
    """ε for people: ``8/255`` when it is a whole number of 8-bit levels, else ``0.5``."""
    if finite(eps) is None:
        return "-"
    levels = eps * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"{eps:g}"


def item_eps(row: Mapping[str, Any]) -> float | None:
    """The ε of a row: its result's, else its planned variant's (a failed item has no result)."""
    variant = row.get("variant")
    planned = variant.get("eps") if isinstance(variant, Mapping) else None
    eps = finite(row.get("eps")) if finite(row.get("eps")) is not None else finite(planned)
    return None if eps is None else float(eps)


def _fooled_iterations(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    return [
        r["iterations"]
        for r in rows
        if r.get("fooled") is True and isinstance(r.get("iterations"), int) and r["iterations"] >= 0
    ]


def _group_stats(group: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, fooling rate and median iterations of some rows (done, failed) of a run."""
    done = [r for r in group if r["status"] == DONE]
    fooled = [r for r in done if r.get("fooled") is True]
    iterations = _fooled_iterations(fooled)
    return {
        "n": len(done),
        "n_failed": sum(r["status"] == FAILED for r in group),
        "n_fooled": len(fooled),
        "fooling_rate": rate(len(fooled), len(done)),
        "median_iterations": statistics.median(iterations) if iterations else None,
    }


def _breakdown(rows: list[dict[str, Any]], key: str, classes: ClassCatalog) -> dict[str, dict[str, Any]]:
    """Fool results grouped by the class id in ``key`` (rows without one are left out)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if classes.name(row.get(key)) is not None:
            groups.setdefault(row[key], []).append(row)
    return {str(c): {"name": classes.name(c), **_group_stats(groups[c])} for c in sorted(groups)}


#: |adversarial − original| magnified, as the report's third picture (``html.difference_png``).
perturbation_png = html.difference_png


def _per_eps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Success rate and robust accuracy per ε, ascending. Robust accuracy: of the done items with a
    true label, the share still classified as that label after the attack (None without labels)."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for row in rows:
        eps = item_eps(row)
        if eps is not None:
            groups.setdefault(eps, []).append(row)
    out = []
    for eps in sorted(groups):
        stats = _group_stats(groups[eps])
        labelled = [r for r in groups[eps] if r["status"] == DONE and isinstance(r.get("label"), int)]
        robust = sum(r.get("pred_after") == r["label"] for r in labelled)
        out.append(
            {
                "eps": eps,
                "eps_text": eps_text(eps),
                "success_rate": stats.pop("fooling_rate"),
                **stats,
                "n_labelled": len(labelled),
                "n_robust": robust,
                "robust_accuracy": rate(robust, len(labelled)),
            }
        )
    return out


def _robust_text(e: Mapping[str, Any]) -> str:
    labelled = f"{e['n_robust']}/{e['n_labelled']} labelled" if e["n_labelled"] else "no labelled items"
    return f"robust accuracy {html.pct(e['robust_accuracy'])} ({labelled})"


def _eps_section(per_eps: Sequence[Mapping[str, Any]]) -> str:
    """The accuracy-vs-ε curve and its table (nothing without a budget)."""
    if not per_eps:
        return ""
    xs = [e["eps"] for e in per_eps]
    curves = [("success rate", "success_rate"), ("robust accuracy", "robust_accuracy")]
    chart = html.line_chart_svg(
        xs,
        [(name, [e[key] for e in per_eps]) for name, key in curves],
        x_labels=[e["eps_text"] for e in per_eps],
        what="ε (pixel units)",
    )
    rows = [
        [
            html.esc(e["eps_text"]),
            str(e["n"]),
            str(e["n_fooled"]),
            html.pct(e["success_rate"]),
            f"{e['n_robust']}/{e['n_labelled']}" if e["n_labelled"] else "-",
            html.pct(e["robust_accuracy"]),
            html.num(e["median_iterations"]),
            str(e["n_failed"]),
        ]
        for e in per_eps
    ]
    headers = ["ε", "items", "fooled", "success rate", "robust / labelled", "robust accuracy", "median iterations"]
    table = html.table([*headers, "failed"], rows, numeric=[False, *[True] * 7])
    return "<h2>Success and robust accuracy vs ε</h2>" + chart + table


def _steps(row: Mapping[str, Any]) -> str:
    """ "12 iterations · " for a fooled image; nothing for one that was not (its count is -1: never)."""
    it = row.get("iterations")
    return f"{html.plural(it, 'iteration')} · " if row.get("fooled") is True and isinstance(it, int) and it >= 0 else ""


def _towards(summary: Mapping[str, Any]) -> str:
    """Where the images were pushed: "towards 6 stingray", "towards 3 random targets", "away from ..."."""
    mode = summary.get("target_mode")
    if mode in FOOL_TARGET_MODES:
        return f"towards {len(summary['targets'])} {mode} targets"
    if mode == "matrix":
        return f"each image towards each of {len(summary['targets'])} classes"
    if mode == "untargeted":
        return "away from the true class" if summary.get("n_labelled") else "away from the clean prediction"
    if not summary["targets"] and isinstance(summary.get("target"), int):  # nothing recorded yet: the spec's
        return f"towards {summary['target']} {summary.get('target_name') or ''}".rstrip()
    return "towards " + (", ".join(f"{t['class_id']} {t['name']}" for t in summary["targets"]) or "any other class")


def _accuracy(rows: list[dict[str, Any]], field: str) -> float | None:
    """Share of labelled rows whose ``field`` (a prediction) is the label; None without labels."""
    labelled = [r for r in rows if isinstance(r.get("label"), int)]
    return rate(sum(r.get(field) == r["label"] for r in labelled), len(labelled))


def _confusions(rows: list[dict[str, Any]], classes: ClassCatalog, top: int = 10) -> list[dict[str, Any]]:
    """The most frequent (true class -> prediction after) pairs among labelled rows that moved away."""
    pairs = Counter(
        (r["label"], r["pred_after"])
        for r in rows
        if isinstance(r.get("label"), int) and isinstance(r.get("pred_after"), int) and r["pred_after"] != r["label"]
    )
    return [
        {"label": a, "label_name": classes.name(a), "pred_after": b, "pred_name": classes.name(b), "n": n}
        for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    ]


def summarize(spec: JobSpec, rows: list[dict[str, Any]], classes: ClassCatalog) -> dict[str, Any]:
    spec_target = spec.params.target
    fixed = spec_target if isinstance(spec_target, int) else None
    # A failed record carries no target: it was aimed at the spec's.
    rows = [{**r, "target": r.get("target", fixed)} for r in rows if r["status"] != PENDING]
    done = [r for r in rows if r["status"] == DONE]
    fooled = [r for r in done if r.get("fooled") is True]
    targets = sorted({r["target"] for r in rows if classes.name(r["target"]) is not None})
    interval = wilson_interval(len(fooled), len(done))
    return {
        "target": spec_target,
        "target_mode": "untargeted" if spec_target is None else "class" if fixed is not None else spec_target,
        "target_name": classes.name(fixed),
        "targets": [{"class_id": t, "name": classes.name(t)} for t in targets],
        "n_fooled": len(fooled),
        "fooling_rate": rate(len(fooled), len(done)),
        "success_rate": rate(len(fooled), len(done)),
        "success_rate_ci95": None if interval is None else list(interval),
        "n_labelled": sum(isinstance(r.get("label"), int) for r in done),
        "clean_accuracy": _accuracy(done, "pred_before"),
        "robust_accuracy": _accuracy(done, "pred_after"),
        "confusions": _confusions(done, classes),
        "iterations": iteration_stats(_fooled_iterations(fooled)),
        "l2": size_stats([r.get("l2") for r in fooled]),
        "linf": size_stats([r.get("linf") for r in fooled]),
        "l2_pixels": size_stats([r["l2"] * 255 for r in fooled if isinstance(r.get("l2"), (int, float))]),
        "linf_pixels": size_stats([r["linf"] * 255 for r in fooled if isinstance(r.get("linf"), (int, float))]),
        "per_target": _breakdown(rows, "target", classes),
        "per_true_class": _breakdown(rows, "label", classes),
        "per_eps": _per_eps(rows) if spec.params.bounded else [],
    }


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    s, num = summary, html.num
    it, pct = s["iterations"], html.pct
    ci = s.get("success_rate_ci95")
    interval = f" (95% interval {pct(ci[0])}–{pct(ci[1])})" if ci else ""
    lines = [
        f"fooled {s['n_fooled']}/{s['n_done']} ({pct(s['fooling_rate'])}) {_towards(s)}{interval}",
        f"iterations to fool: median {num(it['median'])}, p90 {num(it['p90'])}, max {num(it['max'])}",
        f"perturbation (fooled): L2 median {num(s['l2']['median'])} max {num(s['l2']['max'])}, "
        f"Linf median {num(s['linf']['median'])} max {num(s['linf']['max'])} "
        f"(in 8-bit steps: Linf median {num(s['linf_pixels']['median'])})",
        *(
            f"eps {e['eps_text']}: success {e['n_fooled']}/{e['n']} ({html.pct(e['success_rate'])}), " + _robust_text(e)
            for e in s.get("per_eps", [])
        ),
    ]
    if s.get("n_labelled"):
        lines.append(
            f"labelled {s['n_labelled']}: clean accuracy {pct(s['clean_accuracy'])}, "
            f"robust accuracy {pct(s['robust_accuracy'])}"
        )
    return lines


def headline(summary: Mapping[str, Any]) -> list[html.Card]:
    s, num = summary, html.num
    it, l2, linf = s["iterations"], s["l2"], s["linf"]
    rate_label = f"fooled {s['n_fooled']} of {s['n_done']}, {html.esc(_towards(s))}"
    cards = [
        html.Card(html.pct(s["fooling_rate"]), rate_label, big=True),
        html.Card(f"{num(it['median'])} / {num(it['p90'])} / {num(it['max'])}", "iterations median / p90 / max"),
        html.Card(f"{num(l2['median'])} / {num(l2['max'])}", "L2 median / max (fooled)"),
        html.Card(f"{num(linf['median'])} / {num(linf['max'])}", "L∞ median / max (fooled)"),
    ]
    if s.get("n_labelled"):
        cards.append(html.Card(html.pct(s["clean_accuracy"]), f"clean accuracy ({s['n_labelled']} labelled)"))
        cards.append(html.Card(html.pct(s["robust_accuracy"]), "robust accuracy (after the attack)"))
    return cards


def report_sections(summary: Mapping[str, Any], classes: ClassCatalog) -> list[str]:
    hist = summary["iterations"]["histogram"]
    return [
        _eps_section(summary.get("per_eps", [])),
        "<h2>Iterations to fool</h2>" + html.histogram_svg(hist["bins"], hist["counts"]),
        _breakdown_table("Per target class", summary["per_target"], classes),
        _breakdown_table("Per true class", summary["per_true_class"], classes),
        _confusions_table(summary.get("confusions") or [], classes),
    ]


def _confusions_table(confusions: Sequence[Mapping[str, Any]], classes: ClassCatalog) -> str:
    if not confusions:
        return ""
    rows = [
        [html.esc(classes.label(c["label"])), html.esc(classes.label(c["pred_after"])), str(c["n"])] for c in confusions
    ]
    table = html.table(["true class", "predicted after the attack", "images"], rows, numeric=[False, False, True])
    return "<h2>Most frequent confusions</h2>" + table


def _breakdown_table(title: str, groups: Mapping[str, Mapping[str, Any]], classes: ClassCatalog) -> str:
    if not groups:
        return ""
    rows = [
        [
            html.esc(classes.label(int(cid))),
            str(g["n"]),
            str(g["n_fooled"]),
            html.pct(g["fooling_rate"]),
            html.num(g["median_iterations"]),
            str(g["n_failed"]),
        ]
        for cid, g in sorted(groups.items(), key=lambda kv: int(kv[0]))
    ]
    headers = ["class", "images", "fooled", "rate", "median iterations", "failed"]
    return f"<h2>{html.esc(title)}</h2>" + html.table(headers, rows, numeric=[False, *[True] * 5])


def tile(row: Mapping[str, Any], media: Media, classes: ClassCatalog) -> str:
    item_id = row["item_id"]
    original, adversarial = media.input(item_id), media.output(item_id)
    diff = perturbation_png(original, adversarial) if original and adversarial else None
    if diff is None:
        perturbation = html.figure(None, "perturbation", "needs both images")
    else:
        png, peak = diff
        perturbation = html.figure(png, f"|Δ| ×{255 / peak:.0f} (max {peak}/255)" if peak else "|Δ| = 0")
    label = classes.label
    eps = item_eps(row)
    budget = "" if eps is None else f" · ε {html.esc(eps_text(eps))}"
    caption = (
        f"<b>{html.esc(item_id)}</b>{budget} · true {html.esc(label(row.get('label')))}<br>"
        f"pred {html.esc(label(row.get('pred_before')))} → {html.esc(label(row.get('pred_after')))}<br>"
        f"{html.mark(row.get('fooled') is True, 'fooled', 'not fooled')} · "
        f"{_steps(row)}L2 {html.num(row.get('l2'))} · "
        f"L∞ {html.num(row.get('linf'))}<br>{html.source_span(row)} {html.link(row.get('output'), 'full size')}"
    )
    return html.tile(
        [html.figure(original, "original"), html.figure(adversarial, "adversarial"), perturbation], caption
    )
