"""Decode, resize and encode images: numpy and Pillow only (no torch), so the producer can use it.

Arrays are H×W×3 ``uint8`` RGB (0..255) unless a docstring says otherwise. Every error about an
input is an ``InvalidInput`` naming the item and the reason: the file is wrong, retrying cannot help.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ascent.shared.errors import InvalidInput

# Formats we decode. Pillow knows more (EPS even runs Ghostscript); inputs need none of them.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "AVIF")
WHITE = (255, 255, 255, 255)
DEFAULT_MAX_NPZ_BYTES = 4 * 1024**3
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# What a corrupt or truncated file makes Pillow's decoders raise.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
_SIGNATURES = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


_BYTES_LITERAL = re.compile(r"""b(["'])(?:\\.|(?!\1).)*\1""")


def _why(e: BaseException) -> str:
    """A decoder's error for a message: its type and text with any quoted bytes removed (decoders
    quote the file's first bytes, which may be someone's secret) and the length capped."""
    text = _BYTES_LITERAL.sub("b'…'", str(e))
    return f"{type(e).__name__}: {text}"[:200]


def _describe_unreadable(data: bytes) -> str:
    """What the bytes look like, without quoting them (a file may hold secrets: errors end up in records
    and reports that others read)."""
    for signature, fmt in _SIGNATURES.items():
        if data.startswith(signature):
            return f"starts like a {fmt} file but its header is truncated or corrupt"
    head = data[:512]
    if b"\0" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "a text file, not an image"
    return f"not a supported image format ({', '.join(ALLOWED_FORMATS)})"


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Decode an image file's bytes to H×W×3 uint8 RGB.

    Applies the EXIF orientation, composites transparency onto white, scales 16-bit samples to
    8 bits and converts grayscale, palette and CMYK to RGB. Animated or multi-page files give their
    first frame. ``max_pixels`` (width × height) is checked from the header, before decoding.
    Raises InvalidInput naming ``name``: empty, text, corrupt or truncated files, images too large.
    """
    if not data:
        raise InvalidInput(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; ours, checked below, is the one that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        declared = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise InvalidInput(
            f"{name}: its header declares over {declared:,} pixels, which exceeds the limit of {max_pixels:,} "
            "(possible decompression bomb; raise ASCENT_MAX_PIXELS if the image is genuine)"
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{name}: {_describe_unreadable(data)}") from None
    except _DECODE_ERRORS as e:
        raise InvalidInput(f"{name}: corrupt image header ({_why(e)})") from None

    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidInput(f"{name}: image has no pixels ({width}×{height})")
        if width * height > max_pixels:
            raise InvalidInput(
                f"{name}: {width}×{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}"
                " (possible decompression bomb; raise ASCENT_MAX_PIXELS if the image is genuine)"
            )
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a large image
            return _to_rgb_array(image, name)
        except InvalidInput:
            raise
        except Image.DecompressionBombError as e:
            raise InvalidInput(f"{name}: refused as a possible decompression bomb ({e})") from None
        except _DECODE_ERRORS as e:
            raise InvalidInput(f"{name}: corrupt or truncated {image.format} image ({_why(e)})") from None


def _to_rgb_array(image: Image.Image, name: str) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        # Pillow's convert("L") clips 16-bit samples at 255 instead of scaling them.
        samples = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray = ((samples * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise InvalidInput(f"{name}: 32-bit float images are not supported; save it as 8- or 16-bit")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
        return np.array(flat, dtype=np.uint8)
    if mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError:
            raise InvalidInput(f"{name}: colour mode {mode} is not supported; save it as RGB") from None
    return np.array(image, dtype=np.uint8)


def _check_image_array(arr: np.ndarray, what: str, allow_gray: bool = False) -> None:
    expected = "H×W×3 or H×W" if allow_gray else "H×W×3"
    if not isinstance(arr, np.ndarray):
        raise InvalidInput(f"{what}: expected a {expected} uint8 array, got {type(arr).__name__}")
    ok_shape = (arr.ndim == 3 and arr.shape[2] == 3) or (allow_gray and arr.ndim == 2)
    if arr.dtype != np.uint8 or not ok_shape or 0 in arr.shape:
        raise InvalidInput(f"{what}: expected a non-empty {expected} uint8 array, got {arr.dtype} {arr.shape}")


def resize_smaller_side(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize H×W×3 uint8 so its smaller side is ``size`` (bilinear, antialiased), keeping the aspect.

    Sizes and filter match torchvision's ``Resize(size)`` on a PIL image, which produced the
    reference numbers (the longer side is truncated, not rounded)."""
    _check_image_array(arr, "resize_smaller_side")
    if not isinstance(size, int) or size < 1:
        raise InvalidInput(f"resize size must be a positive integer, got {size!r}")
    height, width = arr.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, max(1, int(size * long / short))
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_width, new_height) == (width, height):
        return arr
    resized = Image.fromarray(arr).resize((new_width, new_height), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8)


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """The central ``size``×``size`` window of an H×W×3 array with both sides >= ``size``."""
    height, width = arr.shape[:2]
    if height < size or width < size:
        raise InvalidInput(f"cannot crop {size}×{size} from a {width}×{height} image")
    top = round((height - size) / 2.0)  # torchvision's CenterCrop offsets
    left = round((width - size) / 2.0)
    return arr[top : top + size, left : left + size]


def resize_center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """H×W×3 uint8 -> ``size``×``size``×3 uint8: smaller side resized to ``size``, then centre-cropped."""
    return np.ascontiguousarray(center_crop(resize_smaller_side(arr, size), size))


def encode_png(arr: np.ndarray) -> bytes:
    """Lossless, deterministic PNG bytes of an H×W×3 (RGB) or H×W (grayscale) uint8 array.

    zlib level 1: 2.5× faster than level 6 for 8 % larger files on 224 px photos (bench/RESULTS.md);
    a worker encodes two PNGs per image, which costs more than the kernel does per image on a GPU."""
    _check_image_array(arr, "encode_png", allow_gray=True)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclass(frozen=True)
class NpzImages:
    """Images and optional labels from an .npz file. ``images``: N×H×W×3 uint8; ``labels``: N ints."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def item(self, index: int) -> tuple[np.ndarray, int | None]:
        """Image ``index`` (H×W×3 uint8, a copy the caller may modify) and its label, or None."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self):
            raise InvalidInput(
                f"{self.name}: index {index!r} out of range: it holds {len(self)} images (0..{len(self) - 1})"
            )
        label = None if self.labels is None else int(self.labels[index])
        return self.images[index].copy(), label


def npy_header(npz: np.lib.npyio.NpzFile, member: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``member`` read from its .npy header, without loading the data."""
    if npz.zip is None:  # only after close()
        raise InvalidInput(f"{name}: .npz file already closed")
    with npz.zip.open(f"{member}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise InvalidInput(f"{name}: array {member} has unsupported .npy version {version}")
    return tuple(shape), dtype


@contextmanager
def _npz(
    data_or_path: bytes | str | os.PathLike[str] | BinaryIO,
    name: str,
    max_pixels: int | None,
    max_bytes: int,
    max_rows: int | None = None,
) -> Iterator[tuple[np.lib.npyio.NpzFile, tuple[int, ...], bool]]:
    """The open .npz, the shape of ``X`` and whether it has ``y``, after checking both headers: X is
    N×H×W×3 uint8 with N ≤ ``max_rows``, within ``max_pixels`` per image and ``max_bytes`` in all, y
    (when present) holds N integers. Nothing is decompressed or allocated before the checks pass."""
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    try:
        loaded = np.load(source, allow_pickle=False)
    except FileNotFoundError:
        raise InvalidInput(f"{name}: file does not exist") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InvalidInput(f"{name}: not a readable .npz file ({_why(e)})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InvalidInput(f"{name}: a single .npy array; expected an .npz with arrays X (and y)")
    with loaded as npz:
        if "X" not in npz.files:
            raise InvalidInput(f"{name}: no array named X (it has: {', '.join(npz.files) or 'none'})")
        try:
            shape, dtype = npy_header(npz, "X", name)
            if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8 or shape[0] == 0:
                raise InvalidInput(f"{name}: X must be N×H×W×3 uint8 with N ≥ 1, got {dtype} {shape}")
            if max_pixels is not None and shape[1] * shape[2] > max_pixels:
                raise InvalidInput(
                    f"{name}: images of {shape[2]}×{shape[1]} exceed {max_pixels:,} pixels "
                    "(raise ASCENT_MAX_PIXELS if they are genuine)"
                )
            if max_rows is not None and shape[0] > max_rows:
                raise InvalidInput(
                    f"{name}: X holds {shape[0]:,} images, over the limit of {max_rows:,} items per run "
                    "(ASCENT_MAX_ITEMS; raise it if this is intended)"
                )
            if math.prod(shape) > max_bytes:
                raise InvalidInput(
                    f"{name}: X would take {math.prod(shape):,} bytes, over the limit of {max_bytes:,} "
                    "(ASCENT_MAX_NPZ_BYTES; raise it if this is intended)"
                )
            has_y = "y" in npz.files
            if has_y:
                y_shape, y_dtype = npy_header(npz, "y", name)
                if y_shape != (shape[0],) or not np.issubdtype(y_dtype, np.integer):
                    raise InvalidInput(f"{name}: y must hold one integer label per image, got {y_dtype} {y_shape}")
            yield npz, shape, has_y
        except InvalidInput:
            raise
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise InvalidInput(f"{name}: corrupt .npz file ({_why(e)})") from None


def read_npz(
    data_or_path: bytes | str | os.PathLike[str],
    name: str | None = None,
    *,
    max_pixels: int | None = None,
    max_bytes: int = DEFAULT_MAX_NPZ_BYTES,
) -> NpzImages:
    """Read an .npz holding ``X`` (N×H×W×3 uint8) and optionally ``y`` (N integer labels).

    Never unpickles (the CS231n file's ``label_map`` is pickled and is ignored). Shapes are checked
    from the headers before anything is decompressed: each image against ``max_pixels``, ``X`` as a
    whole against ``max_bytes``. Raises InvalidInput naming ``name`` (default: the path)."""
    name = name or (str(data_or_path) if not isinstance(data_or_path, bytes) else "npz data")
    with _npz(data_or_path, name, max_pixels, max_bytes) as (npz, _shape, has_y):
        images = npz["X"]
        labels = npz["y"] if has_y else None
    return NpzImages(name=name, images=images, labels=labels)


def npz_rows(
    data_or_path: bytes | str | os.PathLike[str] | BinaryIO,
    name: str,
    *,
    max_pixels: int | None = None,
    max_bytes: int = DEFAULT_MAX_NPZ_BYTES,
    max_rows: int | None = None,
) -> list[int | None]:
    """The label of every row of ``X`` (None where there is no ``y``), read without loading ``X``:
    what the producer needs to plan items. Raises InvalidInput naming ``name``."""
    with _npz(data_or_path, name, max_pixels, max_bytes, max_rows) as (npz, shape, has_y):
        if not has_y:
            return [None] * shape[0]
        return [int(label) for label in npz["y"].tolist()]


def load_npz_item(
    data_or_path: bytes | str | os.PathLike[str],
    index: int,
    name: str | None = None,
    *,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, int | None]:
    """Image ``index`` of an .npz (H×W×3 uint8) and its label from ``y``, or None without ``y``."""
    return read_npz(data_or_path, name, max_pixels=max_pixels).item(index)
