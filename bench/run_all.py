"""Run every benchmark in bench/ and print one table: ``python -m bench`` (from the repository root).

Fast settings by default (sized for the 2-core CPU box); ``--full`` for GPU sizes. Each benchmark runs
as its own process (``python -m bench.<name>``: clean memory figures, and torchattacks stays on the path
of its subprocess only), appends its section to bench/RESULTS.md (unless ``--no-record``) and hands
its summary back through ``--json``.

The contract for any ``bench/bench_<name>.py`` listed in ``BENCHMARKS``: runnable as
``python -m bench.bench_<name>``, taking the flags of ``bench.common.base_parser`` (``--device``,
``--full``, ``--no-record``, ``--json PATH``, ``--quiet-wait``) and ending with
``bench.common.finish(report, args)``.
A script that does not use ``base_parser`` is passed only the flags its source mentions.

Works with torch ≥ 2.11 (GPU machines) and the project's 2.14 (CPU): nothing newer is used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BENCH, REPO, Metric, metrics_table

# In order; a listed script that does not exist is skipped.
BENCHMARKS = ("bench_fool", "bench_style", "bench_queue", "bench_scaleout")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--full", action="store_true", help="GPU-sized settings")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--only", default=None, help="comma-separated names, e.g. fool,style")
    parser.add_argument("--skip", default="", help="comma-separated names to leave out")
    args, extra = parser.parse_known_args(argv)
    only = {f"bench_{n.strip().removeprefix('bench_')}" for n in args.only.split(",")} if args.only else None
    skip = {f"bench_{n.strip().removeprefix('bench_')}" for n in args.skip.split(",") if n.strip()}

    metrics: list[Metric] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in BENCHMARKS:
            script = BENCH / f"{name}.py"
            if (only is not None and name not in only) or name in skip:
                continue
            if not script.exists():
                print(f"== {name}: not present yet (skipped)", flush=True)
                continue
            source = script.read_text()
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", f"bench.{name}"]
            for flag, on, value in (
                ("--device", args.device is not None, args.device),
                ("--full", args.full, None),
                ("--no-record", args.no_record, None),
                ("--json", True, str(out)),
            ):
                if on and ("base_parser" in source or flag in source):
                    cmd += [flag] + ([value] if value is not None else [])
            cmd += extra
            print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
            start = time.perf_counter()
            rc = subprocess.run(cmd, cwd=REPO).returncode
            took = time.perf_counter() - start
            if rc != 0:
                failures.append(f"{name} exited {rc} after {took:.0f}s")
            if out.exists():
                report = json.loads(out.read_text())
                metrics += [Metric(**m) for m in report.get("metrics", [])]
            elif rc == 0:
                metrics.append(Metric(name.removeprefix("bench_"), "(no --json summary)", f"ran {took:.0f}s"))
    print("\n# Summary\n")
    print(metrics_table(metrics) if metrics else "(no metrics)")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
