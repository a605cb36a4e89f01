"""Style transfer grids and options (issue 15): a grid of 4 contents × 2 styles as one batch vs 8
sequential runs, peak memory by size, coarse-to-fine scales and L-BFGS against their baselines.

- grid: ``style_transfer(model, content[8], [style0, style1], style_index=[0, 1, 0, 1, ...])`` once
  vs 8 calls with one content and one style each, interleaved (best of ``--trials``), same
  iterations (what ``--grid`` plans and a worker runs vs a user running each pair);
- peak memory: one content at 192/384/768 px (``--memory-sizes``), a few iterations, each in a fresh
  process (``ru_maxrss`` only grows), Adam and L-BFGS; minus the same process's RSS before the run;
- scales: ``--scales 96,192`` (I per scale) vs one scale at 192 px (2·I), style loss and wall, for
  Adam and L-BFGS;
- L-BFGS vs Adam: total loss at the same number of function evaluations (192 px).

512 px iterations/s against neural-style-pt's published ≈ 22 it/s on a GTX 1080 is a GPU figure
(``bench.bench_style --full``); on the CPU it is not measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
import torch.nn.functional as F

from bench import common

STYLES = ("composition_vii.jpg", "starry_night.jpg")


def _memory_child(size: int, optimizer: str, iters: int, device_name: str | None) -> None:
    """In a fresh process: RSS before and peak after one style transfer at ``size`` px (JSON on stdout)."""
    from ascent.shared.kernels import style_transfer

    device = common.pick_device(device_name)
    model = common.load_model(device)
    content = common.load_style_image("tubingen.jpg", size).to(device)
    style = common.load_style_image(STYLES[0], size).to(device)
    before = common.peak_memory(device)["host_rss_mib"]
    style_transfer(model, content, style, iters=iters, optimizer=optimizer)
    print(json.dumps({"before": before, **common.peak_memory(device), "shape": list(content.shape)}))


def memory(size: int, optimizer: str, iters: int, device: str | None) -> dict:
    argv = [sys.executable, "-m", "bench.style_grid", "--memory-child", f"{size},{optimizer},{iters}"]
    argv += ["--device", device] if device else []
    argv += ["--threads", str(torch.get_num_threads())]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=common.REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> common.Report:
    parser = common.base_parser(__doc__.splitlines()[0], quiet_wait=10)
    parser.add_argument("--size", type=int, default=128, help="grid: content size (default 128)")
    parser.add_argument("--iters", type=int, default=10, help="grid: iterations (default 10)")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--memory-sizes", default="192,384,768")
    parser.add_argument("--memory-iters", type=int, default=3)
    parser.add_argument("--scale-iters", default="10,20", help="scales: iterations per scale")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        size, optimizer, iters = args.memory_child.split(",")
        _memory_child(int(size), optimizer, int(iters), args.device)
        raise SystemExit(0)

    from ascent.shared.kernels import style_transfer

    device = common.pick_device(args.device)
    model = common.load_model(device)
    val, _ = common.load_val25(device)
    size, iters = args.size, args.iters
    contents = F.interpolate(val[:4], size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    styles = [common.load_style_image(name, size).to(device) for name in STYLES]
    report = common.Report(
        bench="style-grid",
        title="style grid: 4 contents × 2 styles batched vs 8 sequential, memory by size, scales, L-BFGS",
        env=common.environment(device),
        settings={"size": size, "iters": iters, "trials": args.trials, "styles": ",".join(STYLES)},
    )

    grid_content = contents.repeat_interleave(2, 0)  # c0 c0 c1 c1 ...: each content with each style
    index = [0, 1] * 4

    def batched() -> object:
        return style_transfer(model, grid_content, styles, iters=iters, style_index=index)

    def sequential() -> object:
        for i, k in enumerate(index):
            style_transfer(model, grid_content[i : i + 1], styles[k], iters=iters)
        return None

    batched()  # warm-up
    best = common.interleaved(
        {"batched": lambda: common.measure(batched, device), "sequential": lambda: common.measure(sequential, device)},
        args.trials,
    )
    ratio = best["sequential"].wall / best["batched"].wall
    report.metric(
        f"{size}px grid 4×2, {iters} iterations: 8 sequential / 1 batched (wall)",
        f"{ratio:.2f}× ({best['sequential'].wall:.1f} s vs {best['batched'].wall:.1f} s)",
        "report (CPU; issue 6's ≥ 3× is a GPU target)",
    )
    others = max(best["batched"].others, best["sequential"].others)
    report.notes.append(f"grid: others' share of the CPU during the best runs ≤ {others:.0%}")

    rows = []
    for px in [int(s) for s in args.memory_sizes.split(",")]:
        for optimizer in ("adam", "lbfgs"):
            got = memory(px, optimizer, args.memory_iters, args.device)
            common.log(f"memory {px}px {optimizer}: {got}")
            rows.append(
                [
                    px,
                    optimizer,
                    "×".join(map(str, got["shape"][2:])),
                    got["before"],
                    got["host_rss_mib"],
                    got["host_rss_mib"] - got["before"],
                    got.get("gpu_peak_mib", "-"),
                ]
            )
    report.tables.append(
        common.Table(
            f"peak memory, 1 content (tubingen), {args.memory_iters} iterations, fresh process each",
            ["px", "optimizer", "H×W", "RSS before MiB", "peak RSS MiB", "added MiB", "GPU peak MiB"],
            rows,
        )
    )
    top = rows[-1]
    report.metric(f"peak RSS at {top[0]} px (L-BFGS; Adam)", f"{top[4]:.0f}; {rows[-2][4]:.0f} MiB", "report")

    content = common.load_style_image("tubingen.jpg", 192).to(device)
    style = common.load_style_image(STYLES[0], 192).to(device)
    scale_rows = []
    for optimizer in ("adam", "lbfgs"):
        for k in [int(s) for s in args.scale_iters.split(",")]:
            single_args = dict(iters=2 * k, decay_at=int(1.8 * k), optimizer=optimizer)
            multi_args = dict(iters=k, decay_at=int(0.9 * k), optimizer=optimizer, scales=(96, 192))
            single = common.measure(lambda a=single_args: style_transfer(model, content, style, **a), device)
            multi = common.measure(lambda a=multi_args: style_transfer(model, content, style, **a), device)
            s, m = single.out, multi.out
            scale_rows.append(
                [
                    optimizer,
                    k,
                    float(s.style),
                    float(m.style),
                    float(m.style) / float(s.style),
                    float(s.loss),
                    float(m.loss),
                    single.wall,
                    multi.wall,
                ]
            )
    report.tables.append(
        common.Table(
            "scales 96,192 (I per scale) vs 192 px alone (2·I): style loss, total loss, wall",
            ["optimizer", "I", "style 192", "style 96→192", "ratio", "loss 192", "loss 96→192", "s 192", "s 96→192"],
            scale_rows,
        )
    )
    for k in [int(s) for s in args.scale_iters.split(",")]:
        adam = style_transfer(model, content, style, iters=k, decay_at=int(0.9 * k))
        lbfgs = style_transfer(model, content, style, iters=k, optimizer="lbfgs")
        report.metric(
            f"192px, {k} evaluations: total loss L-BFGS / Adam",
            f"{float(lbfgs.loss) / float(adam.loss):.3f} ({float(lbfgs.loss):,.0f} vs {float(adam.loss):,.0f})",
            "≤ 1",
            float(lbfgs.loss) <= float(adam.loss),
        )
    if device.type != "cuda":
        report.notes.append(
            "512 px iterations/s vs neural-style-pt's published ≈ 22 it/s (GTX 1080) needs a GPU: none was "
            "available to this run (bench.bench_style --full measures it on one)."
        )
    return common.finish(report, args)


if __name__ == "__main__":
    main()
