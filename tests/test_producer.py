"""The producer: inputs -> items with stable ids, shards, validation before anything is enqueued, and
submission to a real Redis (no torch anywhere on this side)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import redis
from PIL import Image

from ascent.producer.cli import main
from ascent.producer.inputs import enumerate_inputs, folder_images
from ascent.producer.submit import plan_run, submit
from ascent.shared.errors import InvalidSpec
from ascent.shared.jobs import JOBS
from ascent.shared.keys import run_key
from ascent.shared.messages import parse_task_message
from ascent.shared.queue import DEFAULT_QUEUE, RUN_SHARD_TASK, create_app
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec, item_id
from ascent.shared.store import FileStore

REPO = Path(__file__).resolve().parents[1]


def write_png(path: Path, size: tuple[int, int] = (20, 16), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_png(root / "b.png")
    write_png(root / "A.JPG")  # any case
    write_png(root / "sub" / "c.webp")
    write_png(root / "sub" / "deeper" / "a.tiff")
    write_png(root / ".hidden" / "x.png")  # hidden folders are skipped
    write_png(root / ".y.png")  # hidden files too
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def restore_signals():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def spec_for(store: FileStore, **changes) -> JobSpec:
    fields = dict(kind="fool", run_id="r1", store=store.uri, model="tiny", params={"target": 6}, inputs=("x",))
    fields.update(changes)
    return JobSpec(**fields)


# ----------------------------------------------------------------------------- inputs


def test_a_folder_is_read_recursively_in_sorted_relative_path_order_skipping_hidden_and_non_images(
    image_folder,
):
    relative = [p.relative_to(image_folder).as_posix() for p in folder_images(image_folder)]
    assert relative == ["A.JPG", "b.png", "sub/c.webp", "sub/deeper/a.tiff"]


def test_item_ids_are_zero_padded_positions_and_stable_across_calls(image_folder):
    first = enumerate_inputs([str(image_folder)])
    second = enumerate_inputs([str(image_folder)])
    assert first == second
    assert [i.item_id for i in first] == ["000000", "000001", "000002", "000003"]
    assert all(i.source.startswith("file:///") and i.label is None for i in first)
    assert item_id(1_234_567) == "1234567"


def test_several_inputs_keep_the_order_given(image_folder, tmp_path):
    single = write_png(tmp_path / "my photo ü.png")
    items = enumerate_inputs([str(single), str(image_folder)])
    assert items[0].source == single.as_uri()
    assert "%20" in items[0].source  # a URI, never a raw file name
    assert len(items) == 5


def test_an_npz_gives_one_item_per_row_with_its_label(assets):
    npz = assets / "cs231n" / "datasets" / "imagenet_val_25.npz"
    items = enumerate_inputs([str(npz)])
    y = np.load(npz, allow_pickle=False)["y"]
    assert len(items) == 25
    assert [i.source for i in items[:2]] == [f"{npz.as_uri()}#0", f"{npz.as_uri()}#1"]
    assert [i.label for i in items] == [int(v) for v in y]


def test_an_npz_without_x_is_an_invalid_input(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(InvalidSpec, match="no array named X") as err:
        enumerate_inputs([str(path)])
    assert err.value.field == "inputs"


def test_a_missing_input_names_the_inputs_field(tmp_path):
    with pytest.raises(InvalidSpec, match="does not exist") as err:
        enumerate_inputs([str(tmp_path / "nope")])
    assert err.value.field == "inputs"


def test_a_folder_without_images_names_the_inputs_field(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("hi")
    with pytest.raises(InvalidSpec, match="no images") as err:
        enumerate_inputs([str(tmp_path / "empty")])
    assert err.value.field == "inputs"


def test_classviz_items_are_class_references_labelled_with_their_class():
    params = JOBS["classviz"].Params.from_dict({"classes": [76, 113]})
    expected = [Item("000000", "class:76", 76), Item("000001", "class:113", 113)]
    assert JOBS["classviz"].plan_items(params, []) == expected


# ----------------------------------------------------------------------------- planning


def test_a_run_is_split_into_shards_of_shard_size_in_item_order(tmp_path):
    items = [Item(item_id(i), f"file:///x/{i}.png") for i in range(25)]
    manifest = plan_run(spec_for(FileStore(tmp_path)), items, 10).to_dict()
    assert manifest["run_id"] == "r1" and manifest["n_items"] == 25
    assert [s["shard_id"] for s in manifest["shards"]] == ["shard-00000", "shard-00001", "shard-00002"]
    assert [len(s["items"]) for s in manifest["shards"]] == [10, 10, 5]
    flat = [i["item_id"] for s in manifest["shards"] for i in s["items"]]
    assert flat == [i.item_id for i in items]
    assert manifest["shards"][0]["items"][0] == {
        "item_id": "000000",
        "source": "file:///x/0.png",
        "label": None,
    }


@pytest.mark.parametrize("shard_size", [0, -1, 1.5, True])
def test_a_bad_shard_size_is_refused(tmp_path, shard_size):
    with pytest.raises(InvalidSpec) as err:
        plan_run(spec_for(FileStore(tmp_path)), [Item("000000", "file:///x.png")], shard_size)
    assert err.value.field == "shard_size"


# ----------------------------------------------------------------------------- submission


def queued(url: str) -> list[dict]:
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(m) for m in client.lrange(DEFAULT_QUEUE, 0, -1)]
    finally:
        client.close()


def test_submit_records_spec_and_manifest_then_enqueues_one_json_task_per_shard(tmp_path, redis_url, image_folder):
    store = FileStore(tmp_path / "store")
    app = create_app(Settings(broker_url=redis_url, store=store.uri))
    spec = spec_for(store, inputs=(image_folder.as_uri(),))
    items = enumerate_inputs([str(image_folder)])
    try:
        manifest = submit(spec, items, 3, store, app).to_dict()
    finally:
        app.close()

    assert store.get_json(run_key("r1", "manifest.json")) == manifest
    assert store.get_json(run_key("r1", "spec.json"))["params"] == {"target": 6, **_fool_defaults()}
    messages = queued(redis_url)
    assert len(messages) == len(manifest["shards"]) == 2
    for message, shard in zip(reversed(messages), manifest["shards"], strict=True):  # LPUSH: newest first
        assert message["headers"]["task"] == RUN_SHARD_TASK
        assert message["content-type"] == "application/json"
        body = json.loads(__import__("base64").b64decode(message["body"]))
        args = body[0]
        got_spec, got_shard = parse_task_message(args[0])
        assert got_spec.run_id == "r1" and got_shard.to_dict() == shard


def _fool_defaults() -> dict:
    reference = {"lr": 1.0, "max_iters": 100, "extra_iters": 2, "loss": "score", "precision": "fp32"}
    threat = {"norm": "l2-unbounded", "eps": None, "step_size": None, "random_start": False, "restarts": 1}
    beyond = {"until_ci": None, "save_format": "png"}
    return {**reference, **threat, "momentum": 0.0, "early_stop": True, "seed": 0, **beyond}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--model", "alexnet"], "--model alexnet"),  # pretrained weights out of reach offline
        (["--model", "MISSING.pt2"], "model"),
        (["--target", "1000"], "params.target"),
        (["--target", "no such class"], "params.target"),
        (["--images", "MISSING"], "inputs"),
        (["--lr", "-1"], "params.lr"),
        (["--max-iters", "0"], "params.max_iters"),
        (["--size", "8"], "size"),
        (["--weights", "MISSING.pth"], "weights"),
        (["--run-id", "../etc"], "run_id"),
    ],
)
def test_an_invalid_run_exits_2_naming_the_field_before_anything_is_started(
    tmp_path, image_folder, capsys, restore_signals, monkeypatch, args, field
):
    monkeypatch.delenv("ASCENT_BROKER_URL", raising=False)
    store = tmp_path / "store"
    argv = [
        "run",
        "fool",
        "--images",
        str(image_folder),
        "--target",
        "6",
        "--store",
        store.as_uri(),
        "--model",
        "tiny",
    ]
    argv += [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    assert main(argv) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ascent: error: {field}:"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before  # nothing started
    assert not store.exists()  # nothing written


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--model", "MISSING.pt2"], "model"),
        (["--target", "1000"], "params.target"),
        (["--images", "MISSING"], "inputs"),
        (["--extra-iters", "-2"], "params.extra_iters"),
    ],
)
def test_an_invalid_submit_enqueues_nothing(tmp_path, image_folder, redis_url, capsys, restore_signals, args, field):
    store = tmp_path / "store"
    argv = ["submit", "fool", "--images", str(image_folder), "--target", "6", "--store", store.as_uri()]
    argv += ["--broker", redis_url, *[a.replace("MISSING", str(tmp_path / "missing")) for a in args]]

    assert main(argv) == 2

    assert capsys.readouterr().err.startswith(f"ascent: error: {field}:")
    assert queued(redis_url) == []
    assert not store.exists()


def test_a_valid_submit_prints_the_run_id_last(tmp_path, image_folder, redis_url, capsys, restore_signals):
    argv = ["submit", "saliency", "--images", str(image_folder), "--store", (tmp_path / "s").as_uri()]
    argv += ["--broker", redis_url, "--run-id", "sal-1", "--shard-size", "2"]

    assert main(argv) == 0

    assert capsys.readouterr().out.splitlines()[-1] == "sal-1"
    assert len(queued(redis_url)) == 2


def test_a_run_id_that_exists_is_refused(tmp_path, image_folder, redis_url, capsys, restore_signals):
    argv = ["submit", "saliency", "--images", str(image_folder), "--store", (tmp_path / "s").as_uri()]
    argv += ["--broker", redis_url, "--run-id", "again"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "ascent: error: run_id: run 'again' already exists" in capsys.readouterr().err
    assert len(queued(redis_url)) == 1


def test_the_producer_modules_import_neither_torch_nor_the_worker():
    modules = sorted(p.stem for p in (REPO / "producer").glob("*.py") if p.stem != "__main__")
    code = (
        f"import importlib, sys; [importlib.import_module('ascent.producer.' + m) for m in {modules!r}]; "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "assert not [m for m in sys.modules if m.startswith('ascent.worker')], 'the worker was imported'; "
        "import ascent.worker.app, ascent.worker.tasks; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO.parent, timeout=120)
