"""Read an item's source (see ``ascent.shared.uris``): a local file, an S3 object, an object of an
in-process store, or one row of an .npz among those.

``SourceReader(settings)`` holds what reading needs for one process: the S3 client (endpoint and
region from the settings), the pixel limit, and a small cache of .npz files, so a shard of items
from one file reads it once. Errors name the URI: a missing or unreadable input is ``InvalidInput``
(permanent), a network or I/O fault that may pass is ``TransientError``.
"""

from __future__ import annotations

import errno
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ascent.shared.errors import InvalidInput, NotFoundInStore, TransientError
from ascent.shared.images import NpzImages, decode_image, read_npz
from ascent.shared.s3store import BucketNotFound, S3Client
from ascent.shared.settings import Settings
from ascent.shared.store import MemoryStore
from ascent.shared.uris import Uri, parse_uri

NPZ_CACHE_FILES = 2
_PERMANENT_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP}
)


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


@contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except (NotFoundInStore, BucketNotFound) as e:
        raise InvalidInput(f"{uri}: does not exist ({e})") from None


class SourceReader:
    """Reads sources for one process (see the module docstring). Thread-safe."""

    def __init__(self, settings: Settings | None = None, *, npz_files: int = NPZ_CACHE_FILES) -> None:
        self.settings = settings or Settings()
        self.s3 = S3Client(self.settings.aws_endpoint_url, self.settings.aws_region)
        self._npz: OrderedDict[tuple[str, str, int], NpzImages] = OrderedDict()
        self._npz_files = npz_files
        self._lock = threading.Lock()
        self.npz_hits = 0
        self.npz_misses = 0

    def read(self, uri: str) -> bytes:
        """The bytes of the file or object ``uri`` names (any ``#row`` is ignored)."""
        return self._read(self._parse(uri), uri)

    @staticmethod
    def _parse(uri: str) -> Uri:
        parsed = parse_uri(uri)
        if parsed.scheme not in ("file", "s3", "memory"):
            raise InvalidInput(
                f"{uri}: unsupported source scheme {parsed.scheme!r}; use file:///path or s3://bucket/key"
            )
        return parsed

    def _read(self, parsed: Uri, what: str) -> bytes:
        if parsed.scheme == "file":
            with _local_errors(what):
                return parsed.local_path.read_bytes()
        if parsed.scheme == "s3":
            if not parsed.path:
                raise InvalidInput(f"{what}: names a bucket, not an object (s3://bucket/key)")
            with _s3_errors(what):
                return self.s3.read(parsed.bucket, parsed.path, what=what)
        try:
            return MemoryStore(parsed.bucket).get(parsed.path)
        except NotFoundInStore as e:
            raise InvalidInput(f"{what}: does not exist ({e})") from None

    def _version(self, parsed: Uri, what: str) -> str:
        """A token that changes when the file does, so a long-lived worker never serves a stale cache."""
        if parsed.scheme == "s3":
            with _s3_errors(what):
                return self.s3.etag(parsed.bucket, parsed.path, what=what)
        if parsed.scheme == "memory":
            store = MemoryStore(parsed.bucket)
            return str(hash(store.get(parsed.path))) if store.exists(parsed.path) else "missing"
        with _local_errors(what):
            stat = parsed.local_path.stat()
        return f"{stat.st_mtime_ns}:{stat.st_size}:{stat.st_ino}"

    def load_image(self, uri: str, max_pixels: int | None = None) -> tuple[np.ndarray, int | None]:
        """The image at ``uri`` as H×W×3 uint8 RGB, and its label (from an .npz's ``y``) or None.

        ``max_pixels`` defaults to the settings'. Raises InvalidInput (permanent) naming ``uri`` for a
        missing, unreadable or oversized input; TransientError for network faults."""
        limit = self.settings.max_pixels if max_pixels is None else max_pixels
        parsed = self._parse(uri)
        if parsed.row is None:
            if parsed.is_npz:
                raise InvalidInput(f"{uri}: an .npz source needs an image index, e.g. {uri}#0")
            return decode_image(self._read(parsed, uri), uri, limit), None
        return self._npz_file(parsed.with_row(None), limit).item(parsed.row)

    def _npz_file(self, parsed: Uri, max_pixels: int) -> NpzImages:
        base = str(parsed)
        key = (base, self._version(parsed, base), max_pixels)
        with self._lock:
            if key in self._npz:
                self._npz.move_to_end(key)
                self.npz_hits += 1
                return self._npz[key]
            self.npz_misses += 1
        # Read outside the lock: two threads may both read a file once, which is harmless.
        arrays = read_npz(self._read(parsed, base), base, max_pixels=max_pixels)
        with self._lock:
            self._npz[key] = arrays
            self._npz.move_to_end(key)
            while len(self._npz) > self._npz_files:
                self._npz.popitem(last=False)
        return arrays

    def npz_cache_info(self) -> dict[str, int]:
        """``hits``, ``misses`` and ``files`` of the .npz cache."""
        return {"hits": self.npz_hits, "misses": self.npz_misses, "files": len(self._npz)}
