"""The host allocator's share of ``fool`` on the CPU: the same kernel run in fresh processes with
glibc's defaults, with glibc's mmap threshold and trim threshold raised (freed activation buffers are
reused instead of being unmapped and faulted in again), and with jemalloc preloaded if present.

Each configuration runs ``--rounds`` times, interleaved, in its own process (``--child`` mode);
wall time and minor page faults of the timed ``fool`` call are reported, best of the rounds.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    REPO,
    TARGET_CLASS,
    Report,
    Table,
    base_parser,
    environment,
    finish,
    load_model,
    load_val25,
    log,
    pick_device,
    wait_for_quiet,
)

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
    import torch

    from ascent.shared.kernels import fool

    device = torch.device("cpu")
    model = load_model(device)
    images, _ = load_val25(device)
    fool(model, images[:4], TARGET_CLASS, max_iters=3, extra_iters=0)  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    res = fool(model, images, TARGET_CLASS)
    wall = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"wall": wall, "minflt": faults, "fooled": int(res.fooled.sum())}))


def main(argv: list[str] | None = None) -> Report | None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse_hidden())
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.child:
        child()
        return None
    device = pick_device("cpu")
    configs = {k: v for k, v in CONFIGS.items() if "LD_PRELOAD" not in v or Path(JEMALLOC).exists()}
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        for name, extra in configs.items():
            if args.quiet_wait > 0:
                wait_for_quiet(max_wait=args.quiet_wait)
            env = {**os.environ, **extra}
            out = subprocess.run(
                [sys.executable, "-m", "bench.alloc_check", "--child"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got = json.loads(out.strip().splitlines()[-1])
            log(f"round {r} {name}: {got['wall']:.2f}s, {got['minflt']} minor faults")
            if name not in best or got["wall"] < best[name]["wall"]:
                best[name] = got
    base = best["glibc defaults"]["wall"]
    report = Report(
        bench="alloc",
        title="fool (25 images, auto batch) under different host allocators, fresh processes",
        env=environment(device),
        settings={"rounds": args.rounds},
    )
    report.tables.append(
        Table(
            f"best of {args.rounds} rounds, interleaved",
            ["allocator", "wall s", "speed-up", "minor page faults", "fooled"],
            [[k, v["wall"], base / v["wall"], v["minflt"], v["fooled"]] for k, v in best.items()],
        )
    )
    for name, got in best.items():
        if name != "glibc defaults":
            report.metric(f"{name} vs glibc defaults", f"{base / got['wall']:.2f}×")
    return finish(report, args)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
