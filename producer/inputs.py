"""Turn what the user named (folders, .npz files, image files, S3 prefixes) into items with stable ids.

No torch and no pixels: an item is an id, a source URI and a label when one is known. The order is
deterministic (the arguments in the order given; within a folder, files sorted by relative path;
within an .npz, by row), and item ids are zero-padded positions in that order, so the same command on
the same files gives the same ids. Ids, never file names, become store keys.

    folder   recursively, files ending in .png .jpg .jpeg .bmp .gif .tif .tiff .webp (any case);
             hidden files and folders (starting with ".") are skipped
    x.npz    one item per row of ``X`` (N×H×W×3 uint8), source ``file:///abs/x.npz#<row>``, label ``y[row]``
    ImageFolder  a folder whose sub-folders are named by class (names of the model, or ids): each
             image labelled by its folder
    x.csv, x.jsonl  a manifest: ``path`` (or ``uri``), optional ``label`` and ``target`` (ids or
             names); relative paths are relative to the manifest's folder
    a file   one item, whatever its extension (the worker reports it if it is not an image)
    s3://bucket/prefix/   every image object under the prefix, recursively, sorted by key, hidden
             ones skipped (like a folder); read in place by the workers, never copied
    s3://bucket/key       that object (``.npz``: one item per row, source ``s3://bucket/key#<row>``)

Problems raise ``InvalidSpec`` with field ``inputs`` (missing path, empty folder, malformed .npz).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.images import npz_rows
from ascent.shared.limits import Limits
from ascent.shared.s3store import BucketNotFound, S3Client
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, item_id
from ascent.shared.uris import is_s3, parse_uri, s3_uri

log = logging.getLogger("ascent")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def local_path(path_or_uri: str | os.PathLike[str], field: str = "inputs") -> Path:
    """An absolute local path from a path or a ``file://`` URI; other schemes raise InvalidSpec(field)."""
    try:
        uri = parse_uri(path_or_uri, rows=False)
    except InvalidInput as exc:
        raise InvalidSpec(field, str(exc)) from None
    if uri.scheme != "file":
        raise InvalidSpec(field, f"{os.fspath(path_or_uri)!r}: only local paths and file:// URIs are supported here")
    return uri.local_path


def _within(limits: Limits, name: str, value: int, what: str, field: str) -> None:
    try:
        limits.check(name, value, what)
    except InvalidInput as exc:
        raise InvalidSpec(field, str(exc)) from None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by their relative POSIX path; hidden ones
    skipped, and links that lead out of the folder too (with a warning: they are never read)."""
    found: list[tuple[str, Path]] = []
    root = Path(os.path.realpath(folder))
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath, name)
            if name.startswith(".") or not is_image_file(path) or not path.is_file():
                continue
            resolved = Path(os.path.realpath(path))
            if resolved != root and root not in resolved.parents:
                log.warning("skipped %s: a link that leads out of %s", path, folder)
                continue
            found.append((path.relative_to(folder).as_posix(), path))
    return [path for _, path in sorted(found)]


def npz_labels(source: Path | BinaryIO, name: str, limits: Limits) -> list[int | None]:
    """The label of every row of an .npz (None without ``y``), read from its headers and ``y`` only,
    within the limits (rows, bytes, pixels), before anything is allocated. Raises InvalidSpec("inputs")
    for anything but X N×H×W×3 uint8 and y N class ids."""
    try:
        labels = npz_rows(
            source, name, max_pixels=limits.max_pixels, max_bytes=limits.max_npz_bytes, max_rows=limits.max_items
        )
    except InvalidInput as exc:
        raise InvalidSpec("inputs", str(exc)) from None
    for row, label in enumerate(labels):
        if label is not None and label < 0:
            raise InvalidSpec("inputs", f"{name}: y[{row}] = {label} is not a class id")
    return labels


@dataclass(frozen=True)
class Found:
    """One input found: its source URI, true label and own target when known, and its path relative to
    the argument that named it (what an exported dataset keeps)."""

    source: str
    label: int | None = None
    target: int | None = None
    path: str | None = None


def _class_folders(folder: Path, resolve: Callable[[str], int | None], field: str) -> dict[str, int] | None:
    """ImageFolder's layout: a folder whose entries are folders named after classes (a class name of the
    model or an id). None when ``folder`` is not laid out so; InvalidSpec when only some names are classes."""
    entries = [e for e in sorted(folder.iterdir()) if not e.name.startswith(".")]
    if not entries or any(e.is_file() and is_image_file(e) for e in entries):
        return None
    names = [e.name for e in entries if e.is_dir()]
    classes = {name: resolve(name) for name in names}
    known = {name: c for name, c in classes.items() if c is not None}
    if not known:
        return None
    unknown = [name for name, c in classes.items() if c is None]
    if unknown:
        raise InvalidSpec(
            field,
            f"{folder}: its sub-folders {', '.join(list(known)[:3])} are classes of the model but "
            f"{', '.join(unknown[:3])} are not (name them by class name or id, or pass --class-names FILE)",
        )
    return known


def _folder(path: Path, resolve: Callable[[str], int | None], field: str) -> list[Found]:
    images = folder_images(path)
    if not images:
        raise InvalidSpec(field, f"no images ({' '.join(sorted(IMAGE_EXTENSIONS))}) found in folder {path}")
    classes = _class_folders(path, resolve, field)
    found = []
    for image in images:
        relative = image.relative_to(path).as_posix()
        label = classes.get(relative.split("/", 1)[0]) if classes else None
        found.append(Found(image.absolute().as_uri(), label, None, relative))
    return found


def _manifest_file(path: Path, resolve: Callable[[str], int | None], field: str) -> list[Found]:
    """A CSV (with a header) or JSON Lines file of ``path`` (or ``uri``), optional ``label`` and ``target``
    (class ids or names); relative paths are relative to the file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpec(field, f"{path}: cannot read it ({exc})") from None
    try:
        if path.suffix.lower() == ".csv":
            rows: list[Any] = list(csv.DictReader(io.StringIO(text)))
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (csv.Error, ValueError) as exc:
        raise InvalidSpec(field, f"{path}: not a readable {path.suffix[1:].upper()} manifest ({exc})") from None
    found = []
    for n, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        where = f"{path}, {'line' if path.suffix.lower() == '.csv' else 'row'} {n}"
        if not isinstance(row, dict):
            raise InvalidSpec(field, f"{where}: expected an object with a path")
        named = row.get("uri") or row.get("path")
        if not isinstance(named, str) or not named.strip():
            raise InvalidSpec(field, f"{where}: no path (or uri) given")
        named = named.strip()
        source = named if "://" in named else (path.parent / named).absolute().as_uri()
        classes: dict[str, int | None] = {}
        for column in ("label", "target"):
            value = row.get(column)
            if value is None or str(value).strip() == "":
                classes[column] = None
                continue
            class_id = resolve(str(value).strip())
            if class_id is None:
                raise InvalidSpec(field, f"{where}: {column} {value!r} is not a class of the model")
            classes[column] = class_id
        found.append(Found(source, classes["label"], classes["target"], named))
    if not found:
        raise InvalidSpec(field, f"{path}: the manifest lists no inputs")
    return found


def expand_input(
    path_or_uri: str | os.PathLike[str],
    field: str = "inputs",
    settings: Settings | None = None,
    resolve: Callable[[str], int | None] | None = None,
) -> list[Found]:
    """Every input one argument names, in order. ``settings`` give the S3 endpoint and region for an
    ``s3://`` argument and the limits; ``resolve`` turns a class name or id into an id (None when it is
    not one), for ImageFolder sub-folders and manifests (default: ids only)."""
    settings = settings or Settings()
    resolve = resolve or _ids_only
    if is_s3(path_or_uri):
        s3 = S3Client(settings.aws_endpoint_url, settings.aws_region)
        return [Found(source, label) for source, label in expand_s3(os.fspath(path_or_uri), field, s3, settings.limits)]
    path = local_path(path_or_uri, field)
    if path.is_dir():
        return _folder(path, resolve, field)
    if not path.exists():
        raise InvalidSpec(field, f"{path} does not exist")
    if not path.is_file():
        raise InvalidSpec(field, f"{path} is neither a file nor a folder")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".jsonl"):
        return _manifest_file(path, resolve, field)
    if suffix == ".npz":
        _within(settings.limits, "max_npz_bytes", path.stat().st_size, f"{path}: size in bytes", field)
        labels = npz_labels(path, str(path), settings.limits)
        return [Found(f"{path.as_uri()}#{row}", label, None, f"{path.stem}-{row}") for row, label in enumerate(labels)]
    return [Found(path.as_uri(), None, None, path.name)]


def _ids_only(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _visible_image(relative_key: str) -> bool:
    parts = relative_key.split("/")
    return all(p and not p.startswith(".") for p in parts) and is_image_file(Path(parts[-1]))


def expand_s3(uri: str, field: str, s3: S3Client, limits: Limits) -> list[tuple[str, int | None]]:
    """Items of an ``s3://`` argument, read in place by the workers (nothing is copied).

    ``s3://bucket/prefix/`` (or a prefix that is not itself an object): every image object under it,
    recursively, sorted by key, hidden ones skipped, like a folder. ``s3://bucket/key``: that object;
    an ``.npz`` object is downloaded once here to count its rows and read its labels."""
    try:
        parsed = parse_uri(uri, rows=False)
    except InvalidInput as exc:
        raise InvalidSpec(field, str(exc)) from None
    bucket, key = parsed.bucket, parsed.path

    def listing(prefix: str) -> list[str]:
        try:
            return s3.list(bucket, prefix, what=uri)
        except BucketNotFound as exc:
            raise InvalidSpec(field, str(exc)) from None

    if key and not key.endswith("/"):
        keys = listing(key)
        if key in keys:  # one object
            if key.lower().endswith(".npz"):
                _within(limits, "max_npz_bytes", s3.size(bucket, key, what=uri), f"{uri}: size in bytes", field)
                rows = npz_labels(io.BytesIO(s3.read(bucket, key, what=uri)), uri, limits)
                return [(f"{s3_uri(bucket, key)}#{row}", label) for row, label in enumerate(rows)]
            return [(s3_uri(bucket, key), None)]
        prefix = key + "/"
        keys = [k for k in keys if k.startswith(prefix)]
    else:
        prefix = key
        keys = listing(prefix)
    found = sorted(k for k in keys if _visible_image(k[len(prefix) :]))
    if not found:
        raise InvalidSpec(field, f"no images ({' '.join(sorted(IMAGE_EXTENSIONS))}) found under {uri}")
    return [(s3_uri(bucket, k), None) for k in found]


def enumerate_inputs(
    paths: Sequence[str | os.PathLike[str]],
    field: str = "inputs",
    settings: Settings | None = None,
    resolve: Callable[[str], int | None] | None = None,
) -> list[Item]:
    """Items for the folders (ImageFolder layouts labelled), manifests (.csv, .jsonl), .npz files, image
    files and ``s3://`` prefixes or objects in ``paths``, with ids 000000, 000001, ..."""
    if not paths:
        raise InvalidSpec(field, "no inputs given")
    settings = settings or Settings()
    sources: list[Found] = []
    for p in paths:
        sources.extend(expand_input(p, field, settings, resolve))
        if len(sources) > settings.max_items:
            raise InvalidSpec(
                field,
                f"{len(sources):,} items, over the limit of {settings.max_items:,} per run "
                "(ASCENT_MAX_ITEMS; raise it if this is intended)",
            )
    return [Item(item_id(i), f.source, f.label, None, f.target, f.path) for i, f in enumerate(sources)]


def input_uris(paths: Sequence[str | os.PathLike[str]], field: str = "inputs") -> list[str]:
    """The arguments as absolute ``file://`` URIs, ``s3://`` ones as given (what the spec records)."""
    uris = []
    for p in paths:
        try:
            uri = parse_uri(p, rows=False)
        except InvalidInput as exc:
            raise InvalidSpec(field, str(exc)) from None
        if uri.scheme not in ("file", "s3"):
            raise InvalidSpec(field, f"{os.fspath(p)!r}: give a local path, a file:// URI or an s3:// URI")
        uris.append(os.fspath(p) if uri.scheme == "s3" else uri.base)
    return uris


def check_local_files(uris: Sequence[str], field: str) -> None:
    """Raise InvalidSpec(field) unless every ``file://`` URI (an .npz one may end in ``#row``) is a file.

    ``s3://`` URIs are not checked here (the workers report a missing object)."""
    for uri in uris:
        if is_s3(uri):
            continue
        path = local_path(uri.split("#", 1)[0], field)
        if not path.is_file():
            raise InvalidSpec(field, f"{path} does not exist or is not a file")
