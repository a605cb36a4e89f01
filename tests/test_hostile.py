"""Hostile messages, hostile files, full disks (docs/reliability.md, "Threat model"): workers obey their own
configuration, every resource is bounded, and no shard is lost. Real Redis and worker processes where a
message travels; the handler in-process where only the files matter."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest

from ascent.shared.errors import AlreadyExists, InvalidSpec
from ascent.shared.keys import RunKeys
from ascent.shared.messages import task_message
from ascent.shared.queue import RUN_SHARD_TASK
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec, Manifest, Shard
from ascent.shared.store import FileStore, MemoryStore, Store
from tests.faults_util import Cluster, ascent, ascent_env, assert_exactly_once, wait_complete, wait_until, write_png
from tests.test_images import png_header_only

integration = pytest.mark.integration
KEY = "a-signing-key-of-32-characters!!"


def npz_header_only(x_shape: tuple[int, ...], y_shape: tuple[int, ...] | None = None) -> bytes:
    """An .npz whose headers declare these shapes but which holds no data: a few hundred bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, shape, descr in (("X", x_shape, "|u1"), ("y", y_shape, "<i8")):
            if shape is not None:
                member = io.BytesIO()
                np.lib.format.write_array_header_1_0(member, {"descr": descr, "fortran_order": False, "shape": shape})
                archive.writestr(f"{name}.npy", member.getvalue())
    return buffer.getvalue()


def owner(folder: Path) -> int | None:
    try:
        return int((folder / "owner.pid").read_text())
    except (OSError, ValueError):
        return None


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` and the sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


# ----------------------------------------------------------------------------- 1. a header bomb


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "limit"),
    [
        ((10**9, 224, 224, 3), None, "ASCENT_MAX_ITEMS"),
        ((10**8, 1, 1, 3), None, "ASCENT_MAX_ITEMS"),
        ((20, 224, 224, 3), (10**11,), "y must hold one integer label per image"),
        ((5000, 1000, 1000, 3), None, "ASCENT_MAX_NPZ_BYTES"),
    ],
)
def test_a_header_bomb_npz_fails_in_the_producer_fast_and_without_allocating(tmp_path, x_shape, y_shape, limit):
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(npz_header_only(x_shape, y_shape))
    code = (
        "import resource, sys, time\n"
        "from ascent.producer.cli import main\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "started = time.monotonic()\n"
        f"code = main(['submit', 'fool', '--images', {str(bomb)!r}, '--target', '6', '--store', {tmp_path.as_uri()!r},"
        " '--broker', 'redis://127.0.0.1:1/0'])\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024\n"
        "print(f'{code} {time.monotonic() - started:.2f} {grown:.1f}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ascent_env())
    exit_code, seconds, grown_mib = done.stdout.split()
    assert exit_code == "2", done.stderr
    assert float(seconds) < 5 and float(grown_mib) < 200, done.stdout
    assert limit in done.stderr and "Traceback" not in done.stderr


def test_a_folder_link_that_leads_out_is_never_planned(tmp_path):
    from ascent.producer.inputs import enumerate_inputs

    folder = tmp_path / "in"
    write_png(folder / "cat.png")
    (folder / "passwd.png").symlink_to("/etc/passwd")
    (folder / "inside.png").symlink_to(folder / "cat.png")  # a link that stays inside is fine
    assert [Path(i.source).name for i in enumerate_inputs([str(folder)])] == ["cat.png", "inside.png"]


# ----------------------------------------------------------------------------- 2, 3. forged messages, leaks


def record_small_run(store: Store, folder: Path, run_id: str, n: int = 2) -> tuple[JobSpec, Shard]:
    """A saliency run of ``n`` images recorded in ``store`` as the producer records it (one shard)."""
    from ascent.producer.submit import record_run

    items = tuple(Item(f"{i:06d}", write_png(folder / f"{i}.png", seed=i).as_uri()) for i in range(n))
    spec = JobSpec("saliency", run_id, store.uri, model="tiny", inputs=(folder.as_uri(),), size=32).validate()
    shard = Shard("shard-00000", items)
    record_run(spec, Manifest(run_id, (shard,)), store)
    return spec, shard


def forge(spec: JobSpec, shard: Shard, **changes) -> dict:
    message = task_message(spec, shard)
    for path, value in changes.items():
        target = message
        *parents, last = path.split(".")
        for name in parents:
            target = target[name]
        target[last] = value
    return message


def refusals(cluster: Cluster) -> int:
    return cluster.logs().count("refusing task")


@integration
@pytest.mark.timeout(240)
def test_forged_messages_write_nothing_outside_the_store_and_read_nothing_they_name(tmp_path):
    store = FileStore(tmp_path / "store")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret_dir = tmp_path / "private"
    write_png(secret_dir / "secret.png", seed=9)
    secret_dir.chmod(0o700)
    with Cluster(Settings(store=store.uri), workers=1, env={"ASCENT_INPUT_ROOTS": str(tmp_path / "in")}) as cluster:
        spec, shard = record_small_run(store, tmp_path / "in", "real")
        cluster.app.send_task(RUN_SHARD_TASK, args=[task_message(spec, shard)])
        wait_complete(store, "real", 90, check=cluster.check_workers)
        before = tree(store.root)

        items = [i.to_dict() for i in shard.items]
        passwd = [{**items[0], "source": "file:///etc/passwd"}, items[1]]
        private = [{**items[0], "source": (secret_dir / "secret.png").as_uri()}]
        forged = [
            forge(spec, shard, **{"spec.store": elsewhere.as_uri()}),  # write into a folder of the forger's choosing
            forge(spec, shard, **{"spec.store": "file://x"}),  # a relative store, in the worker's cwd
            forge(spec, shard, **{"shard.items": passwd}),  # read a file the worker can read
            forge(spec, shard, **{"shard.items": private}),
            forge(spec, shard, **{"shard.shard_id": "shard-00009"}),  # a shard the finished run never planned
            forge(spec, shard, **{"spec.run_id": "never-submitted"}),
            forge(spec, shard, **{"spec.params.loss": "score"}),  # another spec for the recorded run
        ]
        for message in forged:
            cluster.app.send_task(RUN_SHARD_TASK, args=[message])
        wait_until(lambda: refusals(cluster) >= len(forged), 60, "the worker to refuse every forged message")
        cluster.app.send_task(RUN_SHARD_TASK, args=[task_message(spec, shard)])  # the real one again: skipped
        time.sleep(2)
        logs = cluster.logs()

    assert tree(store.root) == before  # nothing written, the finished run's outputs untouched
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "x").exists()
    assert "which this worker does not write to" in logs and "differs from the manifest" in logs
    assert "lists no shard shard-00009" in logs and "never-submitted is not recorded" in logs
    assert "differs from the recorded spec.json" in logs
    assert "root:" not in logs  # /etc/passwd was never read


@integration
@pytest.mark.timeout(240)
def test_with_a_signing_key_an_unsigned_message_is_discarded_and_a_signed_one_runs(tmp_path):
    store = FileStore(tmp_path / "store")
    env = {"ASCENT_SIGNING_KEY": KEY, "ASCENT_INPUT_ROOTS": str(tmp_path / "in")}
    with Cluster(Settings(store=store.uri), workers=1, env=env) as cluster:
        spec, shard = record_small_run(store, tmp_path / "in", "signed")
        cluster.app.send_task(RUN_SHARD_TASK, args=[task_message(spec, shard)])  # unsigned
        bad = task_message(spec, shard, KEY)
        bad["spec"]["size"] = 48  # changed after signing
        cluster.app.send_task(RUN_SHARD_TASK, args=[bad])
        wait_until(lambda: refusals(cluster) >= 2, 60, "both messages to be refused")
        assert not store.exists(RunKeys("signed").record("shard-00000"))
        cluster.app.send_task(RUN_SHARD_TASK, args=[task_message(spec, shard, KEY)])
        wait_complete(store, "signed", 90, check=cluster.check_workers)
        assert cluster.logs().count("refusing task") == 2 and "unsigned or its signature is wrong" in cluster.logs()


def test_a_link_inside_the_roots_that_leads_out_fails_its_item_and_errors_never_quote_a_file(tmp_path):
    from ascent.worker.handler import run_shard
    from ascent.worker.runtime import WorkerRuntime

    store = FileStore(tmp_path / "store")
    folder = tmp_path / "in"
    write_png(folder / "ok.png")
    (folder / "passwd.png").symlink_to("/etc/passwd")
    (folder / "notes.png").write_text("password: hunter2\n")
    items = tuple(Item(f"{i:06d}", (folder / n).as_uri()) for i, n in enumerate(("ok.png", "passwd.png", "notes.png")))
    spec = JobSpec("saliency", "links", store.uri, model="tiny", inputs=(folder.as_uri(),), size=32).validate()
    runtime = WorkerRuntime.build(Settings(store=store.uri, input_roots=(str(folder),)))

    record = run_shard(spec, Shard("shard-00000", items), store, runtime, "cpu")

    status = {i.item_id: (i.status, i.error or "") for i in record.items}
    assert status["000000"][0] == "done"
    assert (
        status["000001"][0] == "failed" and "a link that leads out of the worker's input roots" in status["000001"][1]
    )
    assert status["000002"][0] == "failed" and "a text file, not an image" in status["000002"][1]
    text = json.dumps(record.to_dict())
    assert "root:" not in text and "hunter2" not in text
    assert not store.exists(RunKeys("links").input("000001")) and not store.exists(RunKeys("links").output("000001"))


# ----------------------------------------------------------------------------- 4. bounded resources


def test_oversized_and_endless_inputs_fail_alone_with_messages_naming_the_limit(tmp_path):
    from ascent.worker.handler import run_shard
    from ascent.worker.runtime import WorkerRuntime

    store = FileStore(tmp_path / "store")
    folder = tmp_path / "in"
    write_png(folder / "ok.png")
    with open(folder / "sparse.png", "wb") as f:
        f.truncate(3 * 1024**3)  # 3 GB that take no disk
    (folder / "huge.png").write_bytes(png_header_only(10**6, 10**6))
    sources = [(folder / n).as_uri() for n in ("ok.png", "sparse.png", "huge.png")] + ["file:///dev/zero"]
    items = tuple(Item(f"{i:06d}", s) for i, s in enumerate(sources))
    spec = JobSpec("fool", "big", store.uri, model="tiny", params={"target": 6, "max_iters": 2}, inputs=("x",), size=32)
    runtime = WorkerRuntime.build(Settings(store=store.uri, input_roots=(str(folder), "/dev/zero")))
    rss_before = psutil.Process().memory_info().rss

    record = run_shard(spec.validate(), Shard("shard-00000", items), store, runtime, "cpu")

    errors = {i.item_id: i.error or "" for i in record.items}
    assert [i.status for i in record.items] == ["done", "failed", "failed", "failed"]
    assert "exceeds the limit of 67,108,864 (ASCENT_MAX_INPUT_BYTES" in errors["000001"]
    assert "exceeds the limit of 64,000,000 (possible decompression bomb; raise ASCENT_MAX_PIXELS" in errors["000002"]
    assert "not a regular file" in errors["000003"]
    assert psutil.Process().memory_info().rss - rss_before < 500 * 2**20


@pytest.mark.parametrize(
    ("argv", "field", "limit"),
    [
        (["fool", "--images", "IMAGE", "--target", "6", "--size", "4096"], "size", "ASCENT_MAX_SIDE"),
        (
            ["fool", "--images", "IMAGE", "--target", "6", "--max-iters", "1000000000000"],
            "params.max_iters",
            "ASCENT_MAX_ITERS",
        ),
        (["classviz", "--classes", "1", "--iters", "100000000"], "params.iters", "ASCENT_MAX_ITERS"),
        (["classviz", "--classes", ",".join(["1"] * 10001)], "params.classes", "ASCENT_MAX_CLASSES"),
        (
            ["style", "--content", "IMAGE", "--style", "IMAGE", "--scales", "96,4096"],
            "params.scales",
            "ASCENT_MAX_SIDE",
        ),
    ],
)
def test_a_spec_beyond_a_limit_is_refused_naming_the_field_and_the_limit(tmp_path, capsys, argv, field, limit):
    from ascent.producer.cli import main

    write_png(tmp_path / "a.png")
    argv = [a.replace("IMAGE", str(tmp_path / "a.png")) for a in argv]
    assert main(["run", *argv, "--model", "tiny", "--store", (tmp_path / "s").as_uri()]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ascent: error: {field}:") and limit in err and "raise it" in err
    assert not (tmp_path / "s").exists()


def test_a_target_matrix_or_sweep_that_plans_more_items_than_the_limit_is_refused(tmp_path, capsys, monkeypatch):
    from ascent.producer.cli import main

    monkeypatch.setenv("ASCENT_MAX_ITEMS", "500")
    write_png(tmp_path / "a.png")
    argv = ["run", "fool", "--images", str(tmp_path / "a.png"), "--target", "all", "--model", "tiny"]
    assert main([*argv, "--store", (tmp_path / "s").as_uri()]) == 2  # 1 image × 1000 classes
    err = capsys.readouterr().err
    assert err.startswith("ascent: error: inputs:") and "1,000 items" in err and "ASCENT_MAX_ITEMS" in err
    assert not (tmp_path / "s").exists()


def test_until_ci_refuses_to_pool_several_targets_or_budgets_into_one_interval():
    from ascent.shared.jobs.fool import FoolParams

    for params in ({"target": "all"}, {"target": [1, 2]}, {"target": 3, "norm": "linf", "eps": [0.01, 0.02]}):
        with pytest.raises(InvalidSpec, match=r"params\.until_ci"):
            FoolParams.from_dict({**params, "until_ci": 0.05}).check()
    FoolParams.from_dict({"target": 3, "norm": "linf", "eps": [0.01], "until_ci": 0.05}).check()


def test_a_task_message_over_the_size_limit_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from ascent.producer.cli import main

    for i in range(4):
        write_png(tmp_path / "in" / f"{i}.png", seed=i)
    monkeypatch.setenv("ASCENT_MAX_MESSAGE_BYTES", "800")
    argv = [
        "submit",
        "saliency",
        "--images",
        str(tmp_path / "in"),
        "--shard-size",
        "4",
        "--store",
        (tmp_path / "s").as_uri(),
    ]
    assert main([*argv, "--broker", "redis://127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert "shard_size:" in err and "ASCENT_MAX_MESSAGE_BYTES" in err and "smaller --shard-size" in err
    assert not (tmp_path / "s").exists()


def test_a_worker_refuses_a_message_over_its_size_limit(tmp_path):
    from ascent.worker.guard import Refused, admit
    from ascent.worker.runtime import WorkerRuntime

    store = FileStore(tmp_path / "store")
    spec, shard = record_small_run(store, tmp_path / "in", "r")
    message = forge(spec, shard, padding="x" * 5000)
    with pytest.raises(Refused, match=r"exceeds the limit of 4,000 \(ASCENT_MAX_MESSAGE_BYTES"):
        admit(WorkerRuntime.build(Settings(store=store.uri, max_message_bytes=4000)), message)


def test_numbers_that_are_not_finite_never_reach_a_record(tmp_path):
    from ascent.worker.handler import run_shard
    from ascent.worker.runtime import WorkerRuntime

    store = FileStore(tmp_path / "store")
    items = (Item("000000", write_png(tmp_path / "in" / "a.png").as_uri()),)
    spec = JobSpec(
        "fool",
        "nan",
        store.uri,
        model="tiny",
        params={"target": 6, "lr": 1e308, "max_iters": 3},
        inputs=("x",),
        size=32,
    )
    runtime = WorkerRuntime.build(Settings(store=store.uri, input_roots=(str(tmp_path / "in"),)))
    run_shard(spec.validate(), Shard("shard-00000", items), store, runtime, "cpu")

    def refuse(constant: str) -> float:
        raise AssertionError(f"{constant} in a record")

    text = (store.root / "runs" / "nan" / "records" / "shard-00000.json").read_text()
    assert json.loads(text, parse_constant=refuse)["items"][0]["status"] == "done"


# ----------------------------------------------------------------------------- 5. a full disk


@pytest.fixture
def small_filesystem(tmp_path):
    """A 4 MiB tmpfs (needs root and mount): a real full disk for the store."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush when it is full
        for block in (65536, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError:
                pass
    return filler


@integration
@pytest.mark.timeout(300)
def test_a_full_store_loses_nothing_and_every_item_is_recorded_once_after_space_is_freed(tmp_path, small_filesystem):
    store = FileStore(small_filesystem / "store")
    n = 6
    for i in range(n):
        write_png(tmp_path / "in" / f"{i}.png", seed=i)
    env = {"ASCENT_FAULT_INJECT": "sleep:*:2", "ASCENT_MAX_RETRIES": "1"}  # each shard waits 2 s; short backoff
    with Cluster(Settings(store=store.uri), workers=1, env=env) as cluster:
        args = ["submit", "saliency", "--images", str(tmp_path / "in"), "--model", "tiny", "--size", "32"]
        args += ["--shard-size", "2", "--run-id", "full", "--broker", cluster.broker_url, "--store", store.uri]
        submitted = ascent(args, tmp_path)
        assert submitted.returncode == 0, submitted.stderr
        filler = fill(small_filesystem)
        wait_until(lambda: "store full" in cluster.logs(), 60, "a worker to meet the full store")
        status = ascent(["status", "full", "--store", store.uri], tmp_path)
        assert "store: full or unwritable" in status.stdout and "no space left" in status.stdout
        waited = ascent(["collect", "full", "--wait", "--timeout", "3", "--store", store.uri], tmp_path)
        assert waited.returncode == 1 and "Traceback" not in waited.stderr
        assert "still pending" in waited.stderr and "store full" in waited.stderr
        filler.unlink()  # space is freed
        wait_complete(store, "full", 120, check=cluster.check_workers)

    done = ascent(["collect", "full", "--store", store.uri], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = assert_exactly_once(store, "full", [f"{i:06d}" for i in range(n)])
    assert all(r["status"] == "done" for r in rows)  # never recorded failed for want of space
    assert "<h1>ascent run full" in (store.root / "runs" / "full" / "report.html").read_text()


def test_a_collector_reports_an_unreadable_record_instead_of_crashing(tmp_path):
    from ascent.producer.collector import collect

    store = FileStore(tmp_path / "store")
    record_small_run(store, tmp_path / "in", "r")
    store.put(RunKeys("r").record("shard-00000"), b'{"items": [')  # cut short
    summary = collect(store, "r")
    assert summary["n_pending"] == 2 and summary["unreadable_records"][0].startswith("runs/r/records/shard-00000.json")


# ----------------------------------------------------------------------------- 6. one run id, one run


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_creating_a_key_is_one_conditional_write_that_exactly_one_writer_wins(kind, tmp_path, request):
    from concurrent.futures import ThreadPoolExecutor

    if kind == "memory":
        store: Store = MemoryStore(f"create-{os.getpid()}-{time.time_ns()}")
    elif kind == "file":
        store = FileStore(tmp_path / "store")
    else:
        endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
        store = Settings(aws_endpoint_url=endpoint).open_store(f"s3://{bucket}/p")

    def create(i: int) -> bool:
        try:
            store.create("runs/r/spec.json", f"writer {i}".encode())
        except AlreadyExists:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(create, range(8)))
    assert won.count(True) == 1
    assert store.get("runs/r/spec.json") == f"writer {won.index(True)}".encode()


@integration
@pytest.mark.timeout(120)
def test_two_submits_with_the_same_run_id_at_the_same_time_exactly_one_succeeds(tmp_path, redis_url):
    write_png(tmp_path / "in" / "a.png")
    args = ["submit", "saliency", "--images", str(tmp_path / "in"), "--run-id", "twin", "--broker", redis_url]
    args += ["--store", (tmp_path / "store").as_uri(), "--model", "tiny"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ascent.producer", *args],
            cwd=tmp_path,
            env=ascent_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.wait(90), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2, 2]
    assert all("run 'twin' already exists" in err for code, err in results if code == 2)


def test_a_run_id_with_a_newline_is_refused():
    with pytest.raises(InvalidSpec) as err:
        JobSpec("saliency", "x\n", "memory://s", inputs=("x",)).validate()
    assert err.value.field == "run_id"


# ----------------------------------------------------------------------------- 7. an embedded run killed


@integration
@pytest.mark.timeout(300)
def test_a_sigkilled_ascent_run_leaves_no_process_and_the_run_can_be_completed(tmp_path):
    for i in range(4):
        write_png(tmp_path / "in" / f"{i}.png", seed=i)
    store = tmp_path / "store"
    args = ["run", "saliency", "--images", str(tmp_path / "in"), "--model", "tiny", "--size", "32", "--shard-size", "1"]
    args += ["--run-id", "killed", "--store", store.as_uri()]
    env = ascent_env(ASCENT_FAULT_INJECT="sleep:*:3")  # each shard takes 3 s: the run is mid-way when killed
    proc = subprocess.Popen(
        [sys.executable, "-m", "ascent.producer", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = psutil.Process(proc.pid)
    seen: set[int] = set()

    def started_a_shard() -> bool:
        seen.update(c.pid for c in parent.children(recursive=True))
        return any((store / "runs" / "killed" / "attempts").glob("*/*.json"))

    wait_until(started_a_shard, 120, "a worker to start a shard")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    def all_gone() -> bool:
        return not [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]

    wait_until(all_gone, 20, "every process the killed run started to be gone")
    stale = [d for d in Path(tempfile.gettempdir()).glob("ascent-embedded-*") if owner(d) == proc.pid]
    assert stale, "the killed run's temporary folder is expected to be left for the next start to remove"

    resumed = ascent(["resume", "killed", "--store", store.as_uri()], tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert "4 items, 4 done, 0 failed, 0 pending" in resumed.stdout
    assert not any(d.exists() for d in stale)  # removed by the next embedded start
    assert_exactly_once(FileStore(store), "killed", [f"{i:06d}" for i in range(4)])
