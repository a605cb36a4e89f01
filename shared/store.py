"""Storage behind a tiny interface, chosen by URI scheme.

``open_store("file:///data/ascent")``, ``open_store("memory://name")``, ``open_store("s3://bucket/prefix")``.
Keys are relative, '/'-separated and built only from run, shard and item ids (``ascent.shared.keys``):
an input file name never becomes a key.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from ascent.shared.errors import InvalidInput, NotFoundInStore
from ascent.shared.keys import validate_key
from ascent.shared.uris import parse_uri, scheme_of


class Store(ABC):
    """Bytes by key. Implementations: MemoryStore, FileStore, S3Store (shared.s3store)."""

    uri: str

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write atomically: a reader sees the old object, nothing, or all of the new one."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Raise NotFoundInStore when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix``, sorted."""

    @abstractmethod
    def url(self, key: str, expires: int | None = None) -> str:
        """A URI for the object: file://, s3://, or a presigned https URL when ``expires`` is given."""

    def delete(self, key: str) -> None:  # pragma: no cover - optional
        raise NotImplementedError

    def put_json(self, key: str, obj: Any) -> None:
        self.put(key, json.dumps(obj, indent=1, sort_keys=True).encode(), "application/json")

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

    def get(self, key: str) -> bytes:
        try:
            return self._data[validate_key(key)]
        except KeyError:
            raise NotFoundInStore(f"{self.uri}/{key} does not exist") from None

    def exists(self, key: str) -> bool:
        return validate_key(key) in self._data

    def list(self, prefix: str) -> list[str]:
        return sorted(k for k in list(self._data) if k.startswith(prefix))

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

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are meant to be shared and served
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundInStore(f"{self.uri}/{key} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

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
