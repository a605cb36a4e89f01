"""Your classifier, your labels, your dataset: a small CNN made here (10 classes, 32 px, its own
normalisation) saved as TorchScript, as a torch.export program and as a state_dict with a factory, run
over an ImageFolder through the real command (embedded, and distributed with an S3 store), target
modes, fail-fast model errors and the three export formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ascent.shared.settings import Settings
from ascent.shared.store import FileStore
from tests.faults_util import Cluster, ascent_env, wait_complete

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
SIZE = 32

NET_MODULE = '''
import torch
from torch import nn


def make():
    """The architecture of the test's CNN: 10 classes."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, 10),
    )
'''


def small_net(folder: Path) -> nn.Module:
    sys.path.insert(0, str(folder))
    try:
        import tinynets

        torch.manual_seed(0)
        return tinynets.make().eval()
    finally:
        sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, object]:
    """The CNN saved three ways, its class names, and the net itself (to check what the runs record)."""
    root = tmp_path_factory.mktemp("models")
    (root / "tinynets.py").write_text(textwrap.dedent(NET_MODULE))
    net = small_net(root)
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.14, yet users have such files
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        torch.jit.save(torch.jit.trace(net, torch.zeros(2, 3, SIZE, SIZE)), root / "net.pt")
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (torch.zeros(2, 3, SIZE, SIZE),), dynamic_shapes={"input": {0: batch}})
    torch.export.save(program, root / "net.pt2")
    torch.save(net.state_dict(), root / "net.pth")
    (root / "names.txt").write_text("\n".join(CLASSES) + "\n")
    return {"root": root, "net": net}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """An ImageFolder: images/<class name>/<i>.png, two images of four classes."""
    root = tmp_path_factory.mktemp("data") / "images"
    rng = np.random.default_rng(3)
    for c in ("cat", "dog", "ship", "truck"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / c / f"{c}-{i}.png")
    return root


def model_args(models, how: str) -> list[str]:
    root = models["root"]
    model = {
        "torchscript": [str(root / "net.pt")],
        "export": [str(root / "net.pt2")],
        "factory": ["tinynets:make", "--weights", str(root / "net.pth")],
    }[how]
    return [
        "--model",
        *model,
        "--class-names",
        str(root / "names.txt"),
        "--mean",
        ",".join(map(str, MEAN)),
        "--std",
        ",".join(map(str, STD)),
        "--size",
        str(SIZE),
    ]


def run_cli(args: list[str], cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ascent.producer", *args],
        cwd=cwd,
        env=ascent_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def classify(net: nn.Module, png: bytes) -> torch.Tensor:
    """The test's own logits for a stored PNG: its normalisation, applied here."""
    x = torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return net((x - mean) / std)[0]


def check_run(store: FileStore, run_id: str, net: nn.Module) -> list[dict]:
    """Every item done, labelled from its folder, aimed at its clean image's least-likely class, and its
    stored output classified as recorded; returns the items."""
    run = store.root / "runs" / run_id
    rows = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["status"] == "done" for r in rows)
    assert sorted({r["label"] for r in rows}) == [CLASSES.index(c) for c in ("cat", "dog", "ship", "truck")]
    for r in rows:
        seen = (run / "inputs" / f"{r['item_id']}.png").read_bytes()
        assert r["target"] == int(classify(net, seen).argmin())  # computed here, independently
        assert r["pred_before"] == int(classify(net, seen).argmax())
        assert r["pred_after"] == int(classify(net, (run / "outputs" / f"{r['item_id']}.png").read_bytes()).argmax())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["target_mode"] == "least-likely" and 0 <= summary["success_rate"] <= 1
    assert {"clean_accuracy", "success_rate", "success_rate_ci95", "robust_accuracy"} <= set(summary)
    assert summary["n_labelled"] == 8 and summary["per_true_class"]["3"]["name"] == "cat"
    return rows


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", ["torchscript", "export", "factory"])
def test_your_own_model_runs_least_likely_over_an_imagefolder_in_the_embedded_default(
    tmp_path, models, image_folder, how
):
    store = FileStore(tmp_path / "store")
    args = ["run", "fool", "--images", str(image_folder), "--target", "least-likely", "--max-iters", "20"]
    args += [*model_args(models, how), "--store", store.uri, "--run-id", how, "--shard-size", "4"]
    done = run_cli(args, tmp_path, PYTHONPATH=str(models["root"]))
    assert done.returncode == 0, done.stderr
    assert "labelled 8: clean accuracy" in done.stdout
    check_run(store, how, models["net"])


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_your_own_model_runs_distributed_with_an_s3_store_uploaded_once_and_checked(
    tmp_path, models, image_folder, s3_endpoint, s3_bucket
):
    uri = f"s3://{s3_bucket}/mine"
    store = Settings(aws_endpoint_url=s3_endpoint).open_store(uri)
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "PYTHONPATH": str(models["root"])}
    with Cluster(Settings(store=uri), workers=1, env=env) as cluster:
        for how in ("torchscript", "export", "factory"):
            args = ["submit", "fool", "--images", str(image_folder), "--target", "least-likely", "--max-iters", "20"]
            args += [*model_args(models, how), "--store", uri, "--broker", cluster.broker_url, "--run-id", how]
            submitted = run_cli(args, tmp_path, AWS_ENDPOINT_URL=s3_endpoint)
            assert submitted.returncode == 0, submitted.stderr
        for how in ("torchscript", "export", "factory"):
            wait_complete(store, how, 240, check=cluster.check_workers)
            spec = store.get_json(f"runs/{how}/spec.json")
            uploads = [k.rsplit("/", 1)[1] for k in store.list(f"runs/{how}/uploads/")]
            model_file = {"torchscript": "model.pt", "export": "model.pt2", "factory": "weights.pth"}[how]
            assert model_file in uploads and "class-names.txt" in uploads  # uploaded once, with the run
            assert all(len(spec["files"][u]) == 64 for u in (spec["model"] if how != "factory" else spec["weights"],))
            collected = run_cli(["collect", how, "--store", uri], tmp_path, AWS_ENDPOINT_URL=s3_endpoint)
            assert collected.returncode == 0, collected.stderr
            rows = [json.loads(line) for line in store.get(f"runs/{how}/items.jsonl").splitlines()]
            assert len(rows) == 8 and all(r["status"] == "done" for r in rows)
            for r in rows:
                seen = store.get(f"runs/{how}/inputs/{r['item_id']}.png")
                assert r["target"] == int(classify(models["net"], seen).argmin())

        # A model file that changed after submit is refused by the worker (its hash no longer matches).
        bad = tmp_path / "bad.pth"
        bad.write_bytes(b"not a checkpoint at all")
        args = ["submit", "fool", "--images", str(image_folder), "--target", "cat", "--model", "tinynets:make"]
        args += ["--weights", str(bad), "--class-names", str(models["root"] / "names.txt"), "--size", str(SIZE)]
        args += ["--store", uri, "--broker", cluster.broker_url, "--run-id", "bad-weights"]
        assert run_cli(args, tmp_path, AWS_ENDPOINT_URL=s3_endpoint).returncode == 0  # no torch needed to submit
        started = time.monotonic()
        waited = run_cli(
            ["collect", "bad-weights", "--wait", "--timeout", "60", "--store", uri],
            tmp_path,
            AWS_ENDPOINT_URL=s3_endpoint,
        )
        assert waited.returncode == 1 and time.monotonic() - started < 30
        assert "run bad-weights failed: --weights" in waited.stderr and "not a checkpoint" in waited.stderr
        assert "weights_only" not in waited.stderr + waited.stdout
        status = run_cli(["status", "bad-weights", "--store", uri], tmp_path, AWS_ENDPOINT_URL=s3_endpoint)
        assert status.returncode == 1 and "--weights" in status.stderr


@pytest.mark.parametrize(
    ("model", "flag"),
    [(["--model", "resnet18"], "--model resnet18"), (["--model", "tiny", "--weights", "README.md"], "--weights")],
)
def test_a_model_that_cannot_load_stops_the_embedded_run_within_30_s_naming_the_flag(tmp_path, model, flag):
    from tests.faults_util import write_png

    write_png(tmp_path / "in" / "a.png")
    (tmp_path / "README.md").write_text("# not a checkpoint\n")
    started = time.monotonic()
    done = run_cli(
        [
            "run",
            "fool",
            "--images",
            str(tmp_path / "in"),
            "--target",
            "6",
            *model,
            "--store",
            (tmp_path / "s").as_uri(),
        ],
        tmp_path,
        timeout=60,
    )
    assert done.returncode == 2 and time.monotonic() - started < 30
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ascent: error: {flag}") and "weights_only" not in lines[0]
    assert not (tmp_path / "s").exists()  # nothing started, nothing written


def test_a_run_in_which_every_item_failed_exits_non_zero(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_text("not an image")
    done = run_cli(
        ["run", "saliency", "--images", str(tmp_path / "in"), "--model", "tiny", "--store", (tmp_path / "s").as_uri()],
        tmp_path,
    )
    assert done.returncode == 1 and "1 items, 0 done, 1 failed" in done.stdout and "every item" in done.stderr


# ----------------------------------------------------------------------------- target modes, in-process


@pytest.fixture
def tiny():
    from ascent.shared.models import load_classifier

    return load_classifier("tiny", device="cpu")


def loaded_batch(n: int, labels: list[int | None]):
    from ascent.shared.jobs.base import Loaded
    from ascent.shared.spec import Item

    rng = np.random.default_rng(1)
    return [
        Loaded(
            Item(f"{i:06d}", f"file:///x/{i}.png", labels[i]),
            rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
            labels[i],
        )
        for i in range(n)
    ]


def test_random_targets_are_seeded_never_the_label_nor_the_prediction_and_do_not_depend_on_the_batch(tiny):
    from ascent.shared.jobs.fool import choose_targets
    from ascent.shared.tensors import to_tensor

    batch = loaded_batch(6, [1, 2, 3, None, 5, 6])
    images = to_tensor([x.image for x in batch])
    first = choose_targets(tiny, images, batch, "random", seed=7)
    assert first == choose_targets(tiny, images, batch, "random", seed=7)
    assert first != choose_targets(tiny, images, batch, "random", seed=8)
    halves = choose_targets(tiny, images[:3], batch[:3], "random", 7) + choose_targets(
        tiny, images[3:], batch[3:], "random", 7
    )
    assert halves == first
    with torch.no_grad():
        preds = tiny(images).argmax(1).tolist()
    assert all(t != x.label and t != p for t, x, p in zip(first, batch, preds, strict=True))


def test_untargeted_moves_away_from_the_label_where_it_is_known(tiny):
    from ascent.shared.kernels import fool
    from ascent.shared.tensors import to_tensor

    batch = loaded_batch(4, [None, None, None, None])
    images = to_tensor([x.image for x in batch])
    with torch.no_grad():
        preds = tiny(images).argmax(1).tolist()
    labels = [preds[0], (preds[1] + 1) % 1000, None, preds[3]]  # item 1's prediction is already wrong
    result = fool(tiny, images, None, labels=labels, max_iters=30)
    assert result.iterations[1] == 0 and bool(result.fooled[1])  # away from its label from the start
    for i in (0, 3):
        assert bool(result.fooled[i]) == (int(result.pred_after[i]) != labels[i])


def test_per_item_targets_from_a_csv_are_honoured(tmp_path):
    from ascent.producer.inputs import enumerate_inputs
    from ascent.shared.jobs import JOBS
    from ascent.shared.spec import JobSpec, Shard
    from ascent.worker.handler import run_shard
    from ascent.worker.runtime import WorkerRuntime
    from tests.faults_util import write_png

    for i in range(3):
        write_png(tmp_path / "in" / f"{i}.png", seed=i)
    with open(tmp_path / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [
                ["path", "label", "target"],
                ["in/0.png", "1", "7"],
                ["in/1.png", "", "stingray"],
                ["in/2.png", "goldfish", "9"],
            ]
        )
    from ascent.shared.catalog import imagenet

    items = enumerate_inputs([str(tmp_path / "list.csv")], resolve=imagenet().lookup)
    assert [(i.label, i.target, i.path) for i in items] == [
        (1, 7, "in/0.png"),
        (None, 6, "in/1.png"),
        (1, 9, "in/2.png"),
    ]
    store = FileStore(tmp_path / "store")
    spec = JobSpec(
        "fool", "csv", store.uri, model="tiny", params={"target": "per-item", "max_iters": 2}, inputs=("x",), size=32
    ).validate()
    assert JOBS["fool"].plan_items(spec.params, items) == items
    runtime = WorkerRuntime.build(Settings(store=store.uri, input_roots=(str(tmp_path),)))
    record = run_shard(spec, Shard("shard-00000", tuple(items)), store, runtime, "cpu")
    assert [i.result["target"] for i in record.items] == [7, 6, 9]


# ----------------------------------------------------------------------------- export


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_export_writes_an_imagefolder_an_npz_and_webdataset_shards_with_the_runs_own_bytes(
    tmp_path, models, image_folder
):
    import torchvision
    import webdataset

    store = FileStore(tmp_path / "store")
    args = ["run", "fool", "--images", str(image_folder), "--target", "least-likely", "--max-iters", "20"]
    args += [*model_args(models, "export"), "--store", store.uri, "--run-id", "ex"]
    assert run_cli(args, tmp_path).returncode == 0
    rows = {
        r["item_id"]: r for r in (json.loads(x) for x in (store.root / "runs/ex/items.jsonl").read_text().splitlines())
    }
    outputs = {i: (store.root / f"runs/ex/outputs/{i}.png").read_bytes() for i in rows}

    folder = tmp_path / "as-folder"
    done = run_cli(
        ["export", "ex", "--format", "imagefolder", "--to", str(folder), "--all", "--store", store.uri], tmp_path
    )
    assert done.returncode == 0 and "exported 8 items" in done.stdout, done.stderr
    table = list(csv.DictReader(io.StringIO((folder / "labels.csv").read_text())))
    assert len(table) == 8 and sorted(r["path"] for r in table)[0] == "cat/cat-0.png"
    dataset = torchvision.datasets.ImageFolder(str(folder))
    by_path = {r["path"]: r for r in table}
    for path, index in dataset.samples:
        row = by_path[Path(path).relative_to(folder).as_posix()]
        assert dataset.classes[index] == row["label_name"] == CLASSES[int(row["label"])]
        assert Path(path).read_bytes() == outputs[row["item_id"]]  # byte-identical to the run's output

    assert (
        run_cli(
            ["export", "ex", "--format", "npz", "--to", str(tmp_path / "as-npz"), "--all", "--store", store.uri],
            tmp_path,
        ).returncode
        == 0
    )
    with np.load(tmp_path / "as-npz" / "export.npz") as npz:
        assert npz["X"].shape == (8, SIZE, SIZE, 3) and npz["X"].dtype == np.uint8
        for k, item_id in enumerate(npz["item_id"]):
            assert np.array_equal(npz["X"][k], np.asarray(Image.open(io.BytesIO(outputs[str(item_id)]))))
            assert (npz["y"][k], npz["target"][k], bool(npz["fooled"][k])) == (
                rows[str(item_id)]["label"],
                rows[str(item_id)]["target"],
                rows[str(item_id)]["fooled"],
            )

    assert (
        run_cli(
            [
                "export",
                "ex",
                "--format",
                "webdataset",
                "--to",
                str(tmp_path / "as-wds"),
                "--all",
                "--shard-items",
                "3",
                "--store",
                store.uri,
            ],
            tmp_path,
        ).returncode
        == 0
    )
    shards = sorted(str(p) for p in (tmp_path / "as-wds").glob("export-*.tar"))
    assert len(shards) == 3
    seen = {}
    for sample in webdataset.WebDataset(shards, shardshuffle=False):
        meta = json.loads(sample["json"])
        assert sample["png"] == outputs[meta["item_id"]] and meta["label"] == rows[meta["item_id"]]["label"]
        seen[meta["item_id"]] = meta
    assert sorted(seen) == sorted(rows)
