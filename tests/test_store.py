"""One contract for every store (memory, file, S3 over HTTP), then what only S3 has to get right."""

from __future__ import annotations

import http.server
import json
import multiprocessing
import os
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ascent.shared.errors import InvalidInput, NotFoundInStore, StoreError, TransientError
from ascent.shared.s3store import BucketNotFound, S3Client, S3Store
from ascent.shared.store import FileStore, MemoryStore, Store, open_store

UNSAFE_KEYS = [
    "..",
    "/abs",
    "a/../b",
    "",
    "ünïcödé.png",
    "a//b",
    "./a",
    "a/",
    "runs/r1/.hidden",
    "a\\b",
    "a b",
]


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty store of each kind, opened by URI as the rest of ascent opens them."""
    if request.param == "memory":
        return open_store(f"memory://contract-{uuid.uuid4().hex}")
    if request.param == "file":
        return open_store((tmp_path / "store").as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/ascent", endpoint_url=endpoint, region="us-east-1")


def reopen(store: Store, s3_endpoint: str | None = None) -> Store:
    return open_store(store.uri, endpoint_url=s3_endpoint, region="us-east-1")


# --- the contract -------------------------------------------------------------------------------


def test_open_store_picks_the_implementation_by_scheme(store: Store) -> None:
    scheme = urlsplit(store.uri).scheme
    expected = {"memory": MemoryStore, "file": FileStore, "s3": S3Store}[scheme]
    assert isinstance(store, expected)


def test_put_then_get_returns_the_same_bytes(store: Store) -> None:
    data = bytes(range(256)) * 40
    store.put("runs/r1/outputs/a.png", data, "image/png")
    store.put("runs/r1/empty.bin", b"")
    assert store.get("runs/r1/outputs/a.png") == data
    assert store.get("runs/r1/empty.bin") == b""


def test_put_overwrites_an_existing_key(store: Store) -> None:
    store.put("runs/r1/records/s0.json", b"old")
    store.put("runs/r1/records/s0.json", b"new and longer")
    assert store.get("runs/r1/records/s0.json") == b"new and longer"


def test_exists_is_true_only_for_written_keys(store: Store) -> None:
    assert not store.exists("runs/r1/spec.json")
    store.put("runs/r1/spec.json", b"{}")
    assert store.exists("runs/r1/spec.json")
    assert not store.exists("runs/r1/spec.jso")
    assert not store.exists("runs/r1")  # a "folder" is not an object


def test_list_returns_the_keys_under_a_prefix_sorted(store: Store) -> None:
    for key in ["runs/r1/outputs/b.png", "runs/r1/outputs/a.png", "runs/r1/records/s1.json", "runs/r10/x"]:
        store.put(key, b"x")
    assert store.list("runs/r1/outputs/") == ["runs/r1/outputs/a.png", "runs/r1/outputs/b.png"]
    assert store.list("runs/r1/") == [
        "runs/r1/outputs/a.png",
        "runs/r1/outputs/b.png",
        "runs/r1/records/s1.json",
    ]
    assert store.list("runs/r1") == [*store.list("runs/r1/"), "runs/r10/x"]  # a plain string prefix
    assert store.list("") == store.list("runs/")


def test_versions_name_the_listed_keys_and_change_when_an_object_is_written_again(store: Store) -> None:
    for key in ["runs/r1/records/s0.json", "runs/r1/records/s1.json", "runs/r10/records/s0.json"]:
        store.put(key, b'{"n": 1}')
    first = store.versions("runs/r1/records/")
    assert list(first) == store.list("runs/r1/records/") and None not in first.values()
    assert store.versions("runs/r1/records/") == first  # nothing written: the same versions
    store.put("runs/r1/records/s0.json", b'{"n": 2}')
    again = store.versions("runs/r1/records/")
    assert again["runs/r1/records/s0.json"] != first["runs/r1/records/s0.json"]
    assert again["runs/r1/records/s1.json"] == first["runs/r1/records/s1.json"]


def test_list_of_an_unknown_prefix_is_empty(store: Store) -> None:
    assert store.list("runs/nothing-here/") == []


def test_get_of_a_missing_key_raises_not_found_and_is_not_retryable(store: Store) -> None:
    with pytest.raises(NotFoundInStore, match=r"runs/r1/missing\.png") as info:
        store.get("runs/r1/missing.png")
    assert isinstance(info.value, KeyError)
    assert not info.value.retryable


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_rejected_by_every_operation(store: Store, key: str) -> None:
    operations = [
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.url(key),
        lambda: store.delete(key),
    ]
    for operation in operations:
        with pytest.raises(InvalidInput, match="unsafe store key"):
            operation()


def test_json_helpers_roundtrip(store: Store) -> None:
    record = {"item": "i-7", "fooled": True, "iterations": 12, "l2": 0.25, "labels": [6, None]}
    store.put_json("runs/r1/records/s7.json", record)
    assert store.get_json("runs/r1/records/s7.json") == record
    assert json.loads(store.get("runs/r1/records/s7.json")) == record


def test_delete_removes_the_key_and_ignores_a_missing_one(store: Store) -> None:
    store.put("runs/r1/x.bin", b"x")
    store.delete("runs/r1/x.bin")
    store.delete("runs/r1/x.bin")
    assert not store.exists("runs/r1/x.bin")
    assert store.list("runs/r1/") == []


def test_url_names_the_object_under_the_store_uri(store: Store) -> None:
    url = store.url("runs/r1/outputs/a.png")
    assert url.startswith(store.uri)
    assert url.endswith("/runs/r1/outputs/a.png")


def test_a_second_store_opened_on_the_same_uri_sees_the_objects(store: Store, request: pytest.FixtureRequest) -> None:
    endpoint = request.getfixturevalue("s3_endpoint") if isinstance(store, S3Store) else None
    store.put("runs/r1/manifest.json", b"shared")
    assert reopen(store, endpoint).get("runs/r1/manifest.json") == b"shared"


# --- S3 only ------------------------------------------------------------------------------------


@pytest.fixture
def s3_store(s3_endpoint: str, s3_bucket: str) -> S3Store:
    return S3Store.from_uri(f"s3://{s3_bucket}/pfx", endpoint_url=s3_endpoint, region="us-east-1")


def test_s3_uri_parsing() -> None:
    assert S3Store.from_uri("s3://bucket").prefix == ""
    store = S3Store.from_uri("s3://bucket/a/b/")
    assert (store.bucket, store.prefix, store.uri) == ("bucket", "a/b/", "s3://bucket/a/b")
    assert store.url("runs/r/x.png") == "s3://bucket/a/b/runs/r/x.png"
    for bad in ["s3://Bad_Bucket/x", "s3:///x", "s3://b/x", "s3://bucket/../x"]:
        with pytest.raises(InvalidInput):
            S3Store.from_uri(bad)


def test_s3_objects_live_under_the_store_prefix(s3_store: S3Store, s3_endpoint: str) -> None:
    s3_store.put("runs/r1/outputs/a.png", b"png")
    raw = S3Client(s3_endpoint, "us-east-1").client.list_objects_v2(Bucket=s3_store.bucket)
    assert [obj["Key"] for obj in raw["Contents"]] == ["pfx/runs/r1/outputs/a.png"]
    assert s3_store.list("") == ["runs/r1/outputs/a.png"]


def test_s3_content_type_is_guessed_from_the_key(s3_store: S3Store, s3_endpoint: str) -> None:
    s3_store.put("runs/r1/outputs/a.png", b"png")
    s3_store.put("runs/r1/blob", b"?")
    client = S3Client(s3_endpoint, "us-east-1").client
    assert client.head_object(Bucket=s3_store.bucket, Key="pfx/runs/r1/outputs/a.png")["ContentType"] == "image/png"
    head = client.head_object(Bucket=s3_store.bucket, Key="pfx/runs/r1/blob")
    assert head["ContentType"] == "application/octet-stream"


def test_s3_large_object_is_uploaded_in_parts_and_reads_back(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store.from_uri(f"s3://{s3_bucket}/big", endpoint_url=s3_endpoint, multipart_threshold=1024 * 1024)
    data = os.urandom(11 * 1024 * 1024)  # parts are raised to S3's 5 MiB minimum: 3 parts
    store.put("runs/r1/big.bin", data)
    assert store.get("runs/r1/big.bin") == data
    etag = S3Client(s3_endpoint).client.head_object(Bucket=s3_bucket, Key="big/runs/r1/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart ETag counts its parts


def test_s3_presigned_url_is_fetchable_over_http(s3_store: S3Store) -> None:
    s3_store.put("runs/r1/outputs/a.png", b"\x89PNG fake")
    url = s3_store.url("runs/r1/outputs/a.png", expires=60)
    assert url.startswith("http://127.0.0.1:") and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"\x89PNG fake"


def test_s3_presigned_url_points_at_the_public_endpoint(s3_endpoint: str, s3_bucket: str) -> None:
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    store = S3Store.from_uri(f"s3://{s3_bucket}", endpoint_url=s3_endpoint, public_endpoint_url=public)
    store.put("runs/r1/a.txt", b"hello")
    url = store.url("runs/r1/a.txt", expires=60)
    assert url.startswith(public + "/")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"hello"


@pytest.mark.parametrize("expires", [0, -1, 8 * 24 * 3600])
def test_s3_presigned_url_lifetime_must_be_valid(s3_store: S3Store, expires: int) -> None:
    with pytest.raises(InvalidInput, match="expires"):
        s3_store.url("runs/r1/a.png", expires=expires)


def test_s3_missing_bucket_is_reported_by_name_and_not_retried(s3_endpoint: str) -> None:
    store = S3Store.from_uri("s3://no-such-bucket-here/x", endpoint_url=s3_endpoint)
    with pytest.raises(BucketNotFound, match="no-such-bucket-here") as info:
        store.exists("runs/r1/spec.json")
    assert not info.value.retryable
    with pytest.raises(BucketNotFound):
        store.list("runs/")


def test_s3_create_bucket_if_missing_creates_it_once(s3_endpoint: str) -> None:
    store = S3Store.from_uri(f"s3://made-{uuid.uuid4().hex[:10]}/p", endpoint_url=s3_endpoint)
    assert store.create_bucket_if_missing() is True
    assert store.create_bucket_if_missing() is False
    store.put("k", b"v")
    assert store.get("k") == b"v"


@pytest.mark.usefixtures("s3_endpoint")  # for its dummy credentials
def test_s3_unreachable_endpoint_is_transient() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3Store.from_uri("s3://bucket/p", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    with pytest.raises(TransientError, match=f"127.0.0.1:{port}") as info:
        store.get("runs/r1/x")
    assert info.value.retryable


class _FailingS3(http.server.BaseHTTPRequestHandler):
    """Answers HEAD (the bucket check) with 200 and every GET with the configured S3 error."""

    status = 503
    code = "SlowDown"

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = f"<Error><Code>{self.code}</Code><Message>injected {self.code}</Message></Error>".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_s3(request: pytest.FixtureRequest) -> Iterator[str]:
    status, code = request.param
    handler = type("Handler", (_FailingS3,), {"status": status, "code": code})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("failing_s3", "expected", "retryable"),
    [
        ((503, "SlowDown"), TransientError, True),
        ((500, "InternalError"), TransientError, True),
        ((503, "ServiceUnavailable"), TransientError, True),
        ((403, "AccessDenied"), StoreError, False),
        ((400, "InvalidRequest"), StoreError, False),
    ],
    indirect=["failing_s3"],
)
@pytest.mark.usefixtures("s3_endpoint")  # for its dummy credentials
def test_s3_errors_say_whether_to_retry(failing_s3: str, expected: type[Exception], retryable: bool) -> None:
    store = S3Store.from_uri("s3://bucket/p", endpoint_url=failing_s3, max_attempts=1)
    with pytest.raises(expected, match="s3://bucket/p/runs/r1/x") as info:
        store.get("runs/r1/x")
    assert getattr(info.value, "retryable", None) is retryable


def _put_from_child(store: S3Store, parent_client: object, result: multiprocessing.Queue) -> None:
    store.put("runs/r1/from-child", b"child")
    result.put(store.client is not parent_client)


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
def test_s3_store_works_in_a_forked_child_with_its_own_client(s3_store: S3Store) -> None:
    s3_store.put("runs/r1/from-parent", b"parent")  # the parent has a client and open connections
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    child = context.Process(target=_put_from_child, args=(s3_store, s3_store.client, result))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert result.get(timeout=5) is True
    assert s3_store.get("runs/r1/from-child") == b"child"
