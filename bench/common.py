"""The benchmark harness: device, assets, timers on a shared machine, and the results writer.

Runs unchanged on torch 2.11+ (CPU or CUDA): nothing here needs a newer feature. Benchmarks run as
``python -m bench.<name>`` from the repository root, with ``ascent`` installed in the environment.

- ``pick_device``: CUDA when present (or ``--device``), else the CPU.
- ``assets_dir``: ``$ASCENT_ASSETS``, default ``../shared/assets`` beside the repository (never copied in).
- ``load_model`` / ``raw_network``: SqueezeNet 1.1 with the shared weights, as the kernels see it (a
  Classifier) and as a user holds it (the plain torchvision network).
- ``load_val25``: the 25 ImageNet validation images of the reference as N×3×224×224 floats in [0, 1],
  optionally tiled ``repeat`` times (a larger set of the same images, for the GPU).
- ``best_time`` / ``best_times``: warm-up, then best of k wall times (``best_times`` round-robin over
  several functions), with ``torch.cuda.synchronize`` around each on a GPU.
- ``measure``, ``settled``, ``interleaved``: one timed call with the CPU share other processes took
  meanwhile; re-run while they disturbed it; best of trials over several runs in turn.
- ``calls_of``: every call of a module inside a block (batch size, gradients on, start time).
- ``Report``: summary metrics (with target and met/missed) plus detail tables; ``finish`` prints it,
  appends a dated section (device, torch, threads, commit) to bench/RESULTS.md unless ``--no-record``,
  and writes the summary JSON for run_all (``--json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "RESULTS.md"

TARGET_CLASS = 6  # stingray, the notebook's fooling target
WEIGHTS_NAME = "squeezenet1_1_fp16_from_ncnn.pth"


# ----------------------------------------------------------------------------- device and assets


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:1") if given, else CUDA when available, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def assets_dir() -> Path:
    """``$ASCENT_ASSETS`` or ``../shared/assets`` relative to the repository root."""
    return Path(os.environ.get("ASCENT_ASSETS", REPO.parent / "shared" / "assets")).resolve()


def weights_path() -> Path:
    path = assets_dir() / "weights" / WEIGHTS_NAME
    if not path.is_file():
        raise SystemExit(f"weights not found at {path}: set ASCENT_ASSETS to the shared assets folder")
    return path


def load_model(device: torch.device):
    """SqueezeNet 1.1 with the shared fp16-rounded weights, as the kernels see it (a Classifier)."""
    from ascent.shared.models import load_classifier

    return load_classifier("squeezenet1_1", weights=weights_path(), device=device)


def raw_network(device: torch.device) -> torch.nn.Module:
    """The torchvision SqueezeNet 1.1 itself with the same weights: no wrapper, no padding, NCHW
    (the baseline loop and the peers attack the network as its users hold it)."""
    import torchvision

    net = torchvision.models.squeezenet1_1(weights=None)
    net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    net.eval()
    net.requires_grad_(False)
    return net.to(device)


def load_val25(device: torch.device, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(images N×3×224×224 float in [0, 1], labels N) with N = 25·repeat (the 25 tiled in order)."""
    path = assets_dir() / "cs231n" / "datasets" / "imagenet_val_25.npz"
    if not path.is_file():
        raise SystemExit(f"{path} not found: set ASCENT_ASSETS to the shared assets folder")
    data = np.load(path)
    images = torch.from_numpy(data["X"]).permute(0, 3, 1, 2).float().div(255)
    labels = torch.from_numpy(data["y"]).long()
    if repeat > 1:
        images, labels = images.repeat(repeat, 1, 1, 1), labels.repeat(repeat)
    return images.contiguous().to(device), labels.to(device)


def load_style_image(name: str, size: int) -> torch.Tensor:
    """1×3×h×w in [0, 1]: a picture of cs231n/styles resized so its smaller side is ``size``."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    path = assets_dir() / "cs231n" / "styles" / name
    if not path.is_file():
        raise SystemExit(f"{path} not found: set ASCENT_ASSETS to the shared assets folder")
    img = Image.open(path).convert("RGB")
    return TF.to_tensor(TF.resize(img, size)).unsqueeze(0)


# ----------------------------------------------------------------------------- timing

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(wall seconds, result) of one call, synchronised on a GPU."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def best_time(fn: Callable[[], Any], device: torch.device, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``repeat`` calls after ``warmup`` untimed ones (the least disturbed run)."""
    for _ in range(warmup):
        fn()
    sync(device)
    return min(timed(fn, device)[0] for _ in range(max(1, repeat)))


def best_times(fns: Mapping[K, Callable[[], Any]], device: torch.device, repeat: int) -> dict[K, float]:
    """Best of ``repeat`` timings per function, measured round-robin (load on a shared machine hits
    every function alike rather than a few), each after one warm-up call."""
    for fn in fns.values():
        fn()
    best = {key: math.inf for key in fns}
    for _ in range(max(1, repeat)):
        for key, fn in fns.items():
            best[key] = min(best[key], timed(fn, device)[0])
    return best


@dataclass
class Timing:
    wall: float
    others: float  # share of the machine's CPU used by other processes meanwhile (0..1; CPU only)
    out: Any = None


def proc_stat() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


def own_cpu() -> float:
    """CPU seconds (user + sys) this process has used."""
    t = os.times()
    return t.user + t.system


def measure(fn: Callable[[], Any], device: torch.device) -> Timing:
    """Wall time of one call plus how busy *other* processes kept the CPU meanwhile (shared machines:
    a figure taken while others ran tests is marked by it)."""
    busy0, _ = proc_stat()
    own0 = own_cpu()
    wall, out = timed(fn, device)
    busy1, _ = proc_stat()
    others = max(0.0, (busy1 - busy0) - (own_cpu() - own0)) / (wall * (os.cpu_count() or 1))
    return Timing(wall, min(1.0, others), out)


def wait_for_quiet(threshold: float = 0.25, max_wait: float = 60.0) -> float:
    """On a shared CPU machine, wait (up to ``max_wait`` s) until other processes use less than
    ``threshold`` of the CPU over a 1 s window; returns the share last seen."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = proc_stat()
        own0 = own_cpu()
        time.sleep(1.0)
        busy1, total1 = proc_stat()
        share = max(0.0, (busy1 - busy0) - (own_cpu() - own0)) / max(1e-9, total1 - total0)
        if share < threshold or time.monotonic() > deadline:
            return share


def settle(max_wait: float) -> None:
    """``wait_for_quiet`` up to ``max_wait`` s before a timed segment; nothing when it is 0 (a GPU,
    or ``--quiet-wait 0``)."""
    if max_wait > 0:
        wait_for_quiet(max_wait=max_wait)


def _wall(result: Any) -> float:
    return float(result.wall)


def _others(result: Any) -> float:
    return float(result.others)


def settled(
    attempt: Callable[[], T],
    quiet_wait: float,
    *,
    wall: Callable[[T], float] = _wall,
    others: Callable[[T], float] = _others,
    threshold: float = 0.10,
    tries: int = 4,
) -> T:
    """``attempt()`` on a shared CPU box: wait for quiet (≤ ``quiet_wait`` s), run, and while other
    processes took more than ``threshold`` of the CPU during it (``others`` of its result), run again
    (≤ ``tries`` runs); the result with the smallest ``wall`` is kept. ``quiet_wait`` 0 (a GPU): one
    run. ``wall`` and ``others`` default to the result's attributes of those names (a ``Timing``)."""
    best: T | None = None
    for _ in range(tries if quiet_wait > 0 else 1):
        settle(quiet_wait)
        got = attempt()
        if best is None or wall(got) < wall(best):
            best = got
        if others(got) <= threshold:
            break
    assert best is not None
    return best


def measure_settled(
    fn: Callable[[], Any], device: torch.device, quiet_wait: float, threshold: float = 0.10, tries: int = 4
) -> Timing:
    """``settled`` over ``measure(fn)``: the fastest of up to ``tries`` undisturbed-or-not runs."""
    return settled(lambda: measure(fn, device), quiet_wait, threshold=threshold, tries=tries)


def interleaved(
    runs: Mapping[K, Callable[[], T]],
    trials: int,
    *,
    wall: Callable[[T], float] = _wall,
    describe: Callable[[K, T], str] | None = None,
) -> dict[K, T]:
    """The best result (smallest ``wall``) per key over ``trials`` rounds of every run in turn, so that
    load on a shared machine hits every run alike rather than a few. Each result is logged as
    ``trial t: describe(key, result)`` (default: the key, wall seconds and others' CPU of a Timing)."""
    best: dict[K, T] = {}
    for trial in range(max(1, trials)):
        for key, run in runs.items():
            got = run()
            log(f"trial {trial}: " + (describe(key, got) if describe else f"{key} {_describe_timing(got)}"))
            if key not in best or wall(got) < wall(best[key]):
                best[key] = got
    return best


def _describe_timing(t: Any) -> str:
    return f"{t.wall:.2f}s (others {t.others:.0%})"


@dataclass(frozen=True)
class Call:
    batch: int  # the input's first dimension
    grad: bool  # gradients enabled (a forward+backward) or not (a forward only)
    at: float  # time.perf_counter() when the call began


@contextmanager
def calls_of(module: torch.nn.Module) -> Iterator[list[Call]]:
    """Every call of ``module`` inside the block, in order (a forward pre-hook, removed on exit)."""
    calls: list[Call] = []

    def hook(_module: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
        calls.append(Call(int(inputs[0].shape[0]), torch.is_grad_enabled(), time.perf_counter()))

    handle = module.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def seconds_per_iteration(calls: Sequence[Call]) -> float | None:
    """Mean spacing of the calls with gradients on: one per iteration of a loop whose every iteration
    makes exactly one such call (synchronous devices only); None with fewer than two."""
    stamps = [c.at for c in calls if c.grad]
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) >= 2 else None


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak host RSS of this process (MiB) and, on a GPU, peak allocated GPU memory (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {"host_rss_mib": round(rss, 1)}
    if device.type == "cuda":
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def profile_table(fn: Callable[[], Any], device: torch.device, title: str, top: int = 12) -> Table:
    """torch.profiler over one call of ``fn``: the ``top`` operators by self time (CPU, or GPU time
    on CUDA), with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)

    def self_time(event: Any) -> float:  # µs
        if device.type == "cuda":
            for attr in ("self_device_time_total", "self_cuda_time_total"):
                if hasattr(event, attr):
                    return float(getattr(event, attr))
        return float(event.self_cpu_time_total)

    events = sorted(prof.key_averages(), key=self_time, reverse=True)
    total = sum(self_time(e) for e in events) or 1.0
    rows = [[e.key, self_time(e) / 1e3, f"{self_time(e) / total:.1%}", e.count] for e in events[:top]]
    unit = "GPU" if device.type == "cuda" else "CPU"
    return Table(
        f"{title} — torch.profiler, top operators by self {unit} time (total {total / 1e3:,.0f} ms)",
        ["operator", "self ms", "share", "calls"],
        rows,
    )


# ----------------------------------------------------------------------------- environment


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def git_commit() -> str:
    """Short commit of the working tree, with ``+dirty`` when it has local changes (read-only git)."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def environment(device: torch.device) -> dict[str, str]:
    import torchvision

    gpu_note = "" if device.type == "cuda" else " (no GPU in this run)"
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "device": f"{device.type}: {device_name(device)}{gpu_note}",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": str(torch.version.cuda) if device.type == "cuda" else "-",
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "commit": git_commit(),
    }


# ----------------------------------------------------------------------------- results


@dataclass
class Metric:
    """One line of the summary table: a measured value and, where issue 6 sets one, its target."""

    bench: str
    name: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target, or not measurable here

    @property
    def status(self) -> str:
        return {True: "met", False: "MISSED", None: ""}[self.met]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Report:
    bench: str
    title: str
    env: dict[str, str]
    settings: dict[str, Any]
    metrics: list[Metric] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def metric(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.metrics.append(Metric(self.bench, name, value, target, met))


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(metrics: Sequence[Metric]) -> str:
    return markdown_table(
        ["bench", "metric", "value", "target", "status"],
        [[m.bench, m.name, m.value, m.target, m.status] for m in metrics],
    )


def render(report: Report) -> str:
    env = report.env
    parts = [
        f"## {env['date']} · {report.title}",
        "",
        f"- device: {env['device']}; threads: {env['threads']}",
        f"- torch {env['torch']}, torchvision {env['torchvision']}, CUDA {env['cuda']}, "
        f"Python {env['python']}; commit {env['commit']}",
        "- settings: " + ", ".join(f"{k}={v}" for k, v in report.settings.items()),
        "",
        metrics_table(report.metrics),
    ]
    for table in report.tables:
        parts += ["", f"**{table.title}**", "", markdown_table(table.columns, table.rows)]
    if report.notes:
        parts += [""] + [f"- {note}" for note in report.notes]
    return "\n".join(parts) + "\n"


def record(report: Report, path: Path = RESULTS) -> None:
    """Append the report as a dated section to bench/RESULTS.md (created with a header if absent)."""
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nAppended by the scripts in bench/ (`python -m bench`); newest last. "
            "See docs/benchmarks.md for what each figure and target means.\n\n"
        )
    with path.open("a") as fh:
        fh.write("\n" + render(report))


def print_report(report: Report) -> None:
    print("\n" + render(report), flush=True)


def write_json(report: Report, path: str | None) -> None:
    """The summary for run_all (``--json PATH``)."""
    if path:
        Path(path).write_text(json.dumps(asdict(report), indent=1))


def base_parser(description: str, quiet_wait: float | None = None) -> argparse.ArgumentParser:
    """The flags every benchmark takes: those run_all passes through (``--device``, ``--full``,
    ``--no-record``, ``--json``) and ``--quiet-wait`` (default ``quiet_wait``; None: 60 s on the CPU,
    0 on a GPU, see ``quiet_seconds``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--full", action="store_true", help="GPU-sized settings (larger sets, 512 px)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--json", default=None, help="also write the summary as JSON here (for run_all)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=quiet_wait,
        help="CPU: wait ≤ s for other load to drop before each timed segment (default: "
        + ("60 on the CPU, 0 on a GPU" if quiet_wait is None else f"{quiet_wait:g}")
        + ")",
    )
    return parser


def quiet_seconds(args: argparse.Namespace, device: torch.device) -> float:
    """``--quiet-wait`` as given, else 60 s on the CPU and 0 on a GPU (whose timings other processes
    on the host do not disturb)."""
    if args.quiet_wait is not None:
        return float(args.quiet_wait)
    return 0.0 if device.type == "cuda" else 60.0


def finish(report: Report, args: argparse.Namespace) -> Report:
    print_report(report)
    if not args.no_record:
        record(report)
        print(f"(appended to {RESULTS.relative_to(REPO)})", flush=True)
    write_json(report, args.json)
    return report


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)
