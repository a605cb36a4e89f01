"""Turn what the user named (folders, .npz files, image files, class ids) into items with stable ids.

No torch and no pixels: an item is an id, a source URI and a label when one is known. The order is
deterministic (the arguments in the order given; within a folder, files sorted by relative path;
within an .npz, by row), and item ids are zero-padded positions in that order, so the same command on
the same files gives the same ids. Ids, never file names, become store keys.

    folder   recursively, files ending in .png .jpg .jpeg .bmp .gif .tif .tiff .webp (any case);
             hidden files and folders (starting with ".") are skipped
    x.npz    one item per row of ``X`` (N×H×W×3 uint8), source ``file:///abs/x.npz#<row>``, label ``y[row]``
    a file   one item, whatever its extension (the worker reports it if it is not an image)
    s3://bucket/prefix/   every image object under the prefix, recursively, sorted by key, hidden
             ones skipped (like a folder); read in place by the workers, never copied
    s3://bucket/key       that object (``.npz``: one item per row, source ``s3://bucket/key#<row>``)

Problems raise ``InvalidSpec`` with field ``inputs`` (missing path, empty folder, malformed .npz).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from shared.catalog import NUM_CLASSES
from shared.errors import InvalidInput, InvalidSpec
from shared.spec import Item

if TYPE_CHECKING:
    from shared.settings import Settings

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
ID_WIDTH = 6
CLASS_PREFIX = "class:"


def item_id(index: int) -> str:
    """The id of the ``index``-th item: zero-padded to six digits (``000017``), wider past a million."""
    return f"{index:0{ID_WIDTH}d}"


def local_path(path_or_uri: str | os.PathLike[str], field: str = "inputs") -> Path:
    """An absolute local path from a path or a ``file://`` URI; other schemes raise InvalidSpec."""
    text = os.fspath(path_or_uri)
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme != "file":
            raise InvalidSpec(field, f"{text!r}: only local paths and file:// URIs are supported here")
        text = unquote(parts.path if parts.netloc in ("", "localhost") else parts.netloc + parts.path)
    return Path(text).expanduser().absolute()


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by their relative POSIX path; hidden ones skipped."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath, name)
            if not name.startswith(".") and is_image_file(path) and path.is_file():
                found.append((path.relative_to(folder).as_posix(), path))
    return [path for _, path in sorted(found)]


def npz_rows(path: Path | BinaryIO, name: str | None = None) -> list[int | None]:
    """The label of every row of ``X`` in an .npz (None where there is no ``y``), without loading ``X``.

    ``path`` is a file or an open binary file object (then ``name`` says what it is, for messages).
    Never unpickles. Raises InvalidSpec("inputs") for anything but X N×H×W×3 uint8 and y N class ids."""
    where = name or str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise InvalidSpec(
                    "inputs", f"{where}: no array named X (it has: {', '.join(npz.files) or 'none'})"
                )
            with npz.zip.open("X.npy") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8 or shape[0] == 0:
                raise InvalidSpec(
                    "inputs", f"{where}: X must be a non-empty N×H×W×3 uint8 array, got {dtype} {shape}"
                )
            if "y" not in npz.files:
                return [None] * shape[0]
            labels = npz["y"]
    except InvalidSpec:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise InvalidSpec(
            "inputs", f"{where}: not a readable .npz file ({type(exc).__name__}: {exc})"
        ) from None
    if labels.shape != (shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidSpec(
            "inputs",
            f"{where}: y must hold one integer label per row of X, got {labels.dtype} {labels.shape}",
        )
    out: list[int | None] = []
    for row, label in enumerate(labels.tolist()):
        if not 0 <= label < NUM_CLASSES:
            raise InvalidSpec(
                "inputs", f"{where}: y[{row}] = {label} is not an ImageNet class id 0..{NUM_CLASSES - 1}"
            )
        out.append(int(label))
    return out


def expand_input(
    path_or_uri: str | os.PathLike[str], field: str = "inputs", settings: Settings | None = None
) -> list[tuple[str, int | None]]:
    """(source URI, label) for every item one argument names, in order. ``settings`` gives the S3
    endpoint and region for an ``s3://`` argument (default: boto3's own environment handling)."""
    if is_s3_uri(path_or_uri):
        return expand_s3(os.fspath(path_or_uri), field, settings)
    path = local_path(path_or_uri, field)
    if path.is_dir():
        images = folder_images(path)
        if not images:
            kinds = " ".join(sorted(IMAGE_EXTENSIONS))
            raise InvalidSpec(field, f"no images ({kinds}) found in folder {path}")
        return [(p.absolute().as_uri(), None) for p in images]
    if not path.exists():
        raise InvalidSpec(field, f"{path} does not exist")
    if not path.is_file():
        raise InvalidSpec(field, f"{path} is neither a file nor a folder")
    if path.suffix.lower() == ".npz":
        uri = path.as_uri()
        return [(f"{uri}#{row}", label) for row, label in enumerate(npz_rows(path))]
    return [(path.as_uri(), None)]


def is_s3_uri(path_or_uri: str | os.PathLike[str]) -> bool:
    return os.fspath(path_or_uri)[:5].lower() == "s3://"


def s3_source(bucket: str, key: str) -> str:
    """The source URI of an S3 object: ``s3://bucket/key`` with the key percent-encoded (a key may hold
    ``#``, ``?`` or spaces; ``split_s3_uri`` decodes it)."""
    return f"s3://{bucket}/{quote(key, safe='/')}"


def _visible_image(relative_key: str) -> bool:
    parts = relative_key.split("/")
    return all(p and not p.startswith(".") for p in parts) and is_image_file(Path(parts[-1]))


def expand_s3(
    uri: str, field: str = "inputs", settings: Settings | None = None
) -> list[tuple[str, int | None]]:
    """Items of an ``s3://`` argument, read in place by the workers (nothing is copied).

    ``s3://bucket/prefix/`` (or a prefix that is not itself an object): every image object under it,
    recursively, sorted by key, hidden ones skipped, like a folder. ``s3://bucket/key``: that object;
    an ``.npz`` object is downloaded once here to count its rows and read its labels."""
    from shared.s3store import BucketNotFound, list_objects, read_object, split_s3_uri

    try:
        bucket, key = split_s3_uri(uri)
    except InvalidInput as exc:
        raise InvalidSpec(field, str(exc)) from None
    endpoint, region = (settings.aws_endpoint_url, settings.aws_region) if settings else (None, None)

    def listing(prefix: str) -> list[str]:
        try:
            return list_objects(bucket, prefix, endpoint_url=endpoint, region=region, what=uri)
        except BucketNotFound as exc:
            raise InvalidSpec(field, str(exc)) from None

    if key and not key.endswith("/"):
        keys = listing(key)
        if key in keys:  # one object
            if key.lower().endswith(".npz"):
                data = read_object(bucket, key, endpoint_url=endpoint, region=region, what=uri)
                rows = npz_rows(io.BytesIO(data), name=uri)
                return [(f"{s3_source(bucket, key)}#{row}", label) for row, label in enumerate(rows)]
            return [(s3_source(bucket, key), None)]
        prefix = key + "/"
        keys = [k for k in keys if k.startswith(prefix)]
    else:
        prefix = key
        keys = listing(prefix)
    found = sorted(k for k in keys if _visible_image(k[len(prefix) :]))
    if not found:
        kinds = " ".join(sorted(IMAGE_EXTENSIONS))
        raise InvalidSpec(field, f"no images ({kinds}) found under {uri}")
    return [(s3_source(bucket, k), None) for k in found]


def enumerate_inputs(
    paths: Sequence[str | os.PathLike[str]], field: str = "inputs", settings: Settings | None = None
) -> list[Item]:
    """Items for the folders, .npz files, image files and ``s3://`` prefixes or objects in ``paths``,
    with ids 000000, 000001, ..."""
    if not paths:
        raise InvalidSpec(field, "no inputs given")
    sources: list[tuple[str, int | None]] = []
    for p in paths:
        sources.extend(expand_input(p, field, settings))
    return [Item(item_id(i), source, label) for i, (source, label) in enumerate(sources)]


def class_items(classes: Iterable[int]) -> list[Item]:
    """Class-visualisation items: source ``class:<id>``, label = the class id."""
    items = [Item(item_id(i), f"{CLASS_PREFIX}{c}", int(c)) for i, c in enumerate(classes)]
    if not items:
        raise InvalidSpec("params.classes", "no classes given")
    for item in items:
        if item.label is None or not 0 <= item.label < NUM_CLASSES:
            raise InvalidSpec("params.classes", f"class id {item.label} is out of range 0..{NUM_CLASSES - 1}")
    return items


def input_uris(paths: Sequence[str | os.PathLike[str]], field: str = "inputs") -> list[str]:
    """The arguments as absolute ``file://`` URIs, ``s3://`` ones as given (what the spec records)."""
    uris = []
    for p in paths:
        if is_s3_uri(p):
            from shared.s3store import split_s3_uri

            try:
                split_s3_uri(os.fspath(p))
            except InvalidInput as exc:
                raise InvalidSpec(field, str(exc)) from None
            uris.append(os.fspath(p))
        else:
            uris.append(local_path(p, field).as_uri())
    return uris


def check_local_files(uris: Sequence[str], field: str) -> None:
    """Raise InvalidSpec(field) unless every ``file://`` URI (an .npz one may end in ``#row``) is a file.

    ``s3://`` URIs are not checked here (the workers report a missing object)."""
    for uri in uris:
        if is_s3_uri(uri):
            continue
        target = uri.split("#", 1)[0] if uri.startswith("file://") else uri
        path = local_path(target, field)
        if not path.is_file():
            raise InvalidSpec(field, f"{path} does not exist or is not a file")
