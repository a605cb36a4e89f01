"""Records as JSON objects, written the way a worker writes them (through the product's typed records)."""

from __future__ import annotations

import time
from typing import Any

from ascent.shared.records import ItemRecord, ShardRecord
from ascent.shared.spec import Item


def item_done(item: Item, output: str | None, **result: Any) -> dict[str, Any]:
    return ItemRecord.done(item, output, **result).to_dict()


def item_failed(item: Item, error: str) -> dict[str, Any]:
    return ItemRecord.failed(item, error).to_dict()


def shard_record(run_id: str, shard_id: str, kind: str, items: list[dict[str, Any]], **info: Any) -> dict[str, Any]:
    written_at = info.pop("written_at", time.time())
    records = tuple(ItemRecord.from_dict(i) for i in items)
    return ShardRecord(run_id, shard_id, kind, records, written_at=written_at, info=info).to_dict()
