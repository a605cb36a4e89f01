"""How outputs are stored: ``--save-format png|jpeg:Q|webp:Q`` (Q = quality 1..100).

PNG is lossless (8-bit exact). JPEG and WebP are lossy: a job that promises something about its
stored output (fool: the model is fooled) checks the image *after* ``roundtrip``, which encodes and
decodes exactly as the worker stores it (PIL, deterministic for the same library build), so the
stored file decodes to the pixels that were checked.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ascent.shared.errors import InvalidInput
from ascent.shared.images import encode_png

if TYPE_CHECKING:
    from torch import Tensor

CODECS = ("png", "jpeg", "webp")
_PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


@dataclass(frozen=True)
class SaveFormat:
    """A codec and, for the lossy ones, its quality 1..100."""

    codec: str
    quality: int | None = None

    @property
    def lossless(self) -> bool:
        return self.codec == "png"

    @property
    def ext(self) -> str:
        """The file extension of its outputs (no dot): png, jpg, webp."""
        return _EXTENSIONS[self.codec]

    @property
    def media_type(self) -> str:
        return f"image/{self.codec}"

    @property
    def text(self) -> str:
        return self.codec if self.quality is None else f"{self.codec}:{self.quality}"


PNG = SaveFormat("png")


def parse_save_format(text: Any) -> SaveFormat:
    """``png``, ``jpeg:Q`` (also ``jpg:Q``) or ``webp:Q``; InvalidInput saying what is accepted."""
    usage = "give png, jpeg:Q or webp:Q with a quality Q in 1..100 (e.g. jpeg:75)"
    if not isinstance(text, str):
        raise InvalidInput(f"save format {text!r}: {usage}")
    codec, colon, quality = text.strip().lower().partition(":")
    codec = "jpeg" if codec == "jpg" else codec
    if codec == "png" and not colon:
        return PNG
    if codec not in CODECS or codec == "png" or not quality.isdigit() or not 1 <= int(quality) <= 100:
        raise InvalidInput(f"save format {text!r}: {usage}")
    return SaveFormat(codec, int(quality))


def is_save_format(text: Any) -> bool:
    try:
        parse_save_format(text)
    except InvalidInput:
        return False
    return True


def encode(image: np.ndarray, fmt: SaveFormat) -> bytes:
    """The stored bytes of an H×W×3 (or H×W) uint8 image in ``fmt``."""
    if fmt.lossless:
        return encode_png(image)
    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": fmt.quality}
    if fmt.codec == "webp":
        options["method"] = 4  # PIL's default, named so the bytes do not change with it
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format=_PIL_NAMES[fmt.codec], **options)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """H×W×3 uint8 pixels of stored image bytes (any format PIL reads)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).copy()


def roundtrip(image: np.ndarray, fmt: SaveFormat) -> np.ndarray:
    """What a reader of the stored file sees: ``decode(encode(image, fmt))`` (the image for PNG)."""
    return image if fmt.lossless else decode(encode(image, fmt))


def tensor_roundtrip(fmt: SaveFormat) -> Callable[[Tensor], Tensor]:
    """``roundtrip`` on N×3×H×W float images in [0, 1] (on the 8-bit lattice), as a kernel's check:
    returns the decoded images, same shape, device and dtype."""
    import torch

    def apply(x: Tensor) -> Tensor:
        pixels = torch.round(x.detach() * 255).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        decoded = np.stack([roundtrip(p, fmt) for p in pixels])
        return torch.from_numpy(decoded).to(x.device).permute(0, 3, 1, 2).to(x.dtype) / 255

    return apply
