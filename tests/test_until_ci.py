"""fool's ``--until-ci W``: items planned in a seeded random order, shards skipped by the worker once the
95 % intervals are within ±W, the skipped items recorded as such and the estimate in the summary."""

from __future__ import annotations

import json

import numpy as np
import torch

from ascent.producer.collector import format_summary
from ascent.producer.inputs import enumerate_inputs
from ascent.shared.jobs import JOBS
from ascent.shared.jobs.fool import FoolParams
from ascent.shared.kernels import fool
from ascent.shared.keys import RunKeys, run_key
from ascent.shared.models import load_classifier
from ascent.shared.spec import Item
from ascent.shared.store import FileStore
from ascent.worker import finished
from ascent.worker.finished import finished_rows
from tests.nets_util import smooth_images
from tests.records_util import item_done, shard_record
from tests.test_save_format import MODEL, rows_of, run_fool

N, SIZE, W = 240, 16, 0.05
ATTACK = {"target": None, "lr": 0.2, "max_iters": 1, "extra_iters": 0, "seed": 3}


def test_until_ci_stops_once_precise_with_the_estimate_near_the_full_runs(tmp_path):
    x = smooth_images(N, SIZE, seed=5)
    net, images = load_classifier(MODEL, "random", device="cpu"), torch.from_numpy(x).permute(0, 3, 1, 2) / 255
    with torch.no_grad():
        labels = net(images).argmax(1)
    path = tmp_path / "x.npz"
    np.savez(path, X=x, y=labels.numpy())  # labelled: robust accuracy counts too
    attack = {k: v for k, v in ATTACK.items() if k in ("lr", "max_iters", "extra_iters")}
    full_rate = float(fool(net, images, None, **attack, labels=labels.tolist()).fooled.float().mean())  # every item

    planned = JOBS["fool"].plan_items(FoolParams.from_dict({**ATTACK, "until_ci": W}), enumerate_inputs([path]))
    ids = [i.item_id for i in planned]
    assert sorted(ids) == [f"{i:06d}" for i in range(N)] and ids != sorted(ids)  # a seeded random order
    again = JOBS["fool"].plan_items(FoolParams.from_dict({**ATTACK, "until_ci": W}), enumerate_inputs([path]))
    assert [i.item_id for i in again] == ids

    store = run_fool(tmp_path / "ci", path, "ci", {**ATTACK, "until_ci": W}, shard_size=10)
    rows = rows_of(store, "ci")
    skipped = [r for r in rows if r["status"] == "skipped"]
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) + len(skipped) == N and len(skipped) > 0 and len(done) < N  # it stopped early
    assert all(r["skipped"] == "precision reached" and r["output"] is None for r in skipped)
    assert store.get_json(run_key("ci", "stopped.json"))["reason"] == "precision reached"
    summary = json.loads(store.get(run_key("ci", "summary.json")))
    p = summary["precision"]
    assert p["reached"] and p["n_skipped"] == len(skipped) == summary["n_skipped"]
    for estimate in (p["success"], p["robust_accuracy"]):
        assert (
            estimate["n"] == len(done) and estimate["high"] - estimate["rate"] < W > estimate["rate"] - estimate["low"]
        )
    assert abs(p["success"]["rate"] - full_rate) <= W, (p["success"], full_rate)
    assert p["success"]["k"] == sum(r["fooled"] for r in done) == summary["n_fooled"]
    text = format_summary(summary)
    assert f"precision ±0.05 reached after {len(done)} items, {len(skipped)} skipped (precision reached)" in text
    page = store.get(run_key("ci", "report.html")).decode()
    assert "robust accuracy" in text and "Precision (--until-ci 0.05)" in page
    assert f"<div class=v>{len(skipped)}</div><div class=k>skipped (precision reached)</div>" in page


def fooled_record(run_id: str, shard: int, fooled: list[bool]) -> dict:
    items = [Item(f"{shard:03d}{i:03d}", f"file:///x/{i}.png") for i in range(len(fooled))]
    rows = [item_done(item, None, fooled=f, pred_after=0) for item, f in zip(items, fooled, strict=True)]
    return shard_record(run_id, f"shard-{shard:05d}", "fool", rows)


def test_the_stopping_rule_reads_a_record_written_again_and_a_run_id_used_again(tmp_path):
    store = FileStore(tmp_path / "store")
    keys = RunKeys("again")
    store.put_json(keys.record("shard-00000"), fooled_record("again", 0, [True] * 3))
    assert [r["fooled"] for r in finished_rows(store, "again")] == [True] * 3

    store.put_json(keys.record("shard-00000"), fooled_record("again", 0, [False] * 3))  # another attempt's
    assert [r["fooled"] for r in finished_rows(store, "again")] == [False] * 3

    store.delete(keys.record("shard-00000"))  # the run deleted, its id submitted again
    store.put_json(keys.record("shard-00000"), fooled_record("again", 0, [True, False]))
    assert [r["fooled"] for r in finished_rows(store, "again")] == [True, False]


def test_a_worker_keeps_a_bounded_number_of_rows_parsed_and_still_reads_every_record(tmp_path):
    store = FileStore(tmp_path / "store")
    big = finished.ROWS_CACHED // 2 + 1  # two such records are more rows than a process keeps
    for shard in range(3):
        store.put_json(RunKeys("big").record(f"shard-{shard:05d}"), fooled_record("big", shard, [True] * big))
    for _ in range(2):
        assert len(finished_rows(store, "big")) == 3 * big
        assert finished.rows_cached() <= finished.ROWS_CACHED
