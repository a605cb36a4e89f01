"""bench/: every benchmark script imports and parses its flags (the figures themselves are measured by
running them, never in tests)."""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if "def main(" in p.read_text())


def test_the_benchmarks_are_found():
    assert {"bench_fool", "bench_style", "peers_pgd", "threat_floor", "run_all"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_benchmark_imports_and_prints_its_help(name):
    module = importlib.import_module(f"bench.{name}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "--" in out.getvalue() and "usage" in out.getvalue()
