"""Storage behind a tiny interface, chosen by URI scheme.

``open_store("file:///data/ascent")``, ``open_store("memory://name")``, ``open_store("s3://bucket/prefix")``.
Keys are relative, '/'-separated and built only from run, shard and item ids (``ascent.shared.keys``):
an input file name never becomes a key.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from ascent.shared.errors import (
    AlreadyExists,
    InvalidInput,
    NotFoundInStore,
    StoreError,
    StoreUnavailable,
    TransientError,
)
from ascent.shared.keys import RunKeys, validate_key
from ascent.shared.uris import parse_uri, scheme_of


def dump_json(obj: Any) -> bytes:
    """Strict, readable JSON bytes (sorted keys; NaN and infinity refused)."""
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode()


class Store(ABC):
    """Bytes by key. Implementations: MemoryStore, FileStore, S3Store (shared.s3store)."""

    uri: str

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write atomically: a reader sees the old object, nothing, or all of the new one. Raises
        StoreUnavailable when the store cannot take it now (full, read-only, unreachable)."""

    @abstractmethod
    def create(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write ``key`` only if it does not exist, in one conditional step (two writers racing: exactly
        one succeeds); raises AlreadyExists otherwise."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Raise NotFoundInStore when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    def folders(self, prefix: str) -> list[str]:
        """The names directly under ``prefix`` (which ends with '/') that have keys below them, sorted
        (``folders("runs/")``: the run ids). Stores override it to avoid listing every key."""
        return sorted({k[len(prefix) :].split("/", 1)[0] for k in self.list(prefix) if "/" in k[len(prefix) :]})

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix``, sorted."""

    def versions(self, prefix: str) -> dict[str, str | None]:
        """The keys ``list(prefix)`` gives, each with a token that changes whenever the object is written
        again (a cache of its content is valid while the token is the same); None where the store cannot
        tell, so nothing may be cached for it."""
        return dict.fromkeys(self.list(prefix))

    @abstractmethod
    def url(self, key: str, expires: int | None = None) -> str:
        """A URI for the object: file://, s3://, or a presigned https URL when ``expires`` is given."""

    def delete(self, key: str) -> None:  # pragma: no cover - optional
        raise NotImplementedError

    def put_json(self, key: str, obj: Any) -> None:
        """Strict JSON (a NaN or infinity raises ValueError instead of writing invalid JSON)."""
        self.put(key, dump_json(obj), "application/json")

    def create_json(self, key: str, obj: Any) -> None:
        self.create(key, dump_json(obj), "application/json")

    def writable(self, run_id: str) -> str | None:
        """None when a small object can be written and removed under the run, else why not (for
        ``status``: a full or read-only store shows as such instead of as work pending)."""
        key = RunKeys(run_id).key("probe", f"{uuid.uuid4().hex}.json")
        try:
            self.put(key, b"{}", "application/json")
            self.delete(key)
        except (StoreError, TransientError, NotImplementedError) as exc:
            return str(exc)
        return None

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))


class MemoryStore(Store):
    """In-process store for unit tests; instances with the same name share their data."""

    _spaces: ClassVar[dict[str, dict[str, bytes]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "default") -> None:
        self.uri = f"memory://{name}"
        with self._lock:
            self._data = self._spaces.setdefault(name, {})

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._data[validate_key(key)] = bytes(data)

    def create(self, key: str, data: bytes, content_type: str | None = None) -> None:
        with self._lock:
            if validate_key(key) in self._data:
                raise AlreadyExists(f"{self.uri}/{key} already exists")
            self._data[key] = bytes(data)

    def get(self, key: str) -> bytes:
        try:
            return self._data[validate_key(key)]
        except KeyError:
            raise NotFoundInStore(f"{self.uri}/{key} does not exist") from None

    def exists(self, key: str) -> bool:
        return validate_key(key) in self._data

    def list(self, prefix: str) -> list[str]:
        return sorted(k for k in list(self._data) if k.startswith(prefix))

    def versions(self, prefix: str) -> dict[str, str | None]:
        found = {k: self._data.get(k) for k in self.list(prefix)}
        return {k: hashlib.sha256(data).hexdigest() for k, data in found.items() if data is not None}

    def url(self, key: str, expires: int | None = None) -> str:
        return f"{self.uri}/{validate_key(key)}"

    def delete(self, key: str) -> None:
        self._data.pop(validate_key(key), None)


class FileStore(Store):
    """A folder on a local or shared file system. Writes go to a temp file then ``os.replace``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _temp_file(self, path: Path, data: bytes) -> str:
        """``data`` in a temporary file beside ``path`` (mode 0644: outputs are meant to be shared)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        with self._os_errors(key):
            tmp = self._temp_file(path, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def create(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        with self._os_errors(key):
            tmp = self._temp_file(path, data)
            try:
                os.link(tmp, path)  # atomic and exclusive: fails if the key exists, never half-written
            except FileExistsError:
                raise AlreadyExists(f"{self.uri}/{key} already exists") from None
            finally:
                Path(tmp).unlink(missing_ok=True)

    @contextmanager
    def _os_errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            where = f"{self.uri}/{key}"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreUnavailable(
                    f"store full: no space left writing {where}; free space and the work is retried"
                ) from exc
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise StoreError(f"cannot write {where}: permission denied (not retryable)") from exc
            raise StoreUnavailable(f"store unwritable: {exc.strerror or exc} writing {where}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundInStore(f"{self.uri}/{key} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def folders(self, prefix: str) -> list[str]:
        start = self.root.joinpath(*prefix.strip("/").split("/")) if prefix.strip("/") else self.root
        if not start.is_dir():
            return []
        return sorted(e.name for e in os.scandir(start) if e.is_dir() and not e.name.startswith("."))

    def list(self, prefix: str) -> list[str]:
        # Walk only the deepest folder the prefix names, not the whole store.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*base.split("/")) if base else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def versions(self, prefix: str) -> dict[str, str | None]:
        """Each write is a new file (a rename or link of a fresh temp file): a new inode and change time."""
        found: dict[str, str | None] = {}
        for key in self.list(prefix):
            try:
                st = self._path(key).stat()
            except FileNotFoundError:  # removed since the listing
                continue
            found[key] = f"{st.st_ino}:{st.st_ctime_ns}:{st.st_mtime_ns}:{st.st_size}"
        return found

    def url(self, key: str, expires: int | None = None) -> str:
        return self._path(key).as_uri()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def open_store(uri: str, **options: Any) -> Store:
    """The store for ``uri``: ``file://`` (or a plain path), ``memory://``, ``s3://bucket/prefix``;
    ``options`` configure S3 (endpoint_url, region, public_endpoint_url)."""
    scheme = scheme_of(uri)
    if scheme in ("", "file"):
        return FileStore(parse_uri(uri, rows=False).path)
    if scheme == "memory":
        return MemoryStore(parse_uri(uri, rows=False).bucket)
    if scheme == "s3":
        from ascent.shared.s3store import S3Store

        return S3Store.from_uri(uri, **options)
    raise InvalidInput(f"unsupported store URI {uri!r}: use file://PATH, s3://BUCKET/PREFIX or memory://NAME")
