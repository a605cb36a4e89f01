"""Bounds on what one run, item or message may ask of the producer and the workers.

Each limit is a setting (``Settings`` reads them from the environment) and every error that a limit
causes names the setting, its value and how to raise it. Defaults:

    ASCENT_MAX_PIXELS         64,000,000   pixels of one input image (width × height, from its header)
    ASCENT_MAX_INPUT_BYTES    64 MiB       bytes of one input image file (checked with stat / HEAD first)
    ASCENT_MAX_NPZ_BYTES      4 GiB        bytes of one .npz file, and of its X array once decompressed
    ASCENT_MAX_ITEMS          1,000,000    items in one run (.npz rows counted from the header)
    ASCENT_MAX_SIDE           2048         side of the images a run works on (``--size``)
    ASCENT_MAX_ITERS          100,000      iterations of one item (``--max-iters``, ``--iters``...)
    ASCENT_MAX_CLASSES        10,000       classes named by one run (``--classes``)
    ASCENT_MAX_MESSAGE_BYTES  4 MiB        one task message (a shard's items and the spec, as JSON)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ascent.shared.errors import InvalidInput

MiB = 1024 * 1024

#: Field -> environment variable.
LIMIT_VARS: dict[str, str] = {
    "max_pixels": "ASCENT_MAX_PIXELS",
    "max_input_bytes": "ASCENT_MAX_INPUT_BYTES",
    "max_npz_bytes": "ASCENT_MAX_NPZ_BYTES",
    "max_items": "ASCENT_MAX_ITEMS",
    "max_side": "ASCENT_MAX_SIDE",
    "max_iters": "ASCENT_MAX_ITERS",
    "max_classes": "ASCENT_MAX_CLASSES",
    "max_message_bytes": "ASCENT_MAX_MESSAGE_BYTES",
}


@dataclass(frozen=True)
class Limits:
    """The limits in force (see the module docstring)."""

    # Below Pillow's own warning limit (89,478,485) so our clearer error fires first.
    max_pixels: int = 64_000_000
    max_input_bytes: int = 64 * MiB
    max_npz_bytes: int = 4096 * MiB
    max_items: int = 1_000_000
    max_side: int = 2048
    max_iters: int = 100_000
    max_classes: int = 10_000
    max_message_bytes: int = 4 * MiB

    def check(self, name: str, value: int, what: str) -> None:
        """Raise InvalidInput when ``value`` exceeds limit ``name``: "``what``: VALUE exceeds the limit
        of LIMIT (ASCENT_...; raise it if this is intended)"."""
        limit = getattr(self, name)
        if value > limit:
            raise InvalidInput(
                f"{what}: {value:,} exceeds the limit of {limit:,} ({LIMIT_VARS[name]}; raise it if this is intended)"
            )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
