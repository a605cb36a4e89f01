"""Operating runs: ``ascent runs``, ``ascent cancel`` (in the worker's handler and on the command line),
``ascent classes``, progress markers, ``ascent exporter`` and the errors that say the next step."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
import requests
from PIL import Image

from ascent.producer.cli import main
from ascent.producer.processes import free_port, stop_groups
from ascent.shared.control import request_cancel, write_progress
from ascent.shared.keys import RunKeys
from ascent.shared.records import ItemRecord, ShardRecord
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec, Manifest, Shard
from ascent.shared.store import FileStore, MemoryStore, Store
from tests.test_cli import clean_environment  # noqa: F401 (autouse: no broker or store from the environment)


def make_run(store: Store, run_id: str, statuses: list[str | None], created_at: float | None = None) -> None:
    """A fool run of one-item shards recorded as a worker would: ``None`` leaves an item pending."""
    items = [Item(f"{i:06d}", f"file:///img/{i}.png", 1) for i in range(len(statuses))]
    spec = JobSpec("fool", run_id, store.uri, model="tiny", params={"target": 6}, inputs=("x",)).validate()
    keys = RunKeys(run_id)
    store.put_json(keys.spec, spec.to_dict())
    shards = tuple(Shard(f"shard-{i:05d}", (item,)) for i, item in enumerate(items))
    store.put_json(keys.manifest, Manifest(run_id, shards, created_at).to_dict())
    for shard, status in zip(shards, statuses, strict=True):
        item = shard.items[0]
        if status is None:
            continue
        if status == "done":
            record = ItemRecord.done(item, None, fooled=item.item_id == "000000", iterations=3)
        elif status == "failed":
            record = ItemRecord.failed(item, f"item {item.item_id} ({item.source}): broken")
        elif status == "skipped":
            record = ItemRecord.skipped(item, "precision reached")
        else:
            record = ItemRecord.cancelled(item)
        seconds = 2.0 if status in ("done", "failed") else 0.0  # as the handler records them: not run
        rec = ShardRecord(run_id, shard.shard_id, "fool", (record,), info={"worker": "w1@host", "seconds": seconds})
        store.put_json(keys.record(shard.shard_id), rec.to_dict())


# ----------------------------------------------------------------------------- runs and cancel


def test_runs_lists_the_stores_runs_newest_first_with_their_counts_and_state(tmp_path, capsys):
    store = FileStore(tmp_path / "store")
    make_run(store, "old-done", ["done", "failed"], created_at=1_000.0)
    make_run(store, "mid-failed", ["failed", "failed"], created_at=2_000.0)
    make_run(store, "new-running", ["done", None, None], created_at=3_000.0)
    make_run(store, "newest-cancelled", ["done", "cancelled", None], created_at=4_000.0)
    make_run(store, "until-ci", ["done", "skipped", "skipped"], created_at=500.0)
    request_cancel(store, "newest-cancelled")
    (tmp_path / "store" / "runs" / "half-submitted").mkdir()  # no manifest: left out

    assert main(["runs", "--store", store.uri]) == 0
    lines = capsys.readouterr().out.splitlines()

    header = ["RUN", "KIND", "MODEL", "CREATED", "(UTC)", "ITEMS", "DONE", "FAILED", "CANCELLED", "SKIPPED"]
    assert lines[0].split() == [*header, "PENDING", "STATE"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["newest-cancelled", "new-running", "mid-failed", "old-done", "until-ci"]
    assert rows[0][:4] == ["newest-cancelled", "fool", "tiny", "1970-01-01"] and rows[0][4] == "01:06:40"
    assert [r[5:] for r in rows] == [
        ["3", "1", "0", "1", "0", "1", "cancelled"],
        ["3", "1", "0", "0", "0", "2", "running"],
        ["2", "0", "2", "0", "0", "0", "failed"],
        ["2", "1", "1", "0", "0", "0", "done"],
        ["3", "1", "0", "0", "2", "0", "done"],  # the counts add up to the items
    ]


def test_runs_of_an_empty_store_says_so(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    assert main(["runs", "--store", store.uri]) == 0
    assert capsys.readouterr().out == f"no runs in store {store.uri}\n"


def test_cancel_writes_the_marker_once_and_a_finished_run_is_left_as_it_is(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "running", ["done", None, None])
    make_run(store, "finished", ["done", "failed"])

    assert main(["cancel", "running", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert "run running: cancelled; the 1 items recorded are kept, 2 items no worker was running are recorded" in out
    marker = store.get_json(RunKeys("running").cancel)
    assert marker["requested_at"] <= marker["at"]
    assert main(["cancel", "running", "--store", store.uri]) == 0
    assert "was already cancelled" in capsys.readouterr().out
    assert store.get_json(RunKeys("running").cancel) == marker

    before = {k: store.get(k) for k in store.list("runs/finished/")}
    assert main(["cancel", "finished", "--store", store.uri]) == 0
    assert (
        "run finished has already finished (1 done, 1 failed, 0 cancelled, 0 skipped): nothing to cancel, "
        "nothing changed" in capsys.readouterr().out
    )
    assert {k: store.get(k) for k in store.list("runs/finished/")} == before


def test_a_second_cancel_of_a_run_whose_items_are_all_recorded_cancelled_says_it_was_already_cancelled(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "r", ["done", "cancelled"])
    request_cancel(store, "r")
    assert main(["cancel", "r", "--store", store.uri]) == 0
    assert "run r was already cancelled (1 done, 0 failed, 1 cancelled, 0 skipped" in capsys.readouterr().out


def test_cancel_records_the_shards_no_worker_runs_so_collect_wait_returns_and_a_late_done_still_counts(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "r", ["done", None, None, None])
    now = time.time()
    write_progress(store, "r", "shard-00002", {"worker": "w2@host", "items": 1, "finished": 0.5, "at": now - 5})
    write_progress(store, "r", "shard-00003", {"worker": "gone@host", "items": 1, "finished": 0.5, "at": now - 600})

    assert main(["cancel", "r", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert "2 items no worker was running are recorded cancelled, the workers running the other 1 record" in out
    assert "`ascent resume r` finishes recording it" in out
    assert main(["status", "r", "--store", store.uri]) == 0
    assert "run r: 4 items, 1 done, 0 failed, 1 pending, 2 cancelled" in capsys.readouterr().out

    # the worker running shard-00002 finishes it after all: its done record replaces nothing it should not
    item = Item("000002", "file:///img/2.png", 1)
    done = ShardRecord("r", "shard-00002", "fool", (ItemRecord.done(item, None, fooled=True, iterations=3),))
    store.put_json(RunKeys("r").record("shard-00002"), done.to_dict())
    started = time.monotonic()
    assert main(["collect", "r", "--wait", "--timeout", "30", "--store", store.uri]) == 0
    assert time.monotonic() - started < 10
    assert "run r (fool, tiny): 4 items, 2 done, 0 failed, 0 pending, 2 cancelled" in capsys.readouterr().out


def test_collect_wait_on_a_cancelled_run_whose_workers_are_gone_stops_waiting_and_names_resume(monkeypatch, capsys):
    import ascent.producer.progress as following

    monkeypatch.setattr(following, "STALL_SECONDS", 0.5)  # the wait notices a stall after this long
    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "r", ["done", None, None])
    request_cancel(store, "r")  # its worker died after the cancel: its marker is a minute old
    write_progress(
        store, "r", "shard-00001", {"worker": "gone@host", "items": 1, "finished": 0.5, "at": time.time() - 61}
    )
    started = time.monotonic()
    assert main(["collect", "r", "--wait", "--timeout", "60", "--store", store.uri]) == 1
    assert time.monotonic() - started < 10
    captured = capsys.readouterr()
    assert "run r was cancelled and no worker is running its 2 pending items" in captured.err
    assert "`ascent resume r` records them cancelled; collecting what is recorded" in captured.err
    assert "run r (fool, tiny): 3 items, 1 done, 0 failed, 2 pending" in captured.out


@pytest.mark.parametrize(
    ("statuses", "code"),
    [(["cancelled", "cancelled"], 1), (["failed", "cancelled", "cancelled"], 1), (["done", "cancelled"], 0)],
)
def test_collect_exits_1_when_no_item_is_done_and_some_failed_or_were_cancelled(statuses, code, capsys):
    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "r", statuses)
    request_cancel(store, "r")
    assert main(["collect", "r", "--store", store.uri]) == code
    err = capsys.readouterr().err
    assert ("ascent: no item of run r is done" in err) == bool(code)


@pytest.mark.parametrize("command", ["status", "collect", "cancel"])
def test_an_unknown_run_is_named_with_its_store_and_how_to_list_the_runs(command, capsys):
    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "real", ["done"])
    assert main([command, "bogus", "--store", store.uri]) == 1
    err = capsys.readouterr().err
    assert err == f"ascent: error: no run 'bogus' in store {store.uri} (`ascent runs` lists them)\n"


def test_status_shows_cancelled_items_rate_and_eta_and_each_workers_numbers(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "r", ["done", "done", "cancelled", None])
    assert main(["status", "r", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert "run r: 4 items, 2 done, 0 failed, 1 pending, 1 cancelled" in out
    assert "  w1@host: 2 items, 0.50 images/s, last seen " in out  # 2 one-item shards run, 2.0 s each
    assert "images/s, ETA " in out


def test_rates_count_the_images_run_not_those_skipped_or_cancelled_and_skipped_shows_with_cancelled(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "r", ["done", "failed", "skipped", "cancelled", "cancelled", None])
    request_cancel(store, "r")
    assert main(["status", "r", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert "run r: 6 items, 1 done, 1 failed, 1 pending, 2 cancelled, 1 skipped" in out
    assert "  w1@host: 2 items, 0.50 images/s" in out
    rate = float(out.split("progress: 5/6 items, ")[1].split(" images/s")[0])
    assert 0.5 <= rate <= 1.0  # 2 images in the ~2 s since the first shard started; not 5 items
    assert "ETA" not in out  # what is left of a cancelled run is recorded cancelled, not run

    make_run(store, "s", ["done", "skipped", "skipped", "cancelled"])
    assert main(["collect", "s", "--wait", "--store", store.uri]) == 0
    captured = capsys.readouterr()
    assert "run s (fool, tiny): 4 items, 1 done, 0 failed, 0 pending, 1 cancelled, 2 skipped" in captured.out
    assert "cancelled=1" in captured.err and "skipped=2" in captured.err  # the progress bar's postfix


class CountingStore(MemoryStore):
    """A memory store that notes every key read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads: list[str] = []

    def get(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get(key)


def test_the_exporter_reads_the_records_of_the_newest_runs_only_once_and_rates_count_images_run():
    from ascent.producer.exporter import AscentCollector

    store = CountingStore(uuid.uuid4().hex)
    make_run(store, "old", ["done", "done"], created_at=1_000.0)
    make_run(store, "new", ["done", "failed", "cancelled", "skipped"], created_at=2_000.0)
    store.reads.clear()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in AscentCollector(store, Settings(), [], max_runs=1).collect()
        for s in family.samples
    }
    assert not [k for k in store.reads if k.startswith("runs/old/records/")]
    new_records = [k for k in store.reads if k.startswith("runs/new/records/")]
    assert sorted(new_records) == sorted(set(new_records)) and len(new_records) == 4  # each read once
    assert samples[("ascent_run_items", (("kind", "fool"), ("run", "new"), ("state", "skipped")))] == 1
    assert samples[("ascent_run_fooled", (("run", "new"),))] == 1
    # 2 images run in the 2.0 s from the first shard's start to the last record: 1/s, not 4 items / 2 s
    assert samples[("ascent_images_per_second", (("run", "new"),))] == pytest.approx(1.0, rel=0.2)


# ----------------------------------------------------------------------------- the worker's side


@pytest.fixture
def shard_setup(tmp_path):
    from tests.test_worker_handlers import make_spec, png

    store = FileStore(tmp_path / "store")
    settings = Settings(store=store.uri, input_roots=(str(tmp_path),))
    items = tuple(Item(f"{i:06d}", png(tmp_path / "in" / f"{i}.png", 16, 16, seed=i)) for i in range(2))
    return store, settings, make_spec, Shard("shard-00000", items)


def test_a_queued_shard_of_a_cancelled_run_is_recorded_cancelled_without_loading_the_model(shard_setup):
    from tests.test_worker_handlers import run_shard

    store, settings, make_spec, shard = shard_setup
    # A model that cannot load: had the worker tried, the items would be recorded failed.
    spec = make_spec(store, "fool", {"target": 6}, model="no_such_model_v9")
    request_cancel(store, spec.run_id)

    record = run_shard(spec, shard, store, settings, device="cpu")

    assert [i["status"] for i in record["items"]] == ["cancelled", "cancelled"]
    assert "kernel_started_at" not in record and not store.exists(RunKeys(spec.run_id).failure)


def test_a_cancel_stops_a_running_kernel_between_iterations(shard_setup):
    from tests.test_worker_handlers import run_shard

    store, settings, make_spec, shard = shard_setup
    spec = make_spec(store, "fool", {"target": 6, "max_iters": 3000}, size=16)  # tiny never gets there
    keys = RunKeys(spec.run_id)
    out: list[dict] = []
    thread = threading.Thread(target=lambda: out.append(run_shard(spec, shard, store, settings, device="cpu")))
    thread.start()
    deadline = time.monotonic() + 60
    while (
        not store.exists(keys.progress(shard.shard_id)) or not store.get_json(keys.progress(shard.shard_id))["finished"]
    ):  # the kernel runs, and reports how far it is
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    marker = request_cancel(store, spec.run_id)
    thread.join(10)

    assert not thread.is_alive(), "the kernel went on after the cancel"
    record = out[0]
    assert [i["status"] for i in record["items"]] == ["cancelled", "cancelled"]
    assert record["kernel_started_at"] < marker["at"]
    progress = store.get_json(keys.progress(shard.shard_id))
    assert progress["items"] == 2 and 0 < progress["finished"] < 2  # an estimate between 0 and the shard


def test_the_ascent_loop_calls_its_iteration_hook_before_each_iteration():
    import torch

    from ascent.shared.kernels.loop import ascend, iteration_hook

    calls: list[tuple[int, int, int, int]] = []

    def stop(t, aux, rows):  # row 0 stops after iteration 1
        return (rows == 0) & (t >= 1)

    x0 = torch.zeros(3, 3, 2, 2)
    with iteration_hook(lambda *args: calls.append(args)):
        ascend(x0, lambda t, x, rows: (x.sum((1, 2, 3)), None), lambda t, x, g, rows: x + g, 3, stop=stop)
    assert calls == [(0, 3, 3, 3), (1, 3, 3, 3), (2, 3, 2, 3), (3, 3, 2, 3)]


# ----------------------------------------------------------------------------- classes and errors


def test_classes_searches_the_names_and_a_misspelt_target_suggests_one(tmp_path, capsys):
    assert main(["classes", "stingr"]) == 0
    assert capsys.readouterr().out == "   6  stingray\n"
    assert main(["classes", "no such thing"]) == 2
    assert "no class name of squeezenet1_1 contains 'no such thing'" in capsys.readouterr().err
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nhotdog\n")
    assert main(["classes", "dog", "--model", "my.pt2", "--class-names", str(names)]) == 0
    assert capsys.readouterr().out == "   1  dog\n   2  hotdog\n"

    image = tmp_path / "cat.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    argv = ["run", "fool", "--images", str(image), "--target", "stingrai", "--model", "tiny"]
    argv += ["--store", tmp_path.as_uri()]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown class name 'stingrai': did you mean 'stingray'?" in err and "`ascent classes PATTERN`" in err


def test_a_submit_to_an_unreachable_broker_names_ascent_resume(tmp_path, capsys):
    image = tmp_path / "cat.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    argv = ["submit", "saliency", "--images", str(image), "--model", "tiny", "--run-id", "lost"]
    argv += ["--broker", f"redis://127.0.0.1:{free_port()}/0", "--store", (tmp_path / "store").as_uri()]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot reach the broker to enqueue run lost" in err
    assert "`ascent resume lost` enqueues what is missing once the broker is back" in err


def test_a_failed_item_is_one_line_naming_its_source_once(shard_setup, tmp_path):
    from ascent.producer.collector import collect, format_summary
    from tests.test_worker_handlers import run_shard

    store, settings, make_spec, shard = shard_setup
    empty = tmp_path / "in" / "empty.png"
    empty.write_bytes(b"")
    shard = Shard(shard.shard_id, (Item("000000", empty.as_uri()),))
    spec = make_spec(store, "saliency", {})
    store.put_json(RunKeys(spec.run_id).spec, spec.to_dict())
    store.put_json(RunKeys(spec.run_id).manifest, Manifest(spec.run_id, (shard,)).to_dict())
    run_shard(spec, shard, store, settings, device="cpu")

    lines = format_summary(collect(store, spec.run_id)).splitlines()
    failure = next(line for line in lines if line.startswith("  000000 "))
    assert failure.count(empty.as_uri()) == 1 and "item 000000" not in failure, failure
    assert failure == f"  000000 {empty.as_uri()}: empty file (0 bytes)"


# ----------------------------------------------------------------------------- exporter


@pytest.mark.integration
def test_the_exporter_serves_run_queue_and_worker_metrics_behind_basic_auth(tmp_path, redis_url):
    from prometheus_client.parser import text_string_to_metric_families

    from ascent.producer.collector import collect
    from ascent.producer.inputs import enumerate_inputs
    from ascent.producer.submit import submit
    from ascent.shared.queue import DEFAULT_QUEUE, create_app

    store = FileStore(tmp_path / "store")
    make_run(store, "finished", ["done", "done", "failed", "cancelled"])
    summary = collect(store, "finished")
    folder = tmp_path / "queued"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"{i}.png")
    app = create_app(Settings(broker_url=redis_url))
    try:  # no worker consumes this broker: the 3 shards stay queued
        spec = JobSpec("saliency", "queued", store.uri, model="tiny", inputs=(folder.as_uri(),))
        submit(spec, enumerate_inputs([str(folder)]), 2, store, app)
    finally:
        app.close()

    port = free_port()
    argv = [sys.executable, "-m", "ascent.producer", "exporter", "--port", str(port), "--basic-auth", "ops:pw-4f1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCENT_")}
    env.update(ASCENT_BROKER_URL=redis_url, ASCENT_STORE=store.uri)
    proc = subprocess.Popen([*argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthcheck", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout and proc.stdout.read()
            time.sleep(0.2)
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{base}/metrics", auth=("ops", "wrong"), timeout=10).status_code == 401
        text = requests.get(f"{base}/metrics", auth=("ops", "pw-4f1"), timeout=30).text
    finally:
        stop_groups([proc], grace=5)

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def items(run: str, kind: str, state: str) -> float:
        return samples[("ascent_run_items", (("kind", kind), ("run", run), ("state", state)))]

    for state in ("done", "failed", "cancelled", "pending"):
        assert items("finished", "fool", state) == summary[f"n_{state}"]
    assert samples[("ascent_run_fooled", (("run", "finished"),))] == summary["n_fooled"] == 1
    assert items("queued", "saliency", "pending") == 5
    assert samples[("ascent_queue_messages", (("queue", DEFAULT_QUEUE),))] == 3 == _llen(redis_url, DEFAULT_QUEUE)
    assert samples[("ascent_workers", (("state", "online"),))] == 0
    assert samples[("ascent_images_per_second", (("run", "finished"),))] > 0


def _llen(url: str, queue: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


# ----------------------------------------------------------------------------- report polish


def test_an_interrupted_fool_run_names_its_target_and_an_image_not_fooled_shows_no_iteration_count(capsys):
    from ascent.producer.collector import collect, format_summary
    from ascent.shared.jobs import get_job

    store = MemoryStore(uuid.uuid4().hex)
    make_run(store, "r", [None, None])  # nothing recorded yet
    assert "fooled 0/0 (-) towards 6 stingray" in format_summary(collect(store, "r"))

    row = {"item_id": "000001", "source": "file:///x/a.png", "fooled": False, "iterations": -1, "l2": 0.1}
    tile = get_job("fool").tile(row, _NoMedia(), _imagenet(), None)
    assert "not fooled" in tile and "-1" not in tile and "iteration" not in tile
    fooled = get_job("fool").tile({**row, "fooled": True, "iterations": 12}, _NoMedia(), _imagenet(), None)
    assert "12 iterations" in fooled


def test_an_unlabelled_saliency_run_says_what_its_maps_show_and_the_maps_are_not_near_black():
    import torch

    from ascent.shared.jobs import get_job
    from ascent.shared.tensors import map_to_uint8

    cards = get_job("saliency").headline({"n_labelled": 0, "accuracy": None, "n_correct": 0, "predictions": [1, 2]})
    assert [(c.value, c.label) for c in cards] == [("2", "maps of the predicted class (no labels)")]

    peaky = torch.rand(1, 32, 32) * 0.01
    peaky[0, 3, 3] = 1.0  # one pixel dominates, as in real saliency maps
    image = map_to_uint8(peaky)
    assert image.max() == 255 and np.median(image) > 60  # scaled by its maximum the median would be ~1


def test_long_sources_are_shortened_to_whole_path_segments_without_dot_dot():
    from ascent.shared.html import short_source, source_span

    uri = "file:///work/wt-ops/../shared/assets/cs231n/datasets/some-long-folder-name/imagenet_val_25.npz#3"
    short = short_source(uri, limit=60)
    assert short == "…/datasets/some-long-folder-name/imagenet_val_25.npz#3"
    assert short_source("file:///a/../b/c.png") == "/b/c.png"
    span = source_span({"source": uri})
    assert "white-space:nowrap" in span and f'title="{uri}"' in span and "../" not in span.split(">", 1)[1]


class _NoMedia:
    def input(self, item_id: str) -> None:
        return None

    def output(self, item_id: str) -> None:
        return None


def _imagenet():
    from ascent.shared.catalog import imagenet

    return imagenet()
