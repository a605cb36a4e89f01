"""The one parser of the URIs ascent passes around: where an input, a store or a checkpoint lives.

    file:///abs/path.png      a local file (a plain path is accepted wherever a URI is)
    file:///abs/val.npz#3     row 3 of an .npz (arrays X and optional y)
    s3://bucket/key           an S3 object; the key percent-encoded (``a%20b%23c.png`` is ``a b#c.png``)
    s3://bucket/val.npz#3     row 3 of an .npz in S3
    memory://name/key         an object of an in-process store (unit tests)
    class:76                  a class id (class-visualisation items)

Producer, worker and stores all call ``parse_uri``; nothing else splits a URI by hand.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ascent.shared.errors import InvalidInput

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_ROW = re.compile(r"^(?P<base>.+\.npz)#(?P<row>[^#]*)$", re.IGNORECASE)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
CLASS_PREFIX = "class:"
SCHEMES = ("file", "s3", "memory", "class")


@dataclass(frozen=True)
class Uri:
    """A parsed URI. ``path``: the local path (file), the object key (s3, memory; may be empty) or the
    class id text (class); ``bucket``: the bucket (s3) or store name (memory); ``row``: the .npz row."""

    scheme: str
    path: str
    bucket: str = ""
    row: int | None = None

    @property
    def base(self) -> str:
        """The URI without its ``#row`` (the file or object itself)."""
        if self.scheme == "file":
            return Path(self.path).as_uri()
        if self.scheme == "s3":
            return s3_uri(self.bucket, self.path)
        if self.scheme == "memory":
            return f"memory://{self.bucket}/{self.path}"
        return f"{CLASS_PREFIX}{self.path}"

    def __str__(self) -> str:
        return self.base if self.row is None else f"{self.base}#{self.row}"

    @property
    def is_npz(self) -> bool:
        return self.path.lower().endswith(".npz")

    def with_row(self, row: int | None) -> Uri:
        return Uri(self.scheme, self.path, self.bucket, row)

    @property
    def local_path(self) -> Path:
        if self.scheme != "file":
            raise InvalidInput(f"{self}: not a local file")
        return Path(self.path)

    @property
    def class_id(self) -> int:
        if self.scheme != "class" or not self.path.isdigit():
            raise InvalidInput(f"source {str(self)!r} is not a class reference like 'class:76'")
        return int(self.path)


def scheme_of(text: str) -> str:
    """The lower-case scheme of ``text``, or "" for a plain path."""
    match = _SCHEME.match(text)
    return match[1].lower() if match and len(match[1]) > 1 else ""  # "C:" is a drive, not a scheme


def parse_uri(text: str | os.PathLike[str], *, rows: bool = True) -> Uri:
    """Parse a URI or a plain local path (made absolute). ``rows``: accept ``#row`` after an .npz.

    Raises InvalidInput naming the text: an unsupported scheme, a remote ``file://host/``, a bad
    bucket name, an .npz without a row (when ``rows``) or a row that is not a number."""
    text = os.fspath(text)
    scheme = scheme_of(text)
    row: int | None = None
    if rows and scheme != "class":
        match = _ROW.match(text)
        if match is not None:
            if not re.fullmatch(r"[0-9]+", match["row"]):
                raise InvalidInput(f"{text}: the part after '#' must be a non-negative image index")
            text, row = match["base"], int(match["row"])
    if scheme == "":
        return Uri("file", str(Path(text).expanduser().absolute()), row=row)
    if scheme == "file":
        rest = text[len("file:") :]
        if rest.startswith("//"):
            host, _, path = rest[2:].partition("/")
            if host in (".", ".."):  # file://./data: a path relative to the working directory
                rest = f"{host}/{path}"
            elif host in ("", "localhost"):
                rest = "/" + path
            else:
                raise InvalidInput(f"{text}: only local file URIs are supported: file:///absolute/path")
        return Uri("file", str(Path(unquote(rest)).absolute()), row=row)
    if scheme == "s3":
        if "?" in text or "#" in text:
            raise InvalidInput(f"{text!r}: write '#' as %23 and '?' as %3F in an S3 key")
        parts = urlsplit(text)
        if not _BUCKET.match(parts.netloc):
            raise InvalidInput(f"{text!r}: {parts.netloc!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
        return Uri("s3", unquote(parts.path.lstrip("/")), parts.netloc, row)
    if scheme == "memory":
        parts = urlsplit(text)
        return Uri("memory", parts.path.lstrip("/"), parts.netloc or "default", row)
    if scheme == "class":
        return Uri("class", text[len(CLASS_PREFIX) :])
    raise InvalidInput(f"{text}: unsupported source scheme {scheme!r}; use a path, file:///path or s3://bucket/key")


def parse_source(text: str) -> Uri:
    """An item's source: like ``parse_uri``, and an .npz must name its row (``x.npz#3``)."""
    uri = parse_uri(text)
    if uri.scheme in ("file", "s3", "memory") and uri.is_npz and uri.row is None:
        raise InvalidInput(f"{text}: an .npz source needs an image index, e.g. {text}#0")
    return uri


def local_path(text: str | os.PathLike[str]) -> Path:
    """The absolute local path of a plain path or ``file://`` URI; InvalidInput for other schemes."""
    uri = parse_uri(text, rows=False)
    if uri.scheme != "file":
        raise InvalidInput(f"{os.fspath(text)!r}: only local paths and file:// URIs are supported here")
    return uri.local_path


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key`` with the key percent-encoded (a key may hold ``#``, ``?`` or spaces)."""
    return f"s3://{bucket}/{quote(key, safe='/')}"


def is_s3(text: str | os.PathLike[str]) -> bool:
    return scheme_of(os.fspath(text)) == "s3"
