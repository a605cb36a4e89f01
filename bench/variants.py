"""What the variant diagnostics share (fool_variants, style_variants, alloc_check): candidate changes of
the product patched in *this process only* (the product's files are never edited), and the report of
each variant against the baseline.

- ``swapped``: an attribute replaced for the duration of a block.
- ``patched``: the layout and chunking variants of the kernels (NCHW, the former ``split`` chunking,
  no singleton padding, oneDNN on or off), as one context manager.
- ``layout``: a model in the memory layout a variant needs.
- ``speedups``: one summary metric per variant, baseline wall / its wall.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor

from ascent.shared.kernels import loop
from ascent.shared.models import Classifier
from bench.common import Report


@contextmanager
def swapped(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.<name>`` is ``value`` inside the block and what it was before after it. Patch the module
    that *calls* a function (``ascent.shared.kernels.loop``, where the ascent loop looks its helpers
    up), not a package that re-exports it."""
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def _split_chunks(rows: Tensor, max_batch: int | None) -> tuple[Tensor, ...]:
    """The chunking before commit 0744f64: ``rows.split`` (25 at 8 → 8+8+8+1, a lone padded chunk)."""
    return rows.split(max_batch or int(rows.numel()))


@contextmanager
def patched(split: bool = False, nopad: bool = False, mkldnn: bool | None = None, nchw: bool = False) -> Iterator[None]:
    """The kernels with ``split`` chunking; the Classifier without singleton padding (``nopad``) or with
    NCHW inputs (``nchw``); oneDNN forced on or off (``mkldnn``)."""
    prepare = Classifier._prepare
    with ExitStack() as stack:
        if split:
            stack.enter_context(swapped(loop, "_balanced_chunks", _split_chunks))
        if nopad:
            memory_format = torch.contiguous_format if nchw else torch.channels_last

            def unpadded(self: Classifier, inputs: Tensor) -> Tensor:
                return inputs.contiguous(memory_format=memory_format)

            stack.enter_context(swapped(Classifier, "_prepare", unpadded))
        elif nchw:

            def contiguous(self: Classifier, inputs: Tensor) -> Tensor:
                return prepare(self, inputs).contiguous()

            stack.enter_context(swapped(Classifier, "_prepare", contiguous))
        if mkldnn is not None:
            stack.enter_context(swapped(torch.backends.mkldnn, "enabled", mkldnn))
        yield


def layout(model: Classifier, nchw: bool) -> Classifier:
    """``model`` with NCHW (contiguous) weights when ``nchw``, else as loaded (channels_last)."""
    return model.to(memory_format=torch.contiguous_format) if nchw else model


def speedups(report: Report, walls: Mapping[str, float], baseline: str) -> None:
    """A metric ``"<variant> vs <baseline>"`` for every other variant: baseline wall / its wall."""
    for name, wall in walls.items():
        if name != baseline:
            report.metric(f"{name} vs {baseline}", f"{walls[baseline] / wall:.2f}×")
