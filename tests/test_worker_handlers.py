"""The worker: the plain shard handler on a real file store with the tiny model, the thin task, the app's
configuration."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from ascent.shared.jobs.style import group_by_shape
from ascent.shared.keys import run_key
from ascent.shared.messages import task_message
from ascent.shared.models import load_classifier
from ascent.shared.queue import RUN_SHARD_TASK
from ascent.shared.records import DONE, FAILED
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec, Shard
from ascent.shared.store import FileStore
from ascent.worker.app import worker_app as create_app
from ascent.worker.handler import record_shard_skipped
from ascent.worker.handler import run_shard as run_shard_record
from ascent.worker.runtime import WorkerRuntime


class OrderedFileStore(FileStore):
    """A real FileStore that also remembers the order of its writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        super().put(key, data, content_type)
        self.puts.append(key)


@pytest.fixture
def store(tmp_path: Path) -> OrderedFileStore:
    return OrderedFileStore(tmp_path / "store")


@pytest.fixture
def settings(store: OrderedFileStore, tmp_path: Path) -> Settings:
    return Settings(store=store.uri, input_roots=(str(tmp_path),))  # the tests' inputs are there


def run_shard(spec, shard, store, settings, device=None, **options) -> dict:
    """The handler with a runtime built from ``settings``, its record as JSON."""
    return run_shard_record(spec, shard, store, runtime_for(settings), device, **options).to_dict()


_runtimes: dict[Settings, WorkerRuntime] = {}


def runtime_for(settings: Settings) -> WorkerRuntime:
    return _runtimes.setdefault(settings, WorkerRuntime.build(settings))


def get_model(name, weights, device):
    return runtime_for(Settings()).models.get(name, weights, device)


def png(path: Path, height: int, width: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path.as_uri()


def make_spec(store: FileStore, kind: str, params: dict, size: int = 32, **changes) -> JobSpec:
    fields = dict(kind=kind, run_id="run-1", store=store.uri, model="tiny", params=params, inputs=("x",), size=size)
    fields.update(changes)
    return JobSpec(**fields).validate()


def decode(store: FileStore, key: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(store.get(key))))


def by_id(record: dict) -> dict[str, dict]:
    return {i["item_id"]: i for i in record["items"]}


@pytest.fixture
def good_and_bad(tmp_path: Path) -> Shard:
    images = tmp_path / "in"
    bad = images / "notes.png"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("this is text, not a PNG")
    return Shard(
        "shard-00000",
        (
            Item("000000", png(images / "a.png", 40, 48, seed=1), label=3),
            Item("000001", bad.as_uri()),
            Item("000002", png(images / "sub dir" / "b ü.png", 64, 32, seed=2)),
            Item("000003", (images / "missing.png").as_uri()),
        ),
    )


def test_a_fool_shard_writes_inputs_and_outputs_then_the_record_last(store, settings, good_and_bad):
    spec = make_spec(store, "fool", {"target": 6, "max_iters": 3})

    record = run_shard(spec, good_and_bad, store, settings, device="cpu", info={"worker": "w@h"})

    assert store.puts[-1] == run_key("run-1", "records", "shard-00000.json")
    assert store.get_json(store.puts[-1]) == record
    assert record["worker"] == "w@h" and record["device"] == "cpu" and record["seconds"] >= 0
    # the process's peak memory so far, for sizing workers (the process that ran the shard is this one)
    assert record["peak_rss_mb"] >= psutil.Process().memory_info().rss / 2**20 - 1
    assert "gpu_peak_mb" not in record
    items = by_id(record)
    for item_id in ("000000", "000002"):
        item = items[item_id]
        assert item["status"] == DONE
        assert item["output"] == store.url(run_key("run-1", "outputs", f"{item_id}.png"))
        assert decode(store, run_key("run-1", "outputs", f"{item_id}.png")).shape == (32, 32, 3)
        assert decode(store, run_key("run-1", "inputs", f"{item_id}.png")).shape == (32, 32, 3)
        assert item["target"] == 6 and isinstance(item["fooled"], bool) and isinstance(item["iterations"], int)
        assert {"pred_before", "pred_after", "l2", "linf"} <= set(item)
    assert items["000000"]["label"] == 3


def test_a_bad_item_fails_with_an_error_naming_it_while_the_others_complete(store, settings, good_and_bad):
    spec = make_spec(store, "fool", {"target": 6, "max_iters": 2})

    items = by_id(run_shard(spec, good_and_bad, store, settings, device="cpu"))

    assert [items[i]["status"] for i in sorted(items)] == [DONE, FAILED, DONE, FAILED]
    assert items["000001"]["error"].startswith("item 000001 (")
    assert "text file, not an image" in items["000001"]["error"]
    assert "000003" in items["000003"]["error"] and "does not exist" in items["000003"]["error"]
    assert items["000001"]["output"] is None
    assert not store.exists(run_key("run-1", "outputs", "000001.png"))


def test_the_output_pngs_hold_exactly_what_the_fool_kernel_measured(store, settings, good_and_bad):
    spec = make_spec(store, "fool", {"target": 6, "max_iters": 5})
    items = by_id(run_shard(spec, good_and_bad, store, settings, device="cpu"))
    model = load_classifier("tiny", device="cpu")
    for item_id in ("000000", "000002"):
        image = torch.from_numpy(decode(store, run_key("run-1", "outputs", f"{item_id}.png"))).permute(2, 0, 1)
        with torch.no_grad():
            pred = int(model(image[None].float() / 255).argmax(1))
        assert pred == items[item_id]["pred_after"]


def test_a_redelivered_shard_is_skipped_and_returns_the_recorded_result(store, settings, good_and_bad):
    spec = make_spec(store, "fool", {"target": 6, "max_iters": 2})
    first = run_shard(spec, good_and_bad, store, settings, device="cpu")
    writes = len(store.puts)

    again = run_shard(spec, good_and_bad, store, settings, device="cpu")

    assert again == first
    assert len(store.puts) == writes  # nothing rewritten


def test_an_untargeted_fool_records_no_target(store, settings, tmp_path):
    shard = Shard("shard-00001", (Item("000000", png(tmp_path / "a.png", 32, 32)),))
    record = run_shard(make_spec(store, "fool", {"target": None, "max_iters": 2}), shard, store, settings, "cpu")
    assert record["items"][0]["status"] == DONE and record["items"][0]["target"] is None


def test_npz_items_are_read_by_row(store, settings, tmp_path):
    path = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8), y=np.array([1, 2, 3]))
    shard = Shard("shard-00000", tuple(Item(f"00000{i}", f"{path.as_uri()}#{i}", i + 1) for i in range(3)))
    record = run_shard(make_spec(store, "saliency", {}), shard, store, settings, "cpu")
    assert [i["status"] for i in record["items"]] == [DONE] * 3
    assert [i["class_id"] for i in record["items"]] == [1, 2, 3]  # the true class is what is explained


def test_saliency_maps_are_grayscale_pngs_normalised_per_image(store, settings, good_and_bad):
    items = by_id(run_shard(make_spec(store, "saliency", {}), good_and_bad, store, settings, "cpu"))
    model = get_model("tiny", None, torch.device("cpu"))
    for item_id in ("000000", "000002"):
        saliency = decode(store, run_key("run-1", "outputs", f"{item_id}.png"))
        assert saliency.shape == (32, 32) and saliency.max() == 255
        assert items[item_id]["saliency"] == items[item_id]["output"]
        assert 0 <= items[item_id]["pred"] < 1000
    seen = torch.from_numpy(decode(store, run_key("run-1", "inputs", "000002.png"))).permute(2, 0, 1)
    with torch.no_grad():
        pred = int(model(seen[None].float() / 255).argmax(1))
    assert items["000002"]["class_id"] == pred  # no label: the prediction is explained
    assert items["000000"]["class_id"] == 3  # the label


def test_class_visualisations_are_scored_as_stored(store, settings):
    shard = Shard(
        "shard-00000",
        (Item("000000", "class:76", 76), Item("000001", "class:9999"), Item("000002", "class:1")),
    )
    spec = make_spec(store, "classviz", {"classes": [76, 1], "iters": 3}, inputs=())

    items = by_id(run_shard(spec, shard, store, settings, "cpu"))

    assert items["000001"]["status"] == FAILED and "class:9999" in items["000001"]["error"]
    model = get_model("tiny", None, torch.device("cpu"))
    for item_id, class_id in (("000000", 76), ("000002", 1)):
        item = items[item_id]
        assert item["status"] == DONE and item["class_id"] == class_id
        image = torch.from_numpy(decode(store, run_key("run-1", "outputs", f"{item_id}.png"))).permute(2, 0, 1)
        with torch.no_grad():
            logits = model(image[None].float() / 255)
        assert int(logits.argmax(1)) == item["pred"]
        assert float(logits[0, class_id]) == pytest.approx(item["score"], rel=1e-5, abs=1e-5)


def test_style_contents_of_different_shapes_run_in_shape_groups(store, settings, tmp_path):
    style = png(tmp_path / "style.png", 50, 70, seed=9)
    shard = Shard(
        "shard-00000",
        (
            Item("000000", png(tmp_path / "wide.png", 40, 60, seed=1)),
            Item("000001", png(tmp_path / "tall.png", 60, 40, seed=2)),
            Item("000002", png(tmp_path / "wide2.png", 20, 30, seed=3)),
        ),
    )
    spec = make_spec(
        store,
        "style",
        {"style": [style], "style_size": 24, "iters": 2, "style_layers": [1, 3], "style_weights": [1.0, 1.0]},
        size=20,
    )

    items = by_id(run_shard(spec, shard, store, settings, "cpu"))

    assert [items[i]["status"] for i in sorted(items)] == [DONE] * 3
    shapes = [decode(store, run_key("run-1", "outputs", f"00000{i}.png")).shape for i in range(3)]
    assert shapes == [(20, 30, 3), (30, 20, 3), (20, 30, 3)]
    assert decode(store, run_key("run-1", "inputs", "style-0.png")).shape == (24, 33, 3)
    for item in items.values():
        assert item["loss"] == pytest.approx(item["content_loss"] + item["style_loss"] + item["tv_loss"], rel=1e-4)


def test_an_unreadable_style_image_fails_every_item_with_the_reason(store, settings, tmp_path):
    shard = Shard("shard-00000", (Item("000000", png(tmp_path / "c.png", 20, 20)),))
    spec = make_spec(store, "style", {"style": [(tmp_path / "nope.jpg").as_uri()], "iters": 1}, size=16)
    record = run_shard(spec, shard, store, settings, "cpu")
    assert record["items"][0]["status"] == FAILED
    assert "style image 0" in record["items"][0]["error"] and "does not exist" in record["items"][0]["error"]


def test_an_unloadable_checkpoint_fails_every_item_of_the_shard_with_the_reason(
    store, settings, good_and_bad, tmp_path
):
    checkpoint = tmp_path / "broken.pth"
    checkpoint.write_bytes(b"not a checkpoint")
    spec = make_spec(store, "fool", {"target": 6}, weights=str(checkpoint))

    record = run_shard(spec, good_and_bad, store, settings, "cpu")

    assert [i["status"] for i in record["items"]] == [FAILED] * 4
    assert all("--weights" in i["error"] and "not a checkpoint" in i["error"] for i in record["items"])
    assert all(i["item_id"] in i["error"] for i in record["items"])
    assert store.puts == [run_key("run-1", "records", "shard-00000.json")]


def test_images_are_grouped_by_shape_in_order_of_first_appearance():
    arrays = [np.zeros(s, np.uint8) for s in ((2, 3, 3), (3, 2, 3), (2, 3, 3), (1, 1, 3))]
    assert group_by_shape(arrays) == [[0, 2], [1], [3]]


def test_models_load_once_per_process():
    cpu = torch.device("cpu")
    assert get_model("tiny", None, cpu) is get_model("tiny", None, cpu)


# ----------------------------------------------------------------------------- the task and the app


def test_the_task_runs_a_valid_message_through_the_handler(store, settings, good_and_bad, tmp_path):
    from ascent.producer.submit import record_run
    from ascent.shared.spec import Manifest

    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0", store=store.uri, input_roots=(str(tmp_path),)))
    spec = make_spec(store, "fool", {"target": 6, "max_iters": 2})
    record_run(spec, Manifest(spec.run_id, (good_and_bad,)), store)  # the task runs only what the store plans

    result = app.tasks[RUN_SHARD_TASK].apply(args=[task_message(spec, good_and_bad)])

    assert result.state == "SUCCESS"
    assert result.result == {"run_id": "run-1", "shard_id": "shard-00000", "done": 2, "failed": 2}
    assert store.exists(run_key("run-1", "records", "shard-00000.json"))


@pytest.mark.parametrize(
    "message",
    [{"version": 99}, {"version": 1, "spec": {"kind": "fool"}, "shard": {}}, "not a dict", None],
)
def test_a_malformed_message_is_rejected_without_requeue(message):
    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0"))
    result = app.tasks[RUN_SHARD_TASK].apply(args=[message])
    assert result.state == "REJECTED"
    assert result.result.requeue is False


def test_the_app_is_json_only_with_late_acks_prefetch_one_and_limits_below_the_visibility_timeout():
    conf = create_app(Settings(broker_url="redis://127.0.0.1:1/0")).conf
    assert conf.accept_content == ["json"] and conf.task_serializer == conf.result_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result and conf.broker_connection_retry_on_startup
    assert conf.worker_send_task_events and conf.task_send_sent_event
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.result_backend_transport_options["visibility_timeout"] == conf.visibility_timeout == visibility
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility


def test_time_limits_out_of_order_are_refused():
    with pytest.raises(ValueError, match="soft_time_limit < time_limit < visibility_timeout"):
        create_app(Settings(), soft_time_limit=10, time_limit=20, visibility_timeout=15)


def test_a_late_skip_keeps_the_results_another_attempt_recorded(store, settings, good_and_bad):
    spec = make_spec(store, "fool", {"target": 6, "max_iters": 2})
    first = run_shard(spec, good_and_bad, store, settings, device="cpu")  # attempt A: done

    # attempt B of the redelivered shard had passed the record check, then found the run precise enough
    late = record_shard_skipped(spec, good_and_bad, store, "precision reached").to_dict()

    assert late == first
    assert store.get_json(run_key("run-1", "records", "shard-00000.json")) == first


def test_the_progress_estimate_spans_the_shape_groups_of_a_style_shard(store, settings, tmp_path):
    from ascent.shared.jobs import get_job
    from ascent.shared.kernels.loop import iteration_hook
    from ascent.worker.handler import ShardContext
    from ascent.worker.watch import ShardWatch

    style = png(tmp_path / "style.png", 30, 30, seed=9)
    shapes = [(40, 60), (60, 40), (20, 30)]  # groups: items 0 and 2 (wide), then item 1 (tall)
    items = [Item(f"00000{i}", png(tmp_path / f"c{i}.png", h, w, seed=i)) for i, (h, w) in enumerate(shapes)]
    params = {"style": [style], "style_size": 16, "iters": 2, "style_layers": [1], "style_weights": [1.0]}
    spec = make_spec(store, "style", params, size=16)
    runtime = runtime_for(settings)
    model = runtime.models.for_spec(spec, torch.device("cpu"), runtime.reader)
    ctx = ShardContext(spec, model, torch.device("cpu"), store, runtime.reader, runtime.models)
    job = get_job("style", runtime.jobs)
    watch = ShardWatch(store, "run-1", "shard-00000", 3)
    seen: list[float] = []

    def hook(*args: int) -> None:
        watch(*args)
        seen.append(watch.finished)

    with iteration_hook(hook):
        job.run(ctx, [job.load(ctx, item) for item in items])
    assert seen == [0.0, 1.0, 2.0, 2.5]  # 2 of 3 items, then the third: each group its share
