"""The finished item rows of a run, for the stopping rules of jobs that ``stops_early`` (fool
``--until-ci``): read before each shard, so a process keeps them parsed between shards.

The cache is keyed by (store URI, record key) and holds each record's version in the store
(``Store.versions``: from the listing, no request per record): a record written again, or a run id used
again, is read again. At most ``ROWS_CACHED`` item rows are kept (least recently used records out), so a
run of large shards costs a bounded amount of memory, only more reads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ascent.shared.errors import InvalidInput, NotFoundInStore
from ascent.shared.keys import RunKeys
from ascent.shared.records import ShardRecord
from ascent.shared.store import Store

ROWS_CACHED = 20_000  # item rows a process keeps parsed (a few kB each: tens of MB at most)
_RECORDS: OrderedDict[tuple[str, str], tuple[str, list[dict[str, Any]]]] = OrderedDict()
_ROWS = [0]  # the rows in _RECORDS


def finished_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The item rows of every shard record of the run so far (unreadable records left out), each record
    read once per version."""
    rows: list[dict[str, Any]] = []
    for key, version in store.versions(RunKeys(run_id).records).items():
        hit = _RECORDS.get((store.uri, key))
        if hit is not None and version is not None and hit[0] == version:
            _RECORDS.move_to_end((store.uri, key))
            rows += hit[1]
            continue
        try:
            items = [i.to_dict() for i in ShardRecord.from_dict(store.get_json(key)).items]
        except (InvalidInput, NotFoundInStore, ValueError):
            continue
        _forget((store.uri, key))
        if version is not None:
            _RECORDS[(store.uri, key)] = (version, items)
            _ROWS[0] += len(items)
        rows += items
    while _RECORDS and _ROWS[0] > ROWS_CACHED:
        _forget(next(iter(_RECORDS)))
    return rows


def rows_cached() -> int:
    """How many item rows this process keeps parsed."""
    return _ROWS[0]


def _forget(entry: tuple[str, str]) -> None:
    dropped = _RECORDS.pop(entry, None)
    if dropped is not None:
        _ROWS[0] -= len(dropped[1])
