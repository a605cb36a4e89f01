"""Read an item's source (see ``ascent.shared.uris``): a local file, an S3 object, an object of an
in-process store, or one row of an .npz among those.

``SourceReader(settings, roots)`` holds what reading needs for one process: the S3 client (endpoint
and region from the settings), the limits, the input roots, and a small cache of .npz files, so a
shard of items from one file reads it once.

- **Roots** (``InputRoots``): a worker reads only under its roots (``ASCENT_INPUT_ROOTS`` and its
  stores); a local path is resolved first, so a link cannot lead out of them. ``roots=None`` (the
  producer, which reads what its user named) reads anywhere.
- **Limits**: a file's size is checked before it is read (stat, or HEAD on S3), against
  ``max_input_bytes`` (images) or ``max_npz_bytes`` (.npz); only regular files are read (never a
  device or a pipe); pixels are checked on the image's header before decoding.

Errors name the URI, never the file's contents: a missing, unreadable, oversized or forbidden input
is ``InvalidInput`` (permanent), a network or I/O fault that may pass is ``TransientError``.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

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


class InputRoots:
    """Where inputs may be read from: local folders or files (resolved), ``s3://bucket/prefix`` and
    ``memory://name/prefix``. ``check`` returns the local path to read, or raises InvalidInput."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.local: list[Path] = []
        self.prefixes: list[tuple[str, str, str]] = []  # (scheme, bucket or store name, key prefix)
        for root in roots:
            parsed = parse_uri(root, rows=False)
            if parsed.scheme == "file":
                self.local.append(Path(os.path.realpath(parsed.path)))
            elif parsed.scheme in ("s3", "memory"):
                prefix = parsed.path.strip("/")
                self.prefixes.append((parsed.scheme, parsed.bucket, f"{prefix}/" if prefix else ""))

    def _under(self, path: Path) -> bool:
        return any(path == root or root in path.parents for root in self.local)

    def check(self, parsed: Uri, what: str) -> Path | None:
        """The resolved local path of an allowed file source (None for other schemes); raises
        InvalidInput when the source lies outside the roots, or is a link that leads out of them."""
        if parsed.scheme == "file":
            resolved = Path(os.path.realpath(parsed.path))
            if self._under(resolved):
                return resolved
            if self._under(Path(os.path.abspath(parsed.path))):
                raise InvalidInput(f"{what}: a link that leads out of the worker's input roots; not read")
            raise InvalidInput(f"{what}: outside the worker's input roots (ASCENT_INPUT_ROOTS); not read")
        if not any(
            parsed.scheme == scheme and parsed.bucket == bucket and parsed.path.startswith(prefix)
            for scheme, bucket, prefix in self.prefixes
        ):
            raise InvalidInput(f"{what}: outside the worker's input roots (ASCENT_INPUT_ROOTS); not read")
        return None


class SourceReader:
    """Reads sources for one process (see the module docstring). Thread-safe."""

    def __init__(
        self,
        settings: Settings | None = None,
        roots: Iterable[str] | None = None,
        *,
        npz_files: int = NPZ_CACHE_FILES,
    ) -> None:
        self.settings = settings or Settings()
        self.limits = self.settings.limits
        self.roots = None if roots is None else InputRoots(roots)
        self.s3 = S3Client(self.settings.aws_endpoint_url, self.settings.aws_region)
        self._npz: OrderedDict[tuple[str, str, int], NpzImages] = OrderedDict()
        self._npz_files = npz_files
        self._lock = threading.Lock()
        self.npz_hits = 0
        self.npz_misses = 0

    def read(self, uri: str, limit: str | None = None) -> bytes:
        """The bytes of the file or object ``uri`` names (any ``#row`` is ignored), within the limit
        ``limit`` names (default: ``max_npz_bytes`` for an .npz, else ``max_input_bytes``)."""
        return self._read(self._parse(uri), uri, limit)

    @staticmethod
    def _parse(uri: str) -> Uri:
        parsed = parse_uri(uri)
        if parsed.scheme not in ("file", "s3", "memory"):
            raise InvalidInput(
                f"{uri}: unsupported source scheme {parsed.scheme!r}; use file:///path or s3://bucket/key"
            )
        return parsed

    def _limit(self, parsed: Uri, size: int, what: str, limit: str | None = None) -> None:
        name = limit or ("max_npz_bytes" if parsed.is_npz else "max_input_bytes")
        self.limits.check(name, size, f"{what}: file size in bytes")

    def _read(self, parsed: Uri, what: str, limit: str | None = None) -> bytes:
        local = self.roots.check(parsed, what) if self.roots is not None else None
        if parsed.scheme == "file":
            path = local or parsed.local_path
            with _local_errors(what):
                info = path.stat()
                if stat.S_ISDIR(info.st_mode):
                    raise InvalidInput(f"{what}: is a directory, not a file")
                if not stat.S_ISREG(info.st_mode):
                    raise InvalidInput(f"{what}: not a regular file (a device, a pipe or a socket); not read")
                self._limit(parsed, info.st_size, what, limit)
                with open(path, "rb") as f:
                    data = f.read(info.st_size + 1)  # a file that grew meanwhile is caught below
            self._limit(parsed, len(data), what, limit)
            return data
        if parsed.scheme == "s3":
            if not parsed.path:
                raise InvalidInput(f"{what}: names a bucket, not an object (s3://bucket/key)")
            with _s3_errors(what):
                self._limit(parsed, self.s3.size(parsed.bucket, parsed.path, what=what), what, limit)
                return self.s3.read(parsed.bucket, parsed.path, what=what)
        try:
            data = MemoryStore(parsed.bucket).get(parsed.path)
        except NotFoundInStore as e:
            raise InvalidInput(f"{what}: does not exist ({e})") from None
        self._limit(parsed, len(data), what, limit)
        return data

    def _version(self, parsed: Uri, what: str) -> str:
        """A token that changes when the file does, so a long-lived worker never serves a stale cache."""
        local = self.roots.check(parsed, what) if self.roots is not None else None
        if parsed.scheme == "s3":
            with _s3_errors(what):
                return self.s3.etag(parsed.bucket, parsed.path, what=what)
        if parsed.scheme == "memory":
            store = MemoryStore(parsed.bucket)
            return str(hash(store.get(parsed.path))) if store.exists(parsed.path) else "missing"
        with _local_errors(what):
            info = (local or parsed.local_path).stat()
        return f"{info.st_mtime_ns}:{info.st_size}:{info.st_ino}"

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
        arrays = read_npz(self._read(parsed, base), base, max_pixels=max_pixels, max_bytes=self.limits.max_npz_bytes)
        with self._lock:
            self._npz[key] = arrays
            self._npz.move_to_end(key)
            while len(self._npz) > self._npz_files:
                self._npz.popitem(last=False)
        return arrays

    def npz_cache_info(self) -> dict[str, int]:
        """``hits``, ``misses`` and ``files`` of the .npz cache."""
        return {"hits": self.npz_hits, "misses": self.npz_misses, "files": len(self._npz)}
