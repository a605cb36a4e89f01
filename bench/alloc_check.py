"""The host allocator's share of ``fool`` on the CPU: the same kernel run in fresh processes with
glibc's defaults, with glibc's mmap threshold and trim threshold raised (freed activation buffers are
reused instead of being unmapped and faulted in again), and with jemalloc preloaded if present.

Each configuration runs ``--rounds`` times, interleaved, in its own process (``--child`` mode);
wall time and minor page faults of the timed ``fool`` call are reported, best of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench import common, variants

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
CONFIGS: dict[str, dict[str, str]] = {
    "glibc defaults": {},
    "glibc, no mmap/trim of freed buffers": {
        "MALLOC_MMAP_THRESHOLD_": str(2**32),
        "MALLOC_TRIM_THRESHOLD_": str(2**32),
    },
    "jemalloc (LD_PRELOAD, defaults)": {"LD_PRELOAD": JEMALLOC},
}


def child() -> None:
    """The measured process: one warm-up, then one timed ``fool`` of the 25 images; prints JSON."""
    import torch

    from ascent.shared.kernels import fool

    device = torch.device("cpu")
    model = common.load_model(device)
    images, _ = common.load_val25(device)
    fool(model, images[:4], common.TARGET_CLASS, max_iters=3, extra_iters=0)  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    res = fool(model, images, common.TARGET_CLASS)
    wall = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"wall": wall, "minflt": faults, "fooled": int(res.fooled.sum())}))


def run_child(extra: dict[str, str], quiet: float) -> dict:
    """``child()`` in a fresh process with ``extra`` in its environment, after waiting for quiet."""
    common.settle(quiet)
    out = subprocess.run(
        [sys.executable, "-m", "bench.alloc_check", "--child"],
        cwd=common.REPO,
        env={**os.environ, **extra},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> common.Report | None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child()
        return None
    device = common.pick_device("cpu")
    quiet = common.quiet_seconds(args, device)
    configs = {k: v for k, v in CONFIGS.items() if "LD_PRELOAD" not in v or Path(JEMALLOC).exists()}
    best = common.interleaved(
        {name: (lambda extra=extra: run_child(extra, quiet)) for name, extra in configs.items()},
        args.rounds,
        wall=lambda got: got["wall"],
        describe=lambda name, got: f"{name}: {got['wall']:.2f}s, {got['minflt']} minor faults",
    )
    base = best["glibc defaults"]["wall"]
    report = common.Report(
        bench="alloc",
        title="fool (25 images, auto batch) under different host allocators, fresh processes",
        env=common.environment(device),
        settings={"rounds": args.rounds},
    )
    report.tables.append(
        common.Table(
            f"best of {args.rounds} rounds, interleaved",
            ["allocator", "wall s", "speed-up", "minor page faults", "fooled"],
            [[k, v["wall"], base / v["wall"], v["minflt"], v["fooled"]] for k, v in best.items()],
        )
    )
    variants.speedups(report, {name: got["wall"] for name, got in best.items()}, "glibc defaults")
    return common.finish(report, args)


if __name__ == "__main__":
    main()
