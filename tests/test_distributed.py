"""Distributed mode: inputs for remote workers (local files uploaded once, ``s3://`` prefixes read in
place), and end to end with real processes: a password-protected redis-server, S3 over HTTP (moto's
server), two ``ascent worker`` processes started separately, and the ``ascent submit``, ``ascent status``
and ``ascent collect`` commands as subprocesses.

The reference is an embedded ``ascent run`` on the same images with a ``file://`` store: the summary
the distributed run writes to the bucket must be the same (apart from its run id, store URIs and which
worker did what), and so must every output image, byte for byte.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from ascent.producer.processes import REDIS_CONFIG, find_redis_server, free_port, stop_groups
from ascent.shared.queue import DEFAULT_QUEUE
from ascent.shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 6
#: Small and quick on a CPU, yet some images are fooled and some are not (a stronger comparison).
FOOL_ARGS = ["--target", "6", "--size", "96", "--max-iters", "15", "--lr", "2", "--shard-size", "2"]
#: What legitimately differs between two runs of the same job.
RUN_SPECIFIC = ("run_id", "workers", "report")


# ----------------------------------------------------------------------------- processes


def ascent_env(**extra: str) -> dict[str, str]:
    """The environment of an ``ascent`` subprocess: no settings inherited from this one, one CPU thread
    (float results, hence iteration counts, depend on the thread count), no GPU."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASCENT_", "AWS_", "FLOWER_"))}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


def ascent(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``ascent ARGS`` (``python -m ascent.producer``) to completion; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "ascent.producer", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"ascent {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


class PasswordRedis:
    """A private redis-server on a free port of 127.0.0.1 that requires a password."""

    def __init__(self, directory: Path, password: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.port = free_port()
        argv = [find_redis_server(), "--port", str(self.port), "--dir", str(directory)]
        for name, value in {**REDIS_CONFIG, "requirepass": password}.items():
            argv += [f"--{name}", value]
        self.log = directory / "redis.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = self.client()
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.05)
        client.close()

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.password)

    def stop(self) -> None:
        stop_groups([self.proc], grace=5)


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Workers:
    """``ascent worker --concurrency 1 -n NAME@%h`` processes, started separately, each in its own
    process group (stopped with SIGTERM, then SIGKILL). With ``named=False`` they are started without
    ``-n`` (``names`` then only name their logs) and take their default names, ``ascent-<pid>@<host>``."""

    def __init__(self, names: list[str], env: dict[str, str], logs: Path, cwd: Path, named: bool = True) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.broker_url = env["ASCENT_BROKER_URL"]
        self.workers: list[Worker] = []
        for name in names:
            log = logs / f"{name}.log"
            with open(log, "ab") as out:
                argv = [sys.executable, "-m", "ascent.producer", "worker", "--concurrency", "1"]
                argv += ["-n", f"{name}@%h"] if named else []
                proc = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.workers.append(Worker(name if named else f"ascent-{proc.pid}", proc, log))

    @property
    def nodes(self) -> set[str]:
        return {f"{w.name}@{os.uname().nodename}" for w in self.workers}

    def wait_until_ready(self, timeout: float = 180) -> None:
        """Until every worker answers a ping; fails with the log of one that exited or stayed silent."""
        from ascent.shared.queue import create_app

        app = create_app(Settings(broker_url=self.broker_url))
        deadline = time.monotonic() + timeout
        try:
            waiting = set(self.nodes)
            while waiting:
                for w in self.workers:
                    assert w.proc.poll() is None, f"worker {w.name} exited:\n{w.output()[-3000:]}"
                for reply in app.control.ping(timeout=1.0) or []:
                    waiting -= set(reply)
                assert time.monotonic() < deadline, f"not ready: {waiting}\n{self.workers[0].output()[-3000:]}"
        finally:
            app.close()

    def logs(self) -> str:
        return "\n".join(w.output() for w in self.workers)

    def stop(self) -> None:
        stop_groups([w.proc for w in self.workers], grace=10)


# ----------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    redis: PasswordRedis
    endpoint: str
    bucket: str
    prefix: str
    aws_secret: str
    s3: Any
    work: Path
    workers: Workers | None = None

    @property
    def store(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def env(self, db: int = 0) -> dict[str, str]:
        """What every process of the fleet gets: the broker, the store and S3 credentials."""
        return ascent_env(
            ASCENT_BROKER_URL=self.redis.url(db),
            ASCENT_STORE=self.store,
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID="AKIDASCENTTEST",
            AWS_SECRET_ACCESS_KEY=self.aws_secret,
            AWS_DEFAULT_REGION="us-east-1",
        )

    def key(self, run_id: str, *parts: str) -> str:
        return "/".join((self.prefix, "runs", run_id, *parts))

    def keys(self, run_id: str, *parts: str) -> list[str]:
        prefix = self.key(run_id, *parts) + "/"
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", ())]

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def get_json(self, run_id: str, name: str) -> Any:
        return json.loads(self.get(self.key(run_id, name)))

    def items(self, run_id: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.get(self.key(run_id, "items.jsonl")).splitlines()]

    def object_exists(self, uri: str) -> bool:
        assert uri.startswith(f"s3://{self.bucket}/"), uri
        try:
            self.s3.head_object(Bucket=self.bucket, Key=uri[len(f"s3://{self.bucket}/") :])
        except self.s3.exceptions.ClientError:
            return False
        return True

    def submit(self, args: list[str], db: int = 0) -> tuple[str, subprocess.CompletedProcess]:
        done = ascent(["submit", *args], self.env(db), self.work)
        return done.stdout.splitlines()[-1], done

    def submit_and_collect(self, args: list[str]) -> tuple[str, dict[str, Any], str]:
        run_id, _ = self.submit(args)
        collected = ascent(["collect", run_id, "--wait", "--timeout", "300"], self.env(), self.work)
        return run_id, self.get_json(run_id, "summary.json"), collected.stdout


def write_images(folder: Path, npz: Path, n: int = N_IMAGES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x = np.load(npz, allow_pickle=False)["X"][:n]
    for i, image in enumerate(x):
        Image.fromarray(image).save(folder / f"img-{i}.png")
    return folder


@pytest.fixture(scope="module")
def cluster(s3_endpoint, tmp_path_factory) -> Iterator[Cluster]:
    import boto3

    work = tmp_path_factory.mktemp("distributed")
    s3 = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"dist-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=bucket)
    server = PasswordRedis(work / "redis", password=f"redis-pw-{secrets.token_hex(12)}")
    cluster = None
    try:
        cluster = Cluster(
            redis=server,
            endpoint=s3_endpoint,
            bucket=bucket,
            prefix="ascent",
            aws_secret=f"aws-secret-{secrets.token_hex(12)}",
            s3=s3,
            work=work,
        )
        # The workers may read inputs in place under the bucket's datasets/ prefix (s3 prefix test).
        worker_env = {**cluster.env(), "ASCENT_INPUT_ROOTS": f"s3://{bucket}/datasets/"}
        cluster.workers = Workers(["dist-a", "dist-b"], worker_env, work / "logs", work)
        cluster.workers.wait_until_ready()
        yield cluster
    finally:
        if cluster is not None and cluster.workers is not None:
            cluster.workers.stop()
        server.stop()


@pytest.fixture(scope="module")
def val_images(assets, cluster) -> Path:
    """The first six ImageNet validation images of the CS231n set, as PNG files in a folder."""
    return write_images(cluster.work / "images", assets / "cs231n" / "datasets" / "imagenet_val_25.npz")


@pytest.fixture(scope="module")
def weights(assets) -> list[str]:
    return ["--weights", str(assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth")]


@pytest.fixture(scope="module")
def embedded_summary(cluster, val_images, weights) -> tuple[dict[str, Any], Path]:
    """The reference: an embedded ``ascent run`` (private Redis, one local worker, file:// store)."""
    store = cluster.work / "embedded-store"
    args = ["run", "fool", "--images", str(val_images), *FOOL_ARGS, *weights]
    ascent([*args, "--store", store.as_uri(), "--run-id", "embedded"], ascent_env(), cluster.work)
    root = store / "runs" / "embedded"
    return json.loads((root / "summary.json").read_text()), root


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in RUN_SPECIFIC}


# ----------------------------------------------------------------------------- tests


@pytest.mark.integration
@pytest.mark.slow
def test_local_inputs_are_uploaded_once_and_two_workers_give_the_embedded_runs_summary(
    cluster, val_images, weights, embedded_summary
):
    reference, reference_root = embedded_summary
    run_id, summary, printed = cluster.submit_and_collect(["fool", "--images", str(val_images), *FOOL_ARGS, *weights])

    assert comparable(summary) == comparable(reference)
    assert summary["n_done"] == N_IMAGES and 0 < summary["n_fooled"] < N_IMAGES  # a meaningful comparison
    assert summary["report"] == f"{cluster.store}/runs/{run_id}/report.html"
    assert f"run {run_id} (fool, squeezenet1_1): {N_IMAGES} items, {N_IMAGES} done" in printed
    assert set(summary["workers"]) <= cluster.workers.nodes

    # Each local file uploaded exactly once, under its item id, and the weights file once under its
    # name; the workers read the copies.
    uploads = cluster.keys(run_id, "uploads")
    assert sorted(k.rsplit("/", 1)[1] for k in uploads) == [*(f"{i:06d}.png" for i in range(N_IMAGES)), "weights.pth"]
    assert cluster.get(cluster.key(run_id, "uploads", "weights.pth")) == Path(weights[1]).read_bytes()
    for i in range(N_IMAGES):
        assert cluster.get(cluster.key(run_id, "uploads", f"{i:06d}.png")) == (val_images / f"img-{i}.png").read_bytes()
    manifest_items = [i for s in cluster.get_json(run_id, "manifest.json")["shards"] for i in s["items"]]
    assert [i["original"] for i in manifest_items] == [(val_images / f"img-{i}.png").as_uri() for i in range(N_IMAGES)]
    assert [i["source"] for i in manifest_items] == [
        f"{cluster.store}/runs/{run_id}/uploads/{i:06d}.png" for i in range(N_IMAGES)
    ]

    # Every output referenced exists, and is the embedded run's image byte for byte.
    items = cluster.items(run_id)
    assert [r["item_id"] for r in items] == [f"{i:06d}" for i in range(N_IMAGES)]
    for row in items:
        assert row["source"].startswith(f"{cluster.store}/runs/{run_id}/uploads/")
        assert cluster.object_exists(row["output"]), row["output"]
        assert cluster.object_exists(row["output"].replace("/outputs/", "/inputs/"))
        expected = (reference_root / "outputs" / f"{row['item_id']}.png").read_bytes()
        assert cluster.get(row["output"][len(f"s3://{cluster.bucket}/") :]) == expected
    assert cluster.object_exists(summary["report"])

    status = ascent(["status", run_id], cluster.env(), cluster.work).stdout
    assert f"{N_IMAGES} items, {N_IMAGES} done, 0 failed, 0 pending" in status
    for node, n in summary["workers"].items():
        assert f"  {node}: {n} items" in status


@pytest.mark.integration
@pytest.mark.slow
def test_an_s3_prefix_is_read_in_place_and_gives_the_same_summary(cluster, val_images, weights, embedded_summary):
    reference, _ = embedded_summary
    for i in range(N_IMAGES):  # the same images, in the bucket (and a hidden file that is skipped)
        body = (val_images / f"img-{i}.png").read_bytes()
        cluster.s3.put_object(Bucket=cluster.bucket, Key=f"datasets/val/img-{i}.png", Body=body)
    cluster.s3.put_object(Bucket=cluster.bucket, Key="datasets/val/.DS_Store", Body=b"junk")

    images = f"s3://{cluster.bucket}/datasets/val/"
    run_id, summary, _ = cluster.submit_and_collect(["fool", "--images", images, *FOOL_ARGS, *weights])

    assert comparable(summary) == comparable(reference)
    # No input copied; only the producer's weights file, which workers cannot see otherwise.
    assert [k.rsplit("/", 1)[1] for k in cluster.keys(run_id, "uploads")] == ["weights.pth"]
    items = cluster.items(run_id)
    assert [r["source"] for r in items] == [f"{images}img-{i}.png" for i in range(N_IMAGES)]
    assert all("original" not in r for r in items)
    assert all(cluster.object_exists(r["output"]) for r in items)
    # Each shard record names the worker that wrote it: over this module's runs, both took part.
    assert record_workers(cluster) == cluster.workers.nodes

    # With --presign the summary, items.jsonl and the report link plain HTTPS/HTTP URLs that need no
    # credentials (here: the moto endpoint, as no ASCENT_S3_PUBLIC_ENDPOINT is set).
    ascent(["collect", run_id, "--presign", "600"], cluster.env(), cluster.work)
    import requests

    presigned = cluster.get_json(run_id, "summary.json")
    assert comparable(presigned) == comparable(summary)
    report = requests.get(presigned["report"], timeout=10)
    path_style = f"{cluster.endpoint}/{cluster.bucket}/{cluster.prefix}/runs/{run_id}/report.html?"
    assert presigned["report"].startswith(path_style) and "X-Amz-Signature" in presigned["report"]
    assert report.status_code == 200 and run_id in report.text
    for row in cluster.items(run_id):
        assert row["output"].startswith(cluster.endpoint) and "X-Amz-Expires=600" in row["output"]
        assert row["output"] in report.text.replace("&amp;", "&")
        image = requests.get(row["output"], timeout=10)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


@pytest.mark.integration
@pytest.mark.slow
def test_task_messages_carry_no_credentials_and_are_json(cluster, tmp_path):
    # Database 1 of the same Redis has no workers: the messages stay in the queue to be read raw.
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(N_IMAGES):
        (folder / f"{i}.png").write_bytes(png_bytes(i))
    run_id, submitted = cluster.submit(["fool", "--images", str(folder), *FOOL_ARGS, "--model", "tiny"], db=1)
    client = cluster.redis.client(db=1)
    try:
        raw_messages = client.lrange(DEFAULT_QUEUE, 0, -1)
        everything = b"".join(k + b"".join(v if isinstance(v, list) else [v]) for k, v in _dump(client).items())
    finally:
        client.close()

    assert len(raw_messages) == N_IMAGES // 2  # one per shard
    secrets_ = [cluster.aws_secret, cluster.redis.password]
    for raw in raw_messages:
        message = json.loads(raw)
        assert message["content-type"] == "application/json" and message["content-encoding"] == "utf-8"
        body = base64.b64decode(message["body"])
        assert not body.startswith(b"\x80")  # not a pickle
        args, kwargs, _ = json.loads(body)
        assert args[0]["spec"]["run_id"] == run_id and kwargs == {}
        for secret in secrets_:
            assert secret.encode() not in raw and secret.encode() not in body
    assert run_id.encode() in everything  # the dump holds the messages
    for secret in secrets_:
        assert secret.encode() not in everything  # nor anywhere else in that Redis database
        assert secret not in submitted.stdout + submitted.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_no_credentials_in_the_workers_logs(cluster):
    logs = cluster.workers.logs()
    assert "dist-a@" in logs and "ready" in logs  # the logs are real
    assert f"redis://:**@127.0.0.1:{cluster.redis.port}/0" in logs  # the broker is named, masked
    assert cluster.redis.password not in logs and cluster.aws_secret not in logs


def record_workers(cluster: Cluster) -> set[str]:
    listed = cluster.s3.list_objects_v2(Bucket=cluster.bucket, Prefix=f"{cluster.prefix}/runs/")
    keys = [obj["Key"] for obj in listed.get("Contents", ()) if "/records/" in obj["Key"]]
    return {json.loads(cluster.get(key))["worker"] for key in keys}


def _dump(client: redis.Redis) -> dict[bytes, Any]:
    """Every key of the database and its value (lists and hashes flattened to byte strings)."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == b"hash":
            out[key] = [b"%s=%s" % kv for kv in client.hgetall(key).items()]
        elif kind == b"set":
            out[key] = list(client.smembers(key))
        elif kind == b"zset":
            out[key] = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"string":
            out[key] = client.get(key) or b""
    return out


# ----------------------------------------------------------------------------- inputs for remote workers


def png_bytes(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def npz_bytes(n: int) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, X=np.arange(n * 8 * 8 * 3, dtype=np.uint8).reshape(n, 8, 8, 3), y=np.arange(n) + 10)
    return buf.getvalue()


def test_local_inputs_are_uploaded_once_under_item_ids_never_file_names(tmp_path):
    from ascent.producer.inputs import enumerate_inputs
    from ascent.producer.submit import upload_inputs
    from ascent.shared.sources import SourceReader
    from ascent.shared.spec import JobSpec
    from ascent.shared.store import MemoryStore

    load_source_image = SourceReader().load_image

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a b#1 ...PNG").write_bytes(png_bytes(1))  # odd name: only the extension is kept
    (folder / "b.png").write_bytes(png_bytes(2))
    (tmp_path / "x.npz").write_bytes(npz_bytes(3))
    (tmp_path / "style.weird ext").write_bytes(png_bytes(3))
    store = MemoryStore(f"uploads-{secrets.token_hex(4)}")
    paths = [str(folder), str(tmp_path / "x.npz"), str(folder / "b.png")]  # b.png named twice
    items = enumerate_inputs(paths)
    style = [(tmp_path / "style.weird ext").as_uri(), "s3://bucket/styles/monet.jpg"]
    spec = JobSpec("style", "r1", store.uri, model="tiny", params={"style": style}, inputs=("x",)).validate()

    done = upload_inputs(spec, items, store)

    assert store.list("") == [
        "runs/r1/uploads/000000.png",
        "runs/r1/uploads/000001.png",
        "runs/r1/uploads/000002.npz",  # one upload for the three rows
        "runs/r1/uploads/style-0",  # an extension that is not plain letters and digits is dropped
    ]
    assert (done.files, done.bytes) == (4, sum(len(store.get(k)) for k in store.list("")))
    base = f"{store.uri}/runs/r1/uploads"
    assert [i.source for i in done.items] == [
        f"{base}/000000.png",
        f"{base}/000001.png",
        f"{base}/000002.npz#0",
        f"{base}/000002.npz#1",
        f"{base}/000002.npz#2",
        f"{base}/000001.png",  # the same file as item 000001: not uploaded again
    ]
    assert {i.item_id: i.original for i in done.items} == {i.item_id: i.source for i in items}
    assert done.spec.params.style == (f"{base}/style-0", "s3://bucket/styles/monet.jpg")
    assert done.spec.inputs == spec.inputs  # what the user named, for the record
    # Workers read the copies.
    image, label = load_source_image(f"{base}/000002.npz#2")
    assert label == 12 and image.shape == (8, 8, 3)
    assert load_source_image(f"{base}/000000.png")[0][0, 0].tolist() == [1, 1, 1]


def test_submit_uploads_only_for_stores_other_workers_cannot_see_the_producers_files(tmp_path, redis_url):
    from ascent.producer.inputs import enumerate_inputs
    from ascent.producer.submit import submit
    from ascent.shared.queue import create_app
    from ascent.shared.spec import JobSpec
    from ascent.shared.store import FileStore, MemoryStore

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png_bytes(7))
    items = enumerate_inputs([str(tmp_path / "in")])
    app = create_app(Settings(broker_url=redis_url))
    notes: list[str] = []
    try:
        for store in (FileStore(tmp_path / "store"), MemoryStore(f"submit-{secrets.token_hex(4)}")):
            spec = JobSpec("saliency", "r1", store.uri, model="tiny", inputs=("x",))
            manifest = submit(spec, items, 4, store, app, note=notes.append).to_dict()
            item = manifest["shards"][0]["items"][0]
            if isinstance(store, FileStore):  # read in place
                assert store.list("runs/r1/uploads/") == [] and "original" not in item
                assert item["source"] == (tmp_path / "in" / "a.png").as_uri()
            else:
                assert store.list("runs/r1/uploads/") == ["runs/r1/uploads/000000.png"]
                assert item == {
                    "item_id": "000000",
                    "source": f"{store.uri}/runs/r1/uploads/000000.png",
                    "label": None,
                    "original": (tmp_path / "in" / "a.png").as_uri(),
                    "path": "a.png",
                }
    finally:
        app.close()
    assert len(notes) == 1 and notes[0].startswith("uploaded 1 local input file(s)")


@pytest.mark.integration
def test_an_s3_prefix_lists_image_objects_like_a_folder(s3_endpoint, s3_bucket):
    from ascent.producer.inputs import enumerate_inputs
    from ascent.shared.sources import SourceReader

    s3 = boto3_client(s3_endpoint)
    for key, body in {
        "val/b.png": png_bytes(2),
        "val/a b#1.JPG": png_bytes(1),  # a key that is no valid URI path as it is
        "val/sub/c.png": png_bytes(3),
        "val/.hidden/x.png": png_bytes(4),
        "val/.x.png": png_bytes(4),
        "val/notes.txt": b"not an image",
        "val/batch.npz": npz_bytes(2),  # only image files count in a listing, as in a folder
        "valley/z.png": png_bytes(5),  # shares the prefix "val" but is not under val/
    }.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=body)
    settings = Settings(aws_endpoint_url=s3_endpoint)

    expected = [f"s3://{s3_bucket}/val/{k}" for k in ("a%20b%231.JPG", "b.png", "sub/c.png")]
    for uri in (f"s3://{s3_bucket}/val/", f"s3://{s3_bucket}/val"):
        assert [i.source for i in enumerate_inputs([uri], settings=settings)] == expected
    reader = SourceReader(settings)
    pixels = [reader.load_image(u)[0][0, 0, 0] for u in expected]
    assert pixels == [1, 2, 3]

    one = enumerate_inputs([f"s3://{s3_bucket}/val/b.png"], settings=settings)
    assert [(i.item_id, i.source) for i in one] == [("000000", f"s3://{s3_bucket}/val/b.png")]
    rows = enumerate_inputs([f"s3://{s3_bucket}/val/batch.npz"], settings=settings)
    assert [(i.source, i.label) for i in rows] == [
        (f"s3://{s3_bucket}/val/batch.npz#0", 10),
        (f"s3://{s3_bucket}/val/batch.npz#1", 11),
    ]
    assert reader.load_image(rows[1].source)[1] == 11


@pytest.mark.integration
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("s3://{bucket}/nothing/", "no images"),
        ("s3://no-such-bucket-{bucket}/val/", "does not exist"),
        ("s3://Bad_Bucket/x", "not a valid bucket name"),
        ("s3://{bucket}/a#b.png", "write '#' as %23"),
    ],
)
def test_a_bad_s3_input_names_the_inputs_field(s3_endpoint, s3_bucket, where, message):
    from ascent.producer.inputs import enumerate_inputs
    from ascent.shared.errors import InvalidSpec

    with pytest.raises(InvalidSpec) as error:
        enumerate_inputs([where.format(bucket=s3_bucket)], settings=Settings(aws_endpoint_url=s3_endpoint))
    assert error.value.field == "inputs" and message in str(error.value)


def boto3_client(endpoint: str) -> Any:
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")


def test_s3_clients_use_path_style_with_an_endpoint_standard_retries_and_timeouts(monkeypatch):
    from ascent.shared.s3store import S3Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")  # presigning needs some credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")

    store = S3Store.from_uri("s3://bucket/p", endpoint_url="http://minio:9000", region="us-east-1")
    config = store.client.meta.config
    assert config.s3["addressing_style"] == "path"
    assert config.retries == {"mode": "standard", "total_max_attempts": 6}  # 5 retries
    assert (config.connect_timeout, config.read_timeout) == (10, 60)
    assert store.url("runs/r/x.png", expires=60).startswith("http://minio:9000/bucket/p/runs/r/x.png?")
    aws = S3Store.from_uri("s3://bucket/p", region="us-east-1")
    assert aws.endpoint_url is None and aws.client.meta.config.s3["addressing_style"] == "auto"


# ----------------------------------------------------------------------------- cancel


@pytest.mark.integration
@pytest.mark.slow
def test_cancel_mid_run_keeps_finished_items_and_records_the_rest_cancelled_within_seconds(
    cluster, tmp_path, monkeypatch, capsys
):
    rng = np.random.default_rng(14)
    folder = tmp_path / "forty"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    # The tiny model never reaches class 6: every shard of 2 runs all its iterations (a few seconds).
    args = ["fool", "--images", str(folder), "--model", "tiny", "--target", "6", "--max-iters", "500"]
    run_id, _ = cluster.submit([*args, "--size", "32", "--shard-size", "2"])
    deadline = time.monotonic() + 120
    while not cluster.keys(run_id, "records"):  # the first shard is finished: cancel mid-run
        assert time.monotonic() < deadline, "no shard finished in 120 s"
        time.sleep(0.2)

    cancelled = ascent(["cancel", run_id], cluster.env(), cluster.work)
    t_cancel = time.monotonic()
    collected = ascent(["collect", run_id, "--wait", "--timeout", "60"], cluster.env(), cluster.work)
    waited = time.monotonic() - t_cancel

    assert f"run {run_id}: cancelled" in cancelled.stdout
    assert waited < 10, f"collect --wait returned {waited:.1f}s after the cancel"
    items = cluster.items(run_id)
    assert sorted(r["item_id"] for r in items) == [f"{i:06d}" for i in range(40)]  # each exactly once
    counts = {s: sum(r["status"] == s for r in items) for s in ("done", "failed", "cancelled")}
    assert sum(counts.values()) == 40 and counts["done"] >= 2 and counts["cancelled"] >= 10
    marker = cluster.get_json(run_id, "cancel.json")
    records = [json.loads(cluster.get(k)) for k in cluster.keys(run_id, "records")]
    assert len(records) == 20
    started = [r["kernel_started_at"] for r in records if "kernel_started_at" in r]
    assert started and max(started) < marker["at"]  # no kernel started after the marker
    assert any("kernel_started_at" not in r for r in records)  # queued shards: recorded without a kernel
    summary = cluster.get_json(run_id, "summary.json")
    assert (summary["n_done"], summary["n_cancelled"], summary["n_pending"]) == (counts["done"], counts["cancelled"], 0)
    assert f"{counts['cancelled']} cancelled" in collected.stdout
    report = cluster.get(cluster.key(run_id, "report.html")).decode()
    assert f"<div class=v>{counts['cancelled']}</div><div class=k>cancelled</div>" in report

    # The same commands in this process (a subprocess costs seconds): with the fleet's settings.
    from ascent.producer.cli import main

    for name, value in cluster.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # main's handlers stay out of pytest
    capsys.readouterr()
    assert main(["status", run_id]) == 0
    assert f"{counts['failed']} failed, 0 pending, {counts['cancelled']} cancelled" in capsys.readouterr().out
    assert main(["cancel", run_id]) == 0
    again = capsys.readouterr().out
    assert "was already cancelled" in again and "0 still to be recorded" in again
    assert main(["runs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    row = next(line.split() for line in listed if line.startswith(run_id))
    numbers = ["40", str(counts["done"]), str(counts["failed"]), str(counts["cancelled"]), "0", "0"]
    assert row[-7:] == [*numbers, "cancelled"]
