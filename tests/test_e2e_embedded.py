"""``ascent run`` end to end on the embedded default: a real redis-server, real Celery worker processes,
a file store, the real CLI as a subprocess; and nothing left running afterwards, also after Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from ascent.producer.processes import port_open

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
READY = re.compile(r"embedded Redis at redis://127\.0\.0\.1:(\d+)/0")


class Ascent:
    """``python -m ascent.producer ARGS`` as a subprocess; records every descendant process while it runs."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("ASCENT_BROKER_URL", "ASCENT_STORE")}
        # CPU workers with one thread each, like the in-process reference below: float results (and so
        # iteration counts) depend on the device, the thread count and the batch.
        env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ascent.producer", *args],
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.descendants: dict[int, float] = {}
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.port: int | None = None
        self.ready = threading.Event()
        self.submitted = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _watch(self) -> None:
        parent = psutil.Process(self.proc.pid)
        while self.proc.poll() is None:
            try:
                for child in parent.children(recursive=True):
                    self.descendants.setdefault(child.pid, child.create_time())
            except psutil.Error:
                pass
            time.sleep(0.1)

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            match = READY.search(line)
            if match:
                self.port = int(match.group(1))
                self.ready.set()
            if " items in " in line and "shards" in line:
                self.submitted.set()

    def wait(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(10)
        return code

    @property
    def err(self) -> str:
        return "".join(self.stderr)

    @property
    def out(self) -> str:
        return "".join(self.stdout)

    def leftovers(self) -> list[str]:
        """Descendants seen while it ran that still exist (same pid and start time, not a zombie)."""
        left = []
        for pid, created in self.descendants.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid} {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        return left

    def assert_nothing_left_running(self) -> None:
        assert self.descendants, "no child process was ever seen: the watcher is broken"
        assert self.leftovers() == []
        assert self.port is not None and not port_open(self.port), "the embedded Redis still listens"


@contextmanager
def ascent(args: list[str], cwd: Path) -> Iterator[Ascent]:
    run = Ascent(args, cwd)
    try:
        yield run
    finally:
        if run.proc.poll() is None:  # a failed assertion must not leave the run behind either
            run.proc.kill()
            run.wait()


def run_ok(args: list[str], cwd: Path) -> Ascent:
    with ascent(args, cwd) as run:
        code = run.wait()
        assert code == 0, f"exit {code}\nstdout:\n{run.out}\nstderr:\n{run.err}"
        run.assert_nothing_left_running()
    return run


def run_dir(store: Path, run_id: str) -> Path:
    return store / "runs" / run_id


def read_items(store: Path, run_id: str) -> dict[str, dict]:
    lines = (run_dir(store, run_id) / "items.jsonl").read_text().splitlines()
    return {r["item_id"]: r for r in map(json.loads, lines)}


def load_png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def as_batch(arrays) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def squeezenet(assets):
    from ascent.shared.models import load_classifier

    return load_classifier(
        "squeezenet1_1", weights=assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth", device="cpu"
    )


def test_a_fool_run_reproduces_the_kernel_run_in_process_and_its_pngs_classify_as_recorded(
    assets, tmp_path, squeezenet
):
    from ascent.shared.kernels import fool

    npz = assets / "cs231n" / "datasets" / "imagenet_val_25.npz"
    weights = assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth"
    store = tmp_path / "store"
    args = ["run", "fool", "--images", str(npz), "--target", "6", "--weights", str(weights), "--workers", "2"]
    run = run_ok([*args, "--shard-size", "10", "--store", store.as_uri(), "--run-id", "fool-e2e"], tmp_path)
    # The bar moves per image (workers report their shards' progress), not per shard of 10.
    shown = {int(n) for n in re.findall(r"\b(\d+)/25 \[", run.err)}
    assert len(shown) >= 10 and {0, 25} <= shown, f"the bar showed only {sorted(shown)}"

    summary = json.loads((run_dir(store, "fool-e2e") / "summary.json").read_text())
    items = read_items(store, "fool-e2e")
    assert summary["n_items"] == summary["n_done"] == 25 and summary["n_failed"] == 0
    assert {r["worker"] for r in items.values()} <= {
        "ascent-local-0@" + os.uname().nodename,
        "ascent-local-1@" + os.uname().nodename,
    }

    # The same shards, one thread each, in this process.
    x = as_batch(np.load(npz, allow_pickle=False)["X"])
    with torch_threads(1):
        results = [fool(squeezenet, x[s : s + 10], 6) for s in range(0, 25, 10)]
    fooled = torch.cat([r.fooled for r in results]).tolist()
    iterations = torch.cat([r.iterations for r in results]).tolist()
    assert [items[f"{i:06d}"]["fooled"] for i in range(25)] == fooled
    assert [items[f"{i:06d}"]["iterations"] for i in range(25)] == iterations
    assert summary["n_fooled"] == sum(fooled)

    outputs = [load_png(run_dir(store, "fool-e2e") / "outputs" / f"{i:06d}.png") for i in range(25)]
    with torch.no_grad():
        preds = squeezenet(as_batch(outputs)).argmax(1).tolist()
    assert preds == [items[f"{i:06d}"]["pred_after"] for i in range(25)]
    assert all((p == 6) == items[f"{i:06d}"]["fooled"] for i, p in enumerate(preds))

    report = run_dir(store, "fool-e2e") / "report.html"
    assert "fool-e2e" in report.read_text()
    assert f"report: {report.as_uri()}" in run.out


def test_a_style_run_lowers_the_style_loss_below_the_content_images(assets, tmp_path, squeezenet):
    from ascent.shared.losses import gram_matrix, style_loss

    styles = assets / "cs231n" / "styles"
    weights = assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth"
    store = tmp_path / "store"
    contents = [str(styles / "tubingen.jpg"), str(assets / "cs231n" / "images" / "kitten.jpg")]
    args = ["run", "style", "--content", *contents, "--style", str(styles / "starry_night.jpg")]
    args += ["--preset", "starry_night", "--size", "64", "--style-size", "64", "--iters", "80"]
    run_ok([*args, "--weights", str(weights), "--store", store.as_uri(), "--run-id", "style-e2e"], tmp_path)

    root = run_dir(store, "style-e2e")
    spec = json.loads((root / "spec.json").read_text())["params"]
    items = read_items(store, "style-e2e")
    assert [r["status"] for r in items.values()] == ["done", "done"]
    layers, layer_weights = spec["style_layers"], spec["style_weights"]
    with torch.no_grad():
        style_feats = squeezenet.features(as_batch([load_png(root / "inputs" / "style-0.png")]))
        targets = [gram_matrix(style_feats[layer]) for layer in layers]
        for item_id, record in items.items():
            output = load_png(root / "outputs" / f"{item_id}.png")
            content = load_png(root / "inputs" / f"{item_id}.png")
            assert output.shape == content.shape and min(output.shape[:2]) == 64
            before = float(style_loss(squeezenet.features(as_batch([content])), layers, targets, layer_weights))
            assert record["style_loss"] < 0.5 * before, (item_id, record["style_loss"], before)


def test_a_style_grid_is_one_item_per_content_and_style_with_a_contact_sheet_and_saved_steps(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("c0", "c1", "s0", "s1"):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(paths[name])
    store = tmp_path / "store"
    args = ["run", "style", "--content", str(paths["c0"]), str(paths["c1"]), "--style", str(paths["s0"])]
    args += [str(paths["s1"]), "--grid", "--iters", "4", "--save-every", "2", "--model", "tiny", "--size", "32"]
    run = run_ok(
        [*args, "--style-size", "32", "--workers", "1", "--store", store.as_uri(), "--run-id", "grid"], tmp_path
    )

    assert "--iters 4" in run.err and "default --iters 200" in run.err  # too few to show the content
    items = read_items(store, "grid")
    pairs = {
        (Path(r.get("original") or r["source"]).name, r["style_index"]): r
        for r in items.values()
        if r["status"] == "done"
    }
    assert sorted(pairs) == [("c0.png", 0), ("c0.png", 1), ("c1.png", 0), ("c1.png", 1)]
    for r in items.values():
        steps = run_dir(store, "grid") / "steps" / r["item_id"]
        assert r["snapshots"] == [2, 4] and sorted(p.name for p in steps.iterdir()) == [
            "step-000002.png",
            "step-000004.png",
        ]
    page = (run_dir(store, "grid") / "report.html").read_text()
    sheet = page[page.index("Contact sheet (2 × 2)") :].split("</table>")[0]
    assert sheet.count("<tr>") == 3 and sheet.count("<img ") == 4  # a header row, then 2 contents × 2 styles
    assert '<div class="bg style-0"></div>style 0</th><th><div class="bg style-1"></div>style 1</th>' in sheet
    strips = [s.split("</div>")[0] for s in page.split('<div class="imgs strip">')[1:]]  # one per item
    assert len(strips) == 4 and all(s.count("<img ") == 2 and s.endswith("iter 4</figure>") for s in strips)


def test_a_saliency_run_reports_a_bad_file_and_still_exits_0(assets, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    x = np.load(assets / "cs231n" / "datasets" / "imagenet_val_25.npz", allow_pickle=False)["X"]
    for i in range(3):
        Image.fromarray(x[i]).save(folder / f"photo {i}.png")
    (folder / "broken.jpg").write_text("not a JPEG")
    store = tmp_path / "store"
    weights = assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth"
    args = ["run", "saliency", "--images", str(folder), "--weights", str(weights), "--store", store.as_uri()]
    run = run_ok([*args, "--run-id", "sal-e2e", "--shard-size", "2"], tmp_path)

    items = read_items(store, "sal-e2e")
    assert [r["status"] for r in items.values()] == [
        "failed",
        "done",
        "done",
        "done",
    ]  # broken.jpg sorts first
    assert "broken.jpg" in items["000000"]["error"] and "text file" in items["000000"]["error"]
    assert "1 failed" in run.out
    for item_id in ("000001", "000002", "000003"):
        saliency = load_png(run_dir(store, "sal-e2e") / "outputs" / f"{item_id}.png")
        assert saliency.shape == (224, 224) and saliency.max() == 255


def test_a_classviz_run_renders_one_image_per_class(assets, tmp_path):
    store = tmp_path / "store"
    weights = assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth"
    args = [
        "run",
        "classviz",
        "--classes",
        "76,stingray",
        "--iters",
        "5",
        "--size",
        "64",
        "--weights",
        str(weights),
    ]
    run_ok([*args, "--store", store.as_uri(), "--run-id", "viz-e2e"], tmp_path)

    items = read_items(store, "viz-e2e")
    assert [r["class_id"] for r in items.values()] == [76, 6]
    for item_id in items:
        assert load_png(run_dir(store, "viz-e2e") / "outputs" / f"{item_id}.png").shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_ctrl_c_or_sigterm_in_the_middle_of_a_run_stops_every_process_it_started(assets, tmp_path, sig, code, word):
    npz = assets / "cs231n" / "datasets" / "imagenet_val_25.npz"
    weights = assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth"
    args = ["run", "fool", "--images", str(npz), "--target", "6", "--weights", str(weights), "--workers", "2"]
    with ascent([*args, "--store", (tmp_path / "store").as_uri()], tmp_path) as run:
        assert run.submitted.wait(180), run.err
        time.sleep(1.0)  # the workers are busy with their first shards now
        assert run.proc.poll() is None
        run.proc.send_signal(sig)
        assert run.wait(60) == code, run.err
        assert word in run.err and "Traceback" not in run.err
        run.assert_nothing_left_running()
