"""Summary statistics the jobs report (torch-free): rates, percentiles, histograms of iteration counts."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

HISTOGRAM_MAX_BINS = 20


def finite(value: Any) -> float | int | None:
    """``value`` if it is a finite number, else None (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def rate(k: int, n: int) -> float | None:
    """k / n, None when n is 0."""
    return k / n if n else None


def percentile_nearest_rank(values: Sequence[float], q: float) -> float:
    """The smallest value v with at least ``q`` % of ``values`` <= v (an observed value, no interpolation)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def size_stats(values: Sequence[Any]) -> dict[str, float | None]:
    """{mean, median, max} of the finite values; all None when there are none."""
    kept = [v for v in values if finite(v) is not None]
    if not kept:
        return {"mean": None, "median": None, "max": None}
    return {"mean": statistics.fmean(kept), "median": statistics.median(kept), "max": max(kept)}


def mean_or_none(values: Sequence[Any]) -> float | None:
    kept = [v for v in values if finite(v) is not None]
    return statistics.fmean(kept) if kept else None


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
    """{mean, median, p90 (nearest rank), max, histogram} of iteration counts; None when empty."""
    if not iterations:
        return {"mean": None, "median": None, "p90": None, "max": None, "histogram": iteration_histogram([])}
    return {
        "mean": statistics.fmean(iterations),
        "median": statistics.median(iterations),
        "p90": percentile_nearest_rank(iterations, 90),
        "max": max(iterations),
        "histogram": iteration_histogram(iterations),
    }


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion k/n (95 % by default); None when n is 0."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
