"""Reliability: nothing lost, nothing counted twice, nothing executed that should not be (issue 5).

Every test here runs real processes: a real redis-server, real ``celery worker`` processes (prefork, one
pool process each), the real ``ascent`` command as a subprocess, a file store or S3 over HTTP (moto behind
a fault-injecting proxy). Shards are made slow or deadly with the workers' fault-injection hook
(``ASCENT_FAULT_INJECT``, worker/handlers.py), never by mocking. The ``tiny`` model at 32×32 keeps the
kernels fast. Run the group with ``pytest -m faults``; docs/reliability.md has the table of what the user
sees for each fault.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from ascent.producer.collector import collect, progress
from ascent.shared.keys import run_key
from ascent.shared.queue import DEFAULT_QUEUE, RUN_SHARD_TASK
from ascent.shared.settings import Settings
from ascent.shared.store import FileStore
from ascent.worker.attempts import Attempts

from .faults_util import (
    Cluster,
    FaultyProxy,
    ascent_ok,
    assert_exactly_once,
    sampled_memory,
    wait_complete,
    wait_until,
    write_npz,
    write_png,
)

pytestmark = pytest.mark.faults
integration = pytest.mark.integration  # real redis-server / celery worker / ascent processes

SIZE = "32"


def submit_args(images: Path, run_id: str, broker: str, store: str, shard_size: int) -> list[str]:
    return [
        "submit",
        "saliency",
        "--images",
        str(images),
        "--model",
        "tiny",
        "--size",
        SIZE,
        "--shard-size",
        str(shard_size),
        "--broker",
        broker,
        "--store",
        store,
        "--run-id",
        run_id,
    ]


def ids(n: int) -> list[str]:
    return [f"{i:06d}" for i in range(n)]


def attempt_markers(store: FileStore, run_id: str, shard_id: str) -> list[dict]:
    return [store.get_json(k) for k in Attempts(store, run_id, shard_id).died()]


# ----------------------------------------------------------------------------- in-process: the pieces


def _spec_and_shard(tmp_path: Path, store: FileStore, n: int = 2):
    from ascent.shared.spec import Item, JobSpec, Shard

    sources = [write_png(tmp_path / "in" / f"{i}.png", 32, seed=i).as_uri() for i in range(n)]
    spec = JobSpec(kind="saliency", run_id="unit", store=store.uri, model="tiny", inputs=("x",), size=32)
    return spec.validate(), Shard("shard-00000", tuple(Item(f"{i:06d}", s) for i, s in enumerate(sources)))


def test_an_attempt_that_returns_leaves_no_marker_and_one_that_died_is_counted(tmp_path):
    from ascent.worker.handler import run_shard
    from ascent.worker.runtime import WorkerRuntime

    store = FileStore(tmp_path / "store")
    spec, shard = _spec_and_shard(tmp_path, store)
    runtime = WorkerRuntime.build(Settings(store=store.uri, max_attempts=2, input_roots=(str(tmp_path),)))
    attempts = Attempts(store, spec.run_id, shard.shard_id)
    attempts.start({"worker": "w@h"})  # as if its process had been killed
    assert len(attempts.died()) == 1

    record = run_shard(spec, shard, store, runtime, "cpu")

    assert [i.status for i in record.items] == ["done", "done"]
    assert len(attempts.died()) == 1  # only the dead one is left


def test_a_shard_whose_processes_died_max_attempts_times_is_recorded_failed_without_running(tmp_path):
    from ascent.worker.handler import run_shard
    from ascent.worker.runtime import WorkerRuntime

    store = FileStore(tmp_path / "store")
    spec, shard = _spec_and_shard(tmp_path, store)
    for _ in range(3):
        Attempts(store, spec.run_id, shard.shard_id).start()

    record = run_shard(spec, shard, store, WorkerRuntime.build(Settings(store=store.uri)), "cpu").to_dict()

    assert record["attempts"] == 3 and [i["status"] for i in record["items"]] == ["failed", "failed"]
    assert all("the worker process died 3 times" in i["error"] for i in record["items"])
    assert not store.list(run_key("unit", "outputs") + "/")


def test_the_fault_plan_parses_sleep_and_kill_and_refuses_anything_else():
    from ascent.shared.errors import InvalidInput
    from ascent.worker.faults import FaultInjector

    assert FaultInjector.parse("").plan == {}
    plan = FaultInjector.parse("sleep:000002:1.5, kill:000007").plan
    assert plan == {"000002": ("sleep", 1.5), "000007": ("kill", 0.0)}
    for bad in ("explode:000001", "sleep:000001", "sleep:000001:soon", "kill:", "sleep:1:-1"):
        with pytest.raises(InvalidInput, match="ASCENT_FAULT_INJECT"):
            FaultInjector.parse(bad)


def test_a_wildcard_sleep_makes_every_shard_sleep_once_and_a_wildcard_kill_is_refused():
    import dataclasses

    from ascent.shared.errors import InvalidInput
    from ascent.shared.spec import Item
    from ascent.worker.runtime import WorkerRuntime

    with pytest.raises(InvalidInput, match="ASCENT_FAULT_INJECT"):
        WorkerRuntime.build(Settings(fault_inject="kill:*"))  # a malformed plan stops the worker at start
    faults = WorkerRuntime.build(Settings(fault_inject="sleep:*:0.25")).faults
    assert faults.plan == {"*": ("sleep", 0.25)}
    slept: list[float] = []
    dataclasses.replace(faults, sleep=slept.append).apply(
        [Item("000001", "file:///a.png", None), Item("000002", "file:///b.png", None)]
    )
    assert slept == [0.25]  # once per shard, not once per item


@integration
def test_resume_enqueues_exactly_the_shards_without_a_record(tmp_path, redis_url):
    import redis

    from ascent.producer.submit import plan_run, record_run, resume
    from ascent.shared.queue import create_app
    from ascent.shared.spec import Item

    store = FileStore(tmp_path / "store")
    spec, _ = _spec_and_shard(tmp_path, store)
    manifest = plan_run(spec, [Item(f"{i:06d}", f"file:///x/{i}.png") for i in range(5)], 2)
    record_run(spec, manifest, store)
    store.put_json(run_key("unit", "records", "shard-00001.json"), {"items": []})
    app = create_app(Settings(broker_url=redis_url, store=store.uri))
    try:
        missing, total = resume(store, "unit", app)
        again, _ = resume(store, "unit", app)
    finally:
        app.close()

    assert total == 3 and [s.shard_id for s in missing] == [s.shard_id for s in again]
    assert [s.shard_id for s in missing] == ["shard-00000", "shard-00002"]
    queued = [json.loads(m) for m in redis.Redis.from_url(redis_url).lrange(DEFAULT_QUEUE, 0, -1)]
    assert len(queued) == 4 and all(m["headers"]["task"] == RUN_SHARD_TASK for m in queued)


def test_resume_of_a_run_that_was_never_recorded_says_so(tmp_path, capsys):
    from ascent.producer.cli import main

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}  # main() sets them
    try:
        code = main(["resume", "nope", "--broker", "redis://127.0.0.1:1/0", "--store", (tmp_path / "s").as_uri()])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert code == 1
    assert "run 'nope' is not (completely) recorded" in capsys.readouterr().err


def test_workers_reconnect_to_the_broker_for_ever_with_socket_timeouts_and_health_checks():
    from ascent.shared.queue import create_app

    conf = create_app(Settings(broker_url="redis://127.0.0.1:1/0")).conf
    assert conf.broker_connection_retry and conf.broker_connection_max_retries is None
    assert conf.broker_connection_retry_on_startup
    options = conf.broker_transport_options
    assert options["socket_timeout"] and options["socket_connect_timeout"] and options["socket_keepalive"]
    assert 0 < options["health_check_interval"] < options["visibility_timeout"]
    assert conf.accept_content == ["json"]


# ----------------------------------------------------------------------------- dead pool processes


@integration
@pytest.mark.timeout(120)
def test_a_pool_process_killed_mid_shard_is_redelivered_and_every_item_is_recorded_exactly_once(tmp_path):
    store = FileStore(tmp_path / "store")
    npz = write_npz(tmp_path / "in.npz", 8, 32)
    # shard-00001 (items 2, 3) sleeps on every delivery: long enough to kill its process mid-shard.
    env = {"ASCENT_FAULT_INJECT": "sleep:000002:3"}
    with Cluster(Settings(store=store.uri), workers=2, env=env) as cluster:
        ascent_ok(submit_args(npz, "killed", cluster.broker_url, store.uri, 2), tmp_path)
        victim = wait_until(lambda: attempt_markers(store, "killed", "shard-00001"), 60, "shard-00001 to start")[0]
        assert victim["pid"] in cluster.pool_pids()
        os.kill(victim["pid"], signal.SIGKILL)

        wait_complete(store, "killed", 60, check=cluster.check_workers)
        assert cluster.workers_alive()

    summary = collect(store, "killed")
    assert (summary["n_items"], summary["n_done"], summary["n_failed"]) == (8, 8, 0)
    assert_exactly_once(store, "killed", ids(8))
    # The killed attempt is the one marker left behind; the redelivery ran in a new pool process.
    markers = attempt_markers(store, "killed", "shard-00001")
    assert [m["pid"] for m in markers] == [victim["pid"]]
    record = store.get_json(run_key("killed", "records", "shard-00001.json"))
    assert record["pid"] != victim["pid"]


@integration
@pytest.mark.timeout(150)
def test_a_shard_that_always_kills_its_process_is_failed_after_the_attempt_limit_with_the_reason(tmp_path):
    store = FileStore(tmp_path / "store")
    npz = write_npz(tmp_path / "in.npz", 6, 32)
    env = {"ASCENT_FAULT_INJECT": "kill:000002", "ASCENT_MAX_ATTEMPTS": "3"}
    with Cluster(Settings(store=store.uri), workers=2, env=env) as cluster:
        ascent_ok(submit_args(npz, "deadly", cluster.broker_url, store.uri, 2), tmp_path)
        wait_complete(store, "deadly", 90, check=cluster.check_workers)
        assert cluster.workers_alive()

    summary = collect(store, "deadly")
    assert (summary["n_items"], summary["n_done"], summary["n_failed"]) == (6, 4, 2)
    rows = {r["item_id"]: r for r in assert_exactly_once(store, "deadly", ids(6))}
    for item_id in ("000002", "000003"):
        assert rows[item_id]["status"] == "failed"
        assert (
            "the worker process died 3 times while running this shard (killed, e.g. out of memory)"
            in (rows[item_id]["error"])
        )
        assert item_id in rows[item_id]["error"]
    assert all(rows[i]["status"] == "done" for i in ("000000", "000001", "000004", "000005"))
    assert len(attempt_markers(store, "deadly", "shard-00001")) == 3
    assert store.get_json(run_key("deadly", "records", "shard-00001.json"))["attempts"] == 3
    assert attempt_markers(store, "deadly", "shard-00000") == []


# ----------------------------------------------------------------------------- the broker restarts empty


@integration
@pytest.mark.timeout(150)
def test_after_redis_restarts_empty_resume_and_the_surviving_workers_complete_the_run(tmp_path):
    store = FileStore(tmp_path / "store")
    n = 16
    npz = write_npz(tmp_path / "in.npz", n, 32)
    # Every shard (2 items) takes about a second, so most are still queued when Redis dies.
    env = {"ASCENT_FAULT_INJECT": ",".join(f"sleep:{i}:1" for i in ids(n)[::2])}
    with Cluster(Settings(store=store.uri), workers=2, env=env) as cluster:
        assert cluster.redis is not None
        mains = [w.proc.pid for w in cluster.workers]
        ascent_ok(submit_args(npz, "restart", cluster.broker_url, store.uri, 2), tmp_path)
        wait_until(lambda: progress(store, "restart").finished >= 2, 60, "the first shard")

        cluster.redis.kill()
        time.sleep(2)
        cluster.redis.restart()  # same port, empty: every queued task is gone
        assert cluster.redis.llen(DEFAULT_QUEUE) == 0
        # Both workers reconnect to the new server (they answer a broadcast ping through it); the shards
        # that were running when Redis died finish meanwhile.
        wait_until(lambda: cluster.answering() == 2, 60, "both workers back")
        time.sleep(1)
        before = progress(store, "restart")
        assert before.pending > 0, "the run finished before Redis was killed: nothing to resume"

        resumed_at = time.time()
        resumed = ascent_ok(["resume", "restart", "--broker", cluster.broker_url, "--store", store.uri], tmp_path)
        shards_left = (before.pending + 1) // 2
        assert f"run restart: re-enqueued {shards_left} of 8 shards" in resumed.stdout
        # Running it again while the workers run is harmless (duplicates are skipped or deduplicated).
        ascent_ok(["resume", "restart", "--broker", cluster.broker_url, "--store", store.uri], tmp_path)

        wait_complete(store, "restart", 60, check=cluster.check_workers)
        assert [w.proc.pid for w in cluster.workers] == mains and cluster.workers_alive()

    summary = collect(store, "restart")
    assert (summary["n_items"], summary["n_done"], summary["n_failed"]) == (n, n, 0)
    assert_exactly_once(store, "restart", ids(n))
    # Both workers reconnected and consumed re-enqueued tasks (neither hung on the dead connection).
    after = [
        store.get_json(k)
        for k in store.list(run_key("restart", "records") + "/")
        if store.get_json(k)["written_at"] > resumed_at
    ]
    assert {r["worker"].split("@")[0] for r in after} == {"ascent-local-0", "ascent-local-1"}


# ----------------------------------------------------------------------------- a flaky object store


@integration
@pytest.mark.timeout(150)
def test_a_run_against_an_s3_endpoint_failing_a_fifth_of_requests_completes_with_every_output_present(
    tmp_path, s3_endpoint, s3_bucket
):
    from ascent.shared.s3store import S3Store

    n = 8
    npz = write_npz(tmp_path / "in.npz", n, 32)
    uri = f"s3://{s3_bucket}/flaky"
    direct = S3Store.from_uri(uri, endpoint_url=s3_endpoint)
    with FaultyProxy(s3_endpoint) as proxy:
        # Only the workers go through the proxy: every read and write they make may fail.
        env = {"AWS_ENDPOINT_URL": proxy.url}
        with Cluster(Settings(store=uri), workers=2, env=env) as cluster:
            ascent_ok(submit_args(npz, "flaky", cluster.broker_url, uri, 2), tmp_path, AWS_ENDPOINT_URL=s3_endpoint)
            wait_complete(direct, "flaky", 90, check=cluster.check_workers)
            logs = cluster.logs()
        counts = dict(proxy.counts)

    assert counts["requests"] > proxy.burst_at + proxy.burst and proxy.failed >= counts["requests"] / 5, counts
    # The outage outlasted botocore's own retries: the shard's task retry (or the marker clean-up,
    # which only logs) had to deal with it.
    assert "transient error, retry" in logs or "could not remove the attempt marker" in logs
    summary = collect(direct, "flaky")
    assert (summary["n_items"], summary["n_done"], summary["n_failed"]) == (n, n, 0), summary["failures"]
    rows = assert_exactly_once(direct, "flaky", ids(n))
    # No record points at a missing object: every output and preprocessed input named is there.
    for row in rows:
        assert row["output"] == direct.url(run_key("flaky", "outputs", f"{row['item_id']}.png"))
        assert direct.exists(run_key("flaky", "outputs", f"{row['item_id']}.png"))
        assert direct.exists(run_key("flaky", "inputs", f"{row['item_id']}.png"))
    print(f"\nS3 proxy: {counts}; task retries logged: {logs.count('transient error, retry')}")


# ----------------------------------------------------------------------------- hostile and broken messages


class _OpensAFile:
    """Unpickling this calls ``open(path, "w")``: the file appearing means the payload was executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def publish_raw(
    cluster: Cluster, body: bytes, content_type: str, task: str = RUN_SHARD_TASK, **header_changes: object
) -> str:
    """Put a hand-made Celery protocol-2 message on ascent's queue (what an attacker with write access
    to Redis could do); ``header_changes`` replace headers (None removes one). Returns its task id."""
    from kombu import Exchange

    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "(...)",
        "kwargsrepr": "{}",
        "origin": "attacker@nowhere",
        "ignore_result": True,
    }
    headers.update(header_changes)
    headers = {k: v for k, v in headers.items() if v is not None or k not in header_changes}
    with cluster.app.connection_for_write() as conn:
        conn.Producer().publish(
            body,
            exchange=Exchange(DEFAULT_QUEUE, "direct"),
            routing_key=DEFAULT_QUEUE,
            content_type=content_type,
            content_encoding="binary",
            headers=headers,
            correlation_id=task_id,
            delivery_mode=2,
        )
    return task_id


def run_normally(cluster: Cluster, tmp_path: Path, store: FileStore, run_id: str, n: int = 4) -> None:
    npz = write_npz(tmp_path / f"{run_id}.npz", n, 32)
    ascent_ok(submit_args(npz, run_id, cluster.broker_url, store.uri, 2), tmp_path)
    wait_complete(store, run_id, 60, check=cluster.check_workers)
    summary = collect(store, run_id)
    assert (summary["n_done"], summary["n_failed"]) == (n, 0)


@integration
@pytest.mark.timeout(90)
def test_a_pickled_message_that_would_create_a_file_is_refused_unopened_and_the_workers_keep_working(
    tmp_path,
):
    target = tmp_path / "pwned"
    payload = pickle.dumps(((_OpensAFile(target),), {}, {"callbacks": None, "errbacks": None}))
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_OpensAFile(control))).close()
    assert control.exists(), "the payload must really create its file when unpickled"

    store = FileStore(tmp_path / "store")
    with Cluster(Settings(store=store.uri), workers=1) as cluster:
        mains = [w.proc.pid for w in cluster.workers]
        publish_raw(cluster, payload, "application/x-python-serialize")
        run_normally(cluster, tmp_path, store, "after-pickle")  # queued behind it: it was handled first
        assert cluster.redis is not None and cluster.redis.llen(DEFAULT_QUEUE) == 0
        assert [w.proc.pid for w in cluster.workers] == mains and cluster.workers_alive()
        logs = cluster.logs()

    assert not target.exists()
    assert logs.count("Received invalid task message: Refusing to deserialize untrusted content of type pickle") == 1
    assert "The message has been ignored and discarded" in logs


@integration
@pytest.mark.timeout(90)
def test_malformed_task_messages_are_rejected_once_and_logged_and_the_next_tasks_run(tmp_path):
    from ascent.shared.messages import task_message
    from ascent.shared.spec import Item, JobSpec, Shard

    store = FileStore(tmp_path / "store")
    spec = JobSpec(kind="saliency", run_id="bad-msg", store=store.uri, model="tiny", inputs=("x",), size=32)
    good = task_message(spec.validate(), Shard("shard-00000", (Item("000000", "file:///nowhere.png"),)))
    unknown_job_version = json.loads(json.dumps(good))
    unknown_job_version["spec"]["version"] = 2
    wrong_schema = {"version": 1, "spec": {"kind": "fool"}, "shard": {}}
    with Cluster(Settings(store=store.uri), workers=1) as cluster:
        app = cluster.app
        rejected = [
            app.send_task(RUN_SHARD_TASK, args=[{**good, "version": 99}], queue=DEFAULT_QUEUE).id,
            app.send_task(RUN_SHARD_TASK, args=[unknown_job_version], queue=DEFAULT_QUEUE).id,
            app.send_task(RUN_SHARD_TASK, args=[wrong_schema], queue=DEFAULT_QUEUE).id,
            app.send_task(RUN_SHARD_TASK, args=["not an object"], queue=DEFAULT_QUEUE).id,
        ]
        no_args = app.send_task(RUN_SHARD_TASK, args=[], queue=DEFAULT_QUEUE).id
        unknown_task = app.send_task("ascent.no_such_task", args=[good], queue=DEFAULT_QUEUE).id
        # Envelopes Celery's own strategy chokes on (it used to stop the worker: "Unrecoverable error").
        publish_raw(cluster, b'{"just": "json"}', "application/json")
        publish_raw(cluster, json.dumps([[good], {}, {}]).encode(), "application/json", id=None)
        run_normally(cluster, tmp_path, store, "after-junk")
        assert cluster.redis is not None and cluster.redis.llen(DEFAULT_QUEUE) == 0
        assert cluster.workers_alive()
        logs = cluster.logs()

    for task_id in rejected:  # handled once: one rejection line each, no retry
        assert logs.count(f"rejecting malformed task message {task_id}") == 1
    assert "unsupported message version 99" in logs and "unsupported spec version 2" in logs
    assert f"{no_args}] raised unexpected: TypeError" in logs
    assert "Received unregistered task of type 'ascent.no_such_task'" in logs and unknown_task in logs
    assert logs.count("Received invalid task message: malformed task message: ValueError") == 1
    assert logs.count("Received invalid task message: malformed task message: KeyError: 'id'") == 1
    assert "Unrecoverable error" not in logs
    assert not store.exists(run_key("bad-msg", "records", "shard-00000.json"))


# ----------------------------------------------------------------------------- every kind of bad input


def _png_bytes(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width×height RGB pixels and holds none (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def bad_input_folder(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Every bad-input kind of issue 5 next to good images. Returns {file name: expected error} for the
    files that must fail and {file name: what it is} for the ones that must succeed."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    bad = {
        "truncated.png": (_png_bytes(noise)[:300], "corrupt or truncated"),
        "corrupt.jpg": (b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)), "corrupt"),
        "notes.jpg": (b"name,label\ncat.png,281\n", "a text file, not an image"),
        "empty.png": (b"", "empty file (0 bytes)"),
        "bomb.png": (_png_header_only(30000, 30000), "decompression bomb"),
    }
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    write_png(folder / "good-0.png", 40, seed=1)
    noise.save(folder / "good-1.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (36, 36, 4), dtype=np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (36, 36), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 65536, (36, 36), dtype=np.uint16)).save(folder / "gray16.png")
    Image.new("CMYK", (36, 36), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    noise.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "palette.png")
    Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one-pixel.png")
    # Stored 64 wide × 32 high, left half red, right half blue, EXIF orientation 6 ("rotate 90° clockwise
    # to display"): displayed 32 × 64 with red on top. A 32×32 centre crop keeps red above blue only if
    # the orientation was applied.
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:, :32] = (255, 0, 0)
    stored[:, 32:] = (0, 0, 255)
    exif_image = Image.fromarray(stored)
    exif = exif_image.getexif()
    exif[0x0112] = 6
    exif_image.save(folder / "exif-rotated.jpg", quality=95, exif=exif)
    write_png(folder / "name with spaces.png", 40, seed=2)
    write_png(folder / "ünïcødé 画像.png", 40, seed=3)
    write_png(folder / "dots..in..name.png", 40, seed=4)
    good = {
        "good-0.png": "rgb",
        "good-1.jpg": "rgb",
        "alpha.png": "alpha",
        "gray.png": "grayscale",
        "gray16.png": "16-bit",
        "cmyk.jpg": "cmyk",
        "palette.png": "palette",
        "one-pixel.png": "1×1",
        "exif-rotated.jpg": "exif",
        "name with spaces.png": "spaces",
        "ünïcødé 画像.png": "unicode",
        "dots..in..name.png": "dots",
    }
    return {name: reason for name, (_, reason) in bad.items()}, good


@integration
@pytest.mark.timeout(120)
def test_a_folder_of_every_bad_input_kind_next_to_good_images_runs_to_exit_0_with_each_bad_one_failed(
    tmp_path,
):
    folder = tmp_path / "in put"
    bad, good = bad_input_folder(folder)
    # Also named directly: a path through "..", and a file whose name is only dots and an extension.
    dotted = folder / "sub" / ".." / "dots..in..name.png"
    (folder / "..png").write_bytes((folder / "good-0.png").read_bytes())
    store = FileStore(tmp_path / "store")
    args = ["run", "saliency", "--images", str(folder), str(dotted), str(folder / "..png")]
    args += ["--model", "tiny", "--size", SIZE, "--shard-size", "8", "--store", store.uri, "--run-id", "bad"]
    done = ascent_ok(args, tmp_path, timeout=100)

    summary = json.loads(store.get(run_key("bad", "summary.json")))
    n = len(bad) + len(good) + 2
    assert (summary["n_items"], summary["n_done"], summary["n_failed"]) == (n, len(good) + 2, len(bad))
    assert f"{n} items, {len(good) + 2} done, {len(bad)} failed, 0 pending" in done.stdout
    rows = assert_exactly_once(store, "bad", ids(n))
    by_name = {}
    for row in rows:
        by_name.setdefault(Path(unquote(row["source"].split("file://", 1)[1])).name, []).append(row)
    for name, reason in bad.items():
        (row,) = by_name[name]
        assert row["status"] == "failed" and reason in row["error"] and row["item_id"] in row["error"], row
    for name in good:
        assert all(r["status"] == "done" for r in by_name[name]), by_name[name]
    assert len(by_name["dots..in..name.png"]) == 2 and by_name["..png"][0]["status"] == "done"
    # Outputs are keyed by item id only: no input name (spaces, unicode, dots) reaches the store.
    outputs = sorted(p.name for p in (tmp_path / "store" / "runs" / "bad" / "outputs").iterdir())
    assert outputs == sorted(f"{r['item_id']}.png" for r in rows if r["status"] == "done")
    (exif_row,) = by_name["exif-rotated.jpg"]
    seen = np.array(Image.open(tmp_path / "store" / "runs" / "bad" / "inputs" / f"{exif_row['item_id']}.png"))
    assert seen.shape == (32, 32, 3)
    assert seen[2, 16, 0] > 200 > seen[2, 16, 2] and seen[29, 16, 2] > 200 > seen[29, 16, 0]  # red above blue


# ----------------------------------------------------------------------------- load


def _memory_figures(samples: list[tuple[float, int, int]]) -> dict[str, float]:
    """Medians (MiB) of total RSS and PSS over the first and the last quarter of ``samples``."""
    quarter = max(1, len(samples) // 4)
    figures = {}
    for name, field in (("rss", 1), ("pss", 2)):
        for part, rows in (("first", samples[:quarter]), ("last", samples[-quarter:])):
            figures[f"{name}_{part}"] = float(np.median([row[field] for row in rows])) / 2**20
        figures[f"{name}_growth"] = figures[f"{name}_last"] - figures[f"{name}_first"]
    figures["pss_peak"] = max(row[2] for row in samples) / 2**20
    figures["samples"] = len(samples)
    return figures


@integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_thousand_items_on_two_workers_complete_exactly_once_with_flat_worker_memory(tmp_path):
    n, shard_size = 2000, 10  # 200 shards, about 100 tasks per pool process
    npz = write_npz(tmp_path / "load.npz", n, 32)
    store = FileStore(tmp_path / "store")
    with Cluster(Settings(store=store.uri), workers=2) as cluster:
        # Warm up first (model load, torch's allocator, the .npz cache) with the same images in big
        # shards: 20 tasks, so no pool process reaches worker_max_tasks_per_child (200) during the
        # measured run, which would replace it and hide a leak.
        started = time.monotonic()
        ascent_ok(submit_args(npz, "warm-up", cluster.broker_url, store.uri, 100), tmp_path)
        wait_complete(store, "warm-up", 120, check=cluster.check_workers)
        warm_up_seconds = time.monotonic() - started

        started = time.monotonic()
        with sampled_memory(cluster.worker_pids) as samples:
            ascent_ok(submit_args(npz, "load", cluster.broker_url, store.uri, shard_size), tmp_path)
            wait_complete(store, "load", 240, check=cluster.check_workers)
        seconds = time.monotonic() - started
        workers = progress(store, "load").workers

    summary = collect(store, "load")
    assert (summary["n_items"], summary["n_done"], summary["n_failed"]) == (n, n, 0)
    assert_exactly_once(store, "load", ids(n))
    assert len(workers) == 2 and min(workers.values()) >= n // 10, workers  # both took a real share

    quarter = max(1, len(samples) // 4)
    mib = 2**20
    figures = {}
    for name, field in (("rss", 1), ("pss", 2)):
        first = float(np.median([row[field] for row in samples[:quarter]])) / mib
        last = float(np.median([row[field] for row in samples[-quarter:]])) / mib
        figures[name] = (first, last, last - first)
    print(
        f"\nload: warm-up {n} items in {n // 100} shards {warm_up_seconds:.1f}s; measured: {n} items in "
        f"{n // shard_size} shards in {seconds:.1f}s ({n / seconds:.0f} items/s), items per worker "
        f"{sorted(workers.values())}; memory of the 2 main + 2 pool processes, median of the first -> "
        f"last quarter of {len(samples)} samples: "
        + ", ".join(f"{k.upper()} {a:.0f} -> {b:.0f} MiB ({d:+.1f})" for k, (a, b, d) in figures.items())
        + f", peak PSS {max(row[2] for row in samples) / mib:.0f} MiB"
    )
    assert figures["rss"][2] < 50 and figures["pss"][2] < 50, figures
