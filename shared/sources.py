"""Read an item's source: ``file:///abs/path`` (or a plain path), ``s3://bucket/key`` (the key
percent-encoded), and ``memory://name/key`` (an in-process store, for tests).

``file:///data/val.npz#3`` and ``s3://bucket/val.npz#3`` name image 3 of an .npz (arrays ``X`` and
optional ``y``). Errors name the URI: a missing or unreadable input is ``InvalidInput`` (permanent),
a network or I/O fault that may pass is ``TransientError``.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

from shared.errors import InvalidInput, NotFoundInStore, TransientError
from shared.images import NpzImages, decode_image, read_npz
from shared.s3store import BucketNotFound, object_etag, read_object, split_s3_uri
from shared.settings import Settings
from shared.store import MemoryStore, validate_key

NPZ_CACHE_FILES = 2
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_NPZ_URI = re.compile(r"^(?P<base>.+\.npz)#(?P<index>[^#]*)$", re.IGNORECASE)
_PERMANENT_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP}
)


def split_npz_uri(uri: str) -> tuple[str, int] | None:
    """``"file:///d/x.npz#3"`` -> ``("file:///d/x.npz", 3)``; None for a source that is not an .npz."""
    match = _NPZ_URI.match(uri)
    if match is None:
        if uri.lower().endswith(".npz"):
            raise InvalidInput(f"{uri}: an .npz source needs an image index, e.g. {uri}#0")
        return None
    if not re.fullmatch(r"[0-9]+", match["index"]):
        raise InvalidInput(f"{uri}: the part after '#' must be a non-negative image index")
    return match["base"], int(match["index"])


def _scheme(uri: str) -> str:
    match = _SCHEME.match(uri)
    return match[1].lower() if match else ""


def _local_path(uri: str) -> Path:
    if _scheme(uri) != "file":
        return Path(uri)
    rest = uri[len("file:") :]
    if rest.startswith("//"):
        host, _, path = rest[2:].partition("/")
        if host not in ("", "localhost"):
            raise InvalidInput(f"{uri}: only local file URIs are supported: file:///absolute/path")
        rest = "/" + path
    return Path(unquote(rest))


@contextmanager
def _local_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise InvalidInput(f"{uri}: file does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"{uri}: is a directory, not a file") from None
    except OSError as e:
        if e.errno in _PERMANENT_ERRNOS:
            raise InvalidInput(f"{uri}: cannot read it ({e.strerror})") from None
        # EIO, ESTALE and friends on network file systems can pass.
        raise TransientError(f"{uri}: I/O error ({e.strerror}); retry later") from e


def _s3_location(uri: str) -> tuple[str, str]:
    bucket, key = split_s3_uri(uri)
    if not key:
        raise InvalidInput(f"{uri}: names a bucket, not an object (s3://bucket/key)")
    return bucket, key


@contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except (NotFoundInStore, BucketNotFound) as e:
        raise InvalidInput(f"{uri}: does not exist ({e})") from None


def _endpoint_and_region(settings: Settings | None) -> tuple[str | None, str | None]:
    return (settings.aws_endpoint_url, settings.aws_region) if settings else (None, None)


def read_source(uri: str, settings: Settings | None = None) -> bytes:
    """The bytes at ``uri`` (``file:///abs/path``, a plain path, or ``s3://bucket/key``).

    S3 uses the endpoint and region from ``settings`` (default: boto3's own environment handling)."""
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        path = _local_path(uri)
        with _local_errors(uri):
            return path.read_bytes()
    if scheme == "s3":
        bucket, key = _s3_location(uri)
        endpoint, region = _endpoint_and_region(settings)
        with _s3_errors(uri):
            return read_object(bucket, key, endpoint_url=endpoint, region=region, what=uri)
    if scheme == "memory":  # inputs uploaded to an in-process store (unit tests)
        store, key = _memory_location(uri)
        try:
            return store.get(key)
        except NotFoundInStore as e:
            raise InvalidInput(f"{uri}: does not exist ({e})") from None
    raise InvalidInput(f"{uri}: unsupported source scheme {scheme!r}; use file:///path or s3://bucket/key")


def _memory_location(uri: str) -> tuple[MemoryStore, str]:
    parts = urlsplit(uri)
    return MemoryStore(parts.netloc or "default"), validate_key(parts.path.lstrip("/"))


def _source_version(uri: str, settings: Settings | None) -> str:
    """A token that changes when the file does, so a long-lived worker never serves a stale cache."""
    if _scheme(uri) == "s3":
        bucket, key = _s3_location(uri)
        endpoint, region = _endpoint_and_region(settings)
        with _s3_errors(uri):
            return object_etag(bucket, key, endpoint_url=endpoint, region=region, what=uri)
    if _scheme(uri) == "memory":
        store, key = _memory_location(uri)
        return str(hash(store.get(key))) if store.exists(key) else "missing"
    path = _local_path(uri)
    with _local_errors(uri):
        stat = path.stat()
    return f"{stat.st_mtime_ns}:{stat.st_size}:{stat.st_ino}"


class _NpzCache:
    """The last few .npz files read in this process, so a shard of items from one file reads it once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[tuple[str, str, int], NpzImages] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, uri: str, settings: Settings | None, max_pixels: int) -> NpzImages:
        key = (uri, _source_version(uri, settings), max_pixels)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                self.hits += 1
                return self.entries[key]
            self.misses += 1
        # Read outside the lock: two threads may both read a file once, which is harmless.
        arrays = read_npz(read_source(uri, settings), uri, max_pixels=max_pixels)
        with self.lock:
            self.entries[key] = arrays
            self.entries.move_to_end(key)
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
        return arrays


_npz_cache = _NpzCache(NPZ_CACHE_FILES)


def _after_fork_in_child() -> None:
    _npz_cache.lock = threading.Lock()  # the parent may have held it while forking


os.register_at_fork(after_in_child=_after_fork_in_child)


def npz_cache_info() -> dict[str, int]:
    """``hits``, ``misses`` and ``files`` of this process's .npz cache."""
    return {"hits": _npz_cache.hits, "misses": _npz_cache.misses, "files": len(_npz_cache.entries)}


def load_source_image(
    uri: str, settings: Settings | None = None, max_pixels: int | None = None
) -> tuple[np.ndarray, int | None]:
    """The image at ``uri`` as H×W×3 uint8 RGB, and its label (from an .npz's ``y``) or None.

    ``max_pixels`` defaults to ``settings.max_pixels``. Raises InvalidInput (permanent) naming
    ``uri`` for a missing, unreadable or oversized input; TransientError for network faults."""
    if max_pixels is None:
        max_pixels = (settings or Settings()).max_pixels
    npz = split_npz_uri(uri)
    if npz is not None:
        base, index = npz
        return _npz_cache.get(base, settings, max_pixels).item(index)
    return decode_image(read_source(uri, settings), uri, max_pixels), None
