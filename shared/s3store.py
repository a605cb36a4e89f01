"""S3 and S3-compatible object stores (AWS, MinIO, Ceph, moto) behind the ``Store`` interface.

``S3Store.from_uri("s3://bucket/prefix", endpoint_url="http://minio:9000")``. With an endpoint set,
requests use path-style addressing (``http://minio:9000/bucket/key``), which MinIO and moto need.
Credentials come from boto3's own chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a
profile or an instance role); nothing here stores them.

Errors say whether to retry: network faults, 5xx and throttling raise ``TransientError`` (after
botocore's own standard-mode retries); a missing key raises ``NotFoundInStore``; a missing bucket
raises ``BucketNotFound``; anything else (access denied, bad request) raises ``StoreError``.
"""

from __future__ import annotations

import io
import mimetypes
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ascent.shared.errors import (
    AlreadyExists,
    InvalidInput,
    NotFoundInStore,
    StoreError,
    StoreUnavailable,
    TransientError,
)
from ascent.shared.keys import validate_key
from ascent.shared.store import Store
from ascent.shared.uris import parse_uri

MiB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
DEFAULT_MAX_ATTEMPTS = 5
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RETRYABLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})
_CREDENTIAL_CODES = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)


class BucketNotFound(StoreError):
    """The bucket does not exist (permanent: create it or fix the store URI)."""


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    """``endpoint_url``, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else None (AWS itself)."""
    # boto3 reads these variables anyway; reading them here too lets path-style addressing follow.
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def client_config(*, path_style: bool, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Config:
    """The botocore configuration every S3 client here uses."""
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if path_style else "auto"},
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        tcp_keepalive=True,
        # botocore >= 1.36 adds CRC trailers by default, which several S3-compatible servers reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def bucket_not_found(bucket: str, endpoint: str | None) -> BucketNotFound:
    where = f" at {endpoint}" if endpoint else ""
    return BucketNotFound(f"bucket {bucket!r} does not exist{where}: create it or fix the store URI (not retryable)")


@contextmanager
def translate_errors(
    what: str, bucket: str, endpoint: str | None, transient: type[TransientError] = TransientError
) -> Iterator[None]:
    """Turn botocore exceptions raised inside the block into ascent's errors naming ``what``; faults
    that may pass become ``transient`` (a store's are StoreUnavailable: retried until it answers)."""
    where = f" at {endpoint}" if endpoint else ""
    try:
        yield
    except ClientError as e:
        error = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or code
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            raise bucket_not_found(bucket, endpoint) from None
        if code in _NOT_FOUND_CODES:
            raise NotFoundInStore(f"{what} does not exist") from None
        if code == "PreconditionFailed":
            raise AlreadyExists(f"{what} already exists") from None
        if status >= 500 or code in _RETRYABLE_CODES:
            raise transient(f"{what}: S3{where} answered {status} {code}: {message} (retry later)") from e
        if code in _CREDENTIAL_CODES:
            raise StoreError(
                f"{what}: access denied ({code}){where}: check the AWS credentials and the bucket policy"
                " (not retryable)"
            ) from e
        raise StoreError(f"{what}: S3 error {code} ({status}): {message} (not retryable)") from e
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise StoreError(
            f"{what}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile/role)"
        ) from e
    except (BotoConnectionError, HTTPClientError) as e:
        raise transient(f"{what}: cannot reach S3{where}: {e} (retry later)") from e
    except BotoCoreError as e:
        raise StoreError(f"{what}: {e}") from e


class S3Client:
    """One boto3 S3 client for an endpoint and region, made on first use, and again in a forked child
    (the parent's sockets are not the child's). Owned by whoever made this object (a store, a worker's
    runtime, the producer): nothing is cached per module. Methods read any key (inputs), not only store
    keys; errors name ``what``."""

    def __init__(
        self, endpoint_url: str | None = None, region: str | None = None, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> None:
        self.endpoint_url = resolve_endpoint(endpoint_url)
        self.region = region
        self.max_attempts = max_attempts
        self._client: Any = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @property
    def client(self) -> Any:
        if self._pid != os.getpid():  # a forked child: the parent's client, sockets and lock are not ours
            self._lock, self._client, self._pid = threading.Lock(), None, os.getpid()
        with self._lock:
            if self._client is None:
                # A fresh session per client: boto3's default session is not thread-safe.
                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    config=client_config(path_style=self.endpoint_url is not None, max_attempts=self.max_attempts),
                )
            return self._client

    def errors(self, what: str, bucket: str) -> Any:
        return translate_errors(what, bucket, self.endpoint_url)

    def read(self, bucket: str, key: str, what: str | None = None) -> bytes:
        """The bytes of ``s3://bucket/key``."""
        with self.errors(what or f"s3://{bucket}/{key}", bucket):
            response = self.client.get_object(Bucket=bucket, Key=key)
            return bytes(response["Body"].read())  # inside the block: a broken stream is transient too

    def size(self, bucket: str, key: str, what: str | None = None) -> int:
        """The size in bytes of ``s3://bucket/key``."""
        with self.errors(what or f"s3://{bucket}/{key}", bucket):
            return int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])

    def list(self, bucket: str, prefix: str = "", what: str | None = None) -> list[str]:
        """Every key of ``bucket`` that starts with ``prefix``, in S3's order (UTF-8 binary)."""
        keys: list[str] = []
        with self.errors(what or f"s3://{bucket}/{prefix}", bucket):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", ()))
        return keys

    def etag(self, bucket: str, key: str, what: str | None = None) -> str:
        """The ETag of ``s3://bucket/key`` (changes whenever the object does)."""
        with self.errors(what or f"s3://{bucket}/{key}", bucket):
            return str(self.client.head_object(Bucket=bucket, Key=key)["ETag"])


class S3Store(Store):
    """Objects under ``s3://bucket/prefix/``. The client is made lazily, once per process."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_endpoint_url: str | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if not _BUCKET_RE.match(bucket):
            raise InvalidInput(f"{bucket!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.endpoint_url = resolve_endpoint(endpoint_url)
        self.region = region
        self.public_endpoint_url = public_endpoint_url or self.endpoint_url
        self.multipart_threshold = multipart_threshold
        self.max_attempts = max_attempts
        self.s3 = S3Client(self.endpoint_url, region, max_attempts=max_attempts)
        self._signer = S3Client(self.public_endpoint_url, region, max_attempts=max_attempts)
        self._bucket_checked = False

    @classmethod
    def from_uri(
        cls,
        uri: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_endpoint_url: str | None = None,
        **options: Any,
    ) -> S3Store:
        """``s3://bucket`` or ``s3://bucket/prefix``; ``options`` go to ``S3Store(...)``."""
        parsed = parse_uri(uri, rows=False)
        if parsed.scheme != "s3":
            raise InvalidInput(f"{uri!r} is not an S3 URI like s3://bucket/prefix")
        bucket, prefix = parsed.bucket, parsed.path
        return cls(
            bucket,
            prefix,
            endpoint_url=endpoint_url,
            region=region,
            public_endpoint_url=public_endpoint_url,
            **options,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def client(self) -> Any:
        return self.s3.client

    def _errors(self, key: str) -> Any:
        return translate_errors(f"{self.uri}/{key}", self.bucket, self.endpoint_url, StoreUnavailable)

    def _object_key(self, key: str) -> str:
        key = self.prefix + validate_key(key)
        self._ensure_bucket()
        return key

    def _ensure_bucket(self) -> None:
        # Checked once, so that a missing bucket is reported as such and not as a missing key
        # (HEAD requests carry no error code to tell the two apart).
        if self._bucket_checked:
            return
        with translate_errors(f"s3://{self.bucket}", self.bucket, self.endpoint_url):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in _MISSING_BUCKET_CODES:
                    raise bucket_not_found(self.bucket, self.endpoint_url) from None
                raise
        self._bucket_checked = True

    def create_bucket_if_missing(self) -> bool:
        """Create the bucket unless it exists; True when it was created."""
        with translate_errors(f"s3://{self.bucket}", self.bucket, self.endpoint_url):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return False
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in _MISSING_BUCKET_CODES:
                    raise
            args: dict[str, Any] = {"Bucket": self.bucket}
            if self.region and self.region != "us-east-1":  # us-east-1 rejects an explicit constraint
                args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self.client.create_bucket(**args)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise
                return False
        return True

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """One PUT below ``multipart_threshold``, a multipart upload above (both atomic on S3)."""
        object_key = self._object_key(key)
        content_type = content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"
        with self._errors(key):
            if len(data) < self.multipart_threshold:
                self.client.put_object(Bucket=self.bucket, Key=object_key, Body=bytes(data), ContentType=content_type)
            else:
                # s3transfer raises the part size to S3's 5 MiB minimum when the threshold is lower.
                transfer = TransferConfig(
                    multipart_threshold=self.multipart_threshold, multipart_chunksize=self.multipart_threshold
                )
                self.client.upload_fileobj(
                    io.BytesIO(data),
                    self.bucket,
                    object_key,
                    ExtraArgs={"ContentType": content_type},
                    Config=transfer,
                )

    def create(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """A PUT with ``If-None-Match: *`` (AWS since 2024, MinIO, moto): S3 itself refuses the second
        writer. A server that ignores the condition cannot refuse it (docs/reliability.md)."""
        object_key = self._object_key(key)
        with self._errors(key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=object_key,
                Body=bytes(data),
                ContentType=content_type or "application/octet-stream",
                IfNoneMatch="*",
            )

    def get(self, key: str) -> bytes:
        object_key = self._object_key(key)
        with self._errors(key):
            response = self.client.get_object(Bucket=self.bucket, Key=object_key)
            return bytes(response["Body"].read())

    def exists(self, key: str) -> bool:
        object_key = self._object_key(key)
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=object_key)
        except NotFoundInStore:
            return False
        return True

    def folders(self, prefix: str) -> list[str]:
        """The common prefixes directly under ``prefix`` (one listing with a delimiter, not every key)."""
        self._ensure_bucket()
        names: list[str] = []
        with self._errors(prefix + "*"):
            paginator = self.client.get_paginator("list_objects_v2")
            start = self.prefix + prefix
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start, Delimiter="/"):
                names.extend(p["Prefix"][len(start) :].rstrip("/") for p in page.get("CommonPrefixes", ()))
        return sorted(names)

    def list(self, prefix: str) -> list[str]:
        """Keys (without the store's prefix) that start with ``prefix``, sorted."""
        self._ensure_bucket()
        keys: list[str] = []
        with self._errors(prefix + "*"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", ()))
        return sorted(keys)

    def versions(self, prefix: str) -> dict[str, str | None]:
        """From the same listing: each object's ETag and last-modified time (no request per object)."""
        self._ensure_bucket()
        found: dict[str, str | None] = {}
        with self._errors(prefix + "*"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", ()):
                    found[obj["Key"][len(self.prefix) :]] = f"{obj.get('ETag')}:{obj.get('LastModified')}"
        return dict(sorted(found.items()))

    def url(self, key: str, expires: int | None = None) -> str:
        """``s3://bucket/prefix/key``, or with ``expires`` (seconds) a presigned HTTP GET URL that
        points at ``public_endpoint_url`` (the name clients use) when one is set."""
        object_key = self.prefix + validate_key(key)
        if expires is None:
            return f"s3://{self.bucket}/{object_key}"
        if not isinstance(expires, int) or not 0 < expires <= MAX_PRESIGN_SECONDS:
            raise InvalidInput(f"expires={expires!r}: must be 1..{MAX_PRESIGN_SECONDS} seconds")
        with self._errors(key):
            return str(
                self._signer.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": object_key}, ExpiresIn=expires
                )
            )

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=object_key)
