"""Result records: what a worker writes per shard and what the collector reads.

A shard record is the commit marker of a shard: the worker writes every output object first and the
record last, to ``runs/<run_id>/records/<shard_id>.json``. Item records are flat JSON objects:

    item_id, source, label (true class or null), status ("done" | "failed"), error (null or a message
    that names the item and the reason), output (URI of the output image or null), kind-specific metrics:
      fool:     fooled, iterations, target, pred_before, pred_after, l2, linf
      saliency: pred, saliency (URI of the map PNG, same as output), score
      classviz: class_id, score, pred
      style:    content_loss, style_loss, tv_loss, loss
"""

from __future__ import annotations

import time
from typing import Any

from shared.spec import SPEC_VERSION, Item

DONE = "done"
FAILED = "failed"


def item_done(item: Item, output: str | None, **metrics: Any) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "source": item.source,
        "label": item.label,
        "status": DONE,
        "error": None,
        "output": output,
        **metrics,
    }


def item_failed(item: Item, error: str) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "source": item.source,
        "label": item.label,
        "status": FAILED,
        "error": error,
        "output": None,
    }


def shard_record(
    run_id: str, shard_id: str, kind: str, items: list[dict[str, Any]], **info: Any
) -> dict[str, Any]:
    """``info``: worker, device, attempt, seconds... (free-form, for status and the report)."""
    return {
        "version": SPEC_VERSION,
        "run_id": run_id,
        "shard_id": shard_id,
        "kind": kind,
        "written_at": time.time(),
        "items": items,
        **info,
    }
