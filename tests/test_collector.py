"""The collector on synthetic runs, against every store a run can live in (memory, files)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ascent.producer.collector import collect, dedupe, format_summary, progress, read_records, summarize
from ascent.shared.catalog import class_names
from ascent.shared.keys import run_key
from ascent.shared.spec import Item, JobSpec
from ascent.shared.stats import iteration_histogram, percentile_nearest_rank
from ascent.shared.store import FileStore, MemoryStore, Store
from tests.records_util import item_done, item_failed, shard_record

RUN = "run-1"
STINGRAY, GOLDFISH, SHARK = 6, 1, 2


def png(value: int = 128, size: int = 16, mode: str = "RGB") -> bytes:
    """A small real PNG filled with ``value``."""
    buf = io.BytesIO()
    Image.new(mode, (size, size), value if mode == "L" else (value, 255 - value, value // 2)).save(buf, "PNG")
    return buf.getvalue()


def write_spec(store: Store, run_id: str, kind: str, params: dict[str, Any], inputs: tuple[str, ...]) -> dict:
    spec = JobSpec(kind=kind, run_id=run_id, store=store.uri, params=params, inputs=inputs).validate().to_dict()
    store.put_json(run_key(run_id, "spec.json"), spec)
    return spec


def write_manifest(store: Store, run_id: str, shards: dict[str, list[Item]]) -> dict:
    manifest = {
        "run_id": run_id,
        "n_items": sum(len(items) for items in shards.values()),
        "shards": [
            {
                "shard_id": sid,
                "items": [{"item_id": i.item_id, "source": i.source, "label": i.label} for i in items],
            }
            for sid, items in shards.items()
        ],
    }
    store.put_json(run_key(run_id, "manifest.json"), manifest)
    return manifest


def write_record(
    store: Store,
    run_id: str,
    kind: str,
    shard_id: str,
    key: str,
    items: list[dict],
    written_at: float,
    worker: str = "gpu-0",
) -> None:
    record = shard_record(run_id, shard_id, kind, items, worker=worker, written_at=written_at)
    store.put_json(run_key(run_id, "records", f"{key}.json"), record)


def item(n: int, label: int | None) -> Item:
    return Item(item_id=f"a{n:02d}", source=f"file:///data/img{n:02d}.png", label=label)


def fooled(it: Item, iterations: int, target: int = STINGRAY, store: Store | None = None) -> dict:
    output = store.url(run_key(RUN, "outputs", f"{it.item_id}.png")) if store else None
    return item_done(
        it,
        output,
        fooled=True,
        iterations=iterations,
        target=target,
        pred_before=it.label,
        pred_after=target,
        l2=0.5 * iterations,
        linf=iterations / 64,
    )


# Iterations to fool of a00..a09, sorted: 1 1 2 3 3 4 5 5 6 9 -> median 3.5, p90 (nearest rank) 6, max 9.
ITERATIONS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
# Two targets: a00 and a01 were aimed at goldfish, the rest at stingray.
TARGETS = [GOLDFISH, GOLDFISH] + [STINGRAY] * 8
LABELS = [GOLDFISH] * 5 + [SHARK] * 5 + [GOLDFISH, SHARK, None]


def build_fool_run(store: Store, run_id: str = RUN, hostile_source: str | None = None) -> None:
    """13 planned items: a00-a09 fooled, a10 not fooled, a11 failed, a12 pending.

    a03 is recorded twice (shard s0 redelivered as s0-retry); a05 failed in s0 and was done later by
    another worker in s2. Inputs and outputs are real PNGs.
    """
    items = [item(n, LABELS[n]) for n in range(13)]
    if hostile_source:  # on a done item (a10, in the image grid) and the failed one (a11)
        items[10] = Item(item_id="a10", source=hostile_source, label=GOLDFISH)
        items[11] = Item(item_id="a11", source=hostile_source, label=SHARK)
    write_spec(store, run_id, "fool", {"target": STINGRAY}, ("file:///data",))
    write_manifest(store, run_id, {"s0": items[:6], "s1": items[6:12], "s2": items[12:]})
    done = {n: fooled(items[n], ITERATIONS[n], TARGETS[n], store) for n in range(10)}
    not_fooled = item_done(
        items[10],
        store.url(run_key(run_id, "outputs", "a10.png")),
        fooled=False,
        iterations=100,
        target=STINGRAY,
        pred_before=GOLDFISH,
        pred_after=GOLDFISH,
        l2=40.0,
        linf=0.9,
    )
    failed_a05 = item_failed(items[5], "a05: CUDA out of memory")
    failed_a11 = item_failed(items[11], "a11: cannot identify image file (not an image?)")
    write_record(store, run_id, "fool", "s0", "s0", [done[0], done[1], done[2], done[3], done[4], failed_a05], 10.0)
    write_record(store, run_id, "fool", "s0", "s0-retry", [done[3]], 20.0, worker="gpu-1")
    write_record(
        store,
        run_id,
        "fool",
        "s1",
        "s1",
        [done[6], done[7], done[8], done[9], not_fooled, failed_a11],
        11.0,
        worker="gpu-1",
    )
    write_record(store, run_id, "fool", "s2", "s2", [done[5]], 5.0, worker="gpu-1")
    for n in range(11):
        store.put(run_key(run_id, "inputs", f"a{n:02d}.png"), png(100))
        store.put(run_key(run_id, "outputs", f"a{n:02d}.png"), png(100 + n))


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "memory":
        return MemoryStore(f"test-{uuid.uuid4().hex}")
    return FileStore(tmp_path / "store")


def fool_summary(store: Store) -> dict:
    build_fool_run(store)
    spec = store.get_json(run_key(RUN, "spec.json"))
    manifest = store.get_json(run_key(RUN, "manifest.json"))
    return summarize(spec, manifest, read_records(store, RUN))


# --- counting -----------------------------------------------------------------------------------


def test_fooling_rate_is_over_items_that_did_not_fail(store: Store) -> None:
    s = fool_summary(store)
    assert (s["n_items"], s["n_recorded"], s["n_done"], s["n_failed"], s["n_pending"]) == (13, 12, 11, 1, 1)
    assert s["n_fooled"] == 10
    assert s["fooling_rate"] == pytest.approx(10 / 11)


def test_iteration_statistics_are_exact_on_known_data(store: Store) -> None:
    it = fool_summary(store)["iterations"]
    assert it["median"] == 3.5
    assert it["p90"] == 6
    assert it["max"] == 9
    assert it["mean"] == pytest.approx(3.9)
    assert it["histogram"] == {"bins": list(range(11)), "counts": [0, 2, 1, 2, 1, 2, 1, 0, 0, 1]}


def test_perturbation_sizes_are_over_fooled_items(store: Store) -> None:
    s = fool_summary(store)
    assert s["l2"] == {"mean": pytest.approx(1.95), "median": 1.75, "max": 4.5}
    assert s["linf"]["max"] == 9 / 64


def test_breakdowns_per_target_and_per_true_class(store: Store) -> None:
    s = fool_summary(store)
    assert s["target"] == STINGRAY
    assert s["target_name"] == class_names()[STINGRAY]
    assert s["targets"] == [
        {"class_id": GOLDFISH, "name": "goldfish"},
        {"class_id": STINGRAY, "name": "stingray"},
    ]
    assert s["per_target"] == {
        "1": {
            "name": "goldfish",
            "n": 2,
            "n_failed": 0,
            "n_fooled": 2,
            "fooling_rate": 1.0,
            "median_iterations": 2,
        },
        "6": {
            "name": "stingray",
            "n": 9,
            "n_failed": 1,
            "n_fooled": 8,
            "fooling_rate": pytest.approx(8 / 9),
            "median_iterations": 4.5,
        },
    }
    assert s["per_true_class"] == {
        "1": {
            "name": "goldfish",
            "n": 6,
            "n_failed": 0,
            "n_fooled": 5,
            "fooling_rate": pytest.approx(5 / 6),
            "median_iterations": 3,
        },
        "2": {
            "name": "great white shark",
            "n": 5,
            "n_failed": 1,
            "n_fooled": 5,
            "fooling_rate": 1.0,
            "median_iterations": 5,
        },
    }


def test_failures_carry_their_source_and_error(store: Store) -> None:
    assert fool_summary(store)["failures"] == [
        {
            "item_id": "a11",
            "source": "file:///data/img11.png",
            "error": "a11: cannot identify image file (not an image?)",
        },
    ]


def test_an_item_recorded_twice_counts_once_and_the_latest_record_wins(store: Store) -> None:
    build_fool_run(store)
    records = read_records(store, RUN)
    ids = [r["item_id"] for r in records]
    assert ids == sorted(set(ids)) and len(ids) == 12
    a03 = next(r for r in records if r["item_id"] == "a03")
    assert (a03["shard_id"], a03["worker"], a03["written_at"]) == ("s0", "gpu-1", 20.0)


def test_a_done_record_beats_an_earlier_or_later_failed_one() -> None:
    failed_late = {"item_id": "x", "status": "failed", "error": "boom", "written_at": 9.0}
    done_early = {"item_id": "x", "status": "done", "iterations": 3, "written_at": 1.0}
    assert dedupe([done_early, failed_late]) == [done_early]
    assert dedupe([failed_late, done_early]) == [done_early]


def test_progress_counts_pending_items_and_items_per_worker(store: Store) -> None:
    build_fool_run(store)
    p = progress(store, RUN)
    assert (p.total, p.done, p.failed, p.pending, p.finished, p.complete) == (13, 11, 1, 1, 12, False)
    # s0 by gpu-0 (a00-a02, a04); a03 redone by gpu-1, a05 by gpu-1 in s2, all of s1 by gpu-1.
    assert p.workers == {"gpu-0": 4, "gpu-1": 8}


def test_progress_of_a_run_with_no_records_yet(store: Store) -> None:
    write_manifest(store, "fresh", {"s0": [item(0, None), item(1, None)]})
    p = progress(store, "fresh")
    assert (p.total, p.done, p.failed, p.pending, p.workers) == (2, 0, 0, 2, {})


def test_records_for_items_not_in_the_manifest_are_listed_not_counted(store: Store) -> None:
    build_fool_run(store)
    stray = fooled(Item("zz", "file:///zz.png", None), 1)
    write_record(store, RUN, "fool", "s9", "s9", [stray], 30.0)
    s = summarize(
        store.get_json(run_key(RUN, "spec.json")),
        store.get_json(run_key(RUN, "manifest.json")),
        read_records(store, RUN),
    )
    assert s["unexpected_items"] == ["zz"]
    assert (s["n_items"], s["n_done"], s["n_fooled"]) == (13, 11, 10)


# --- collect ------------------------------------------------------------------------------------


def test_collect_writes_one_line_per_item_sorted_with_pending_items(store: Store) -> None:
    build_fool_run(store)
    summary = collect(store, RUN)
    lines = store.get(run_key(RUN, "items.jsonl")).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["item_id"] for r in rows] == [f"a{n:02d}" for n in range(13)]
    assert [r["status"] for r in rows].count("pending") == 1
    assert rows[12] == {
        "item_id": "a12",
        "source": "file:///data/img12.png",
        "label": None,
        "status": "pending",
        "error": None,
        "output": None,
    }
    assert rows[11]["error"] == "a11: cannot identify image file (not an image?)"
    assert store.get_json(run_key(RUN, "summary.json")) == summary
    assert summary["report"] == store.url(run_key(RUN, "report.html"))
    assert store.exists(run_key(RUN, "report.html"))


def test_collect_twice_gives_identical_bytes(store: Store) -> None:
    build_fool_run(store)
    names = ("summary.json", "items.jsonl", "report.html")
    collect(store, RUN)
    first = [store.get(run_key(RUN, n)) for n in names]
    collect(store, RUN)
    assert [store.get(run_key(RUN, n)) for n in names] == first


class PresigningStore(MemoryStore):
    """A memory store whose url() presigns like S3 does when given ``expires``."""

    def url(self, key: str, expires: int | None = None) -> str:
        return f"https://bucket.example/{key}?X-Expires={expires}" if expires else super().url(key)


def test_collect_with_presign_gives_presigned_output_urls() -> None:
    store = PresigningStore(f"test-{uuid.uuid4().hex}")
    build_fool_run(store)
    summary = collect(store, RUN, presign=600)
    rows = [json.loads(line) for line in store.get(run_key(RUN, "items.jsonl")).splitlines()]
    assert rows[0]["output"] == f"https://bucket.example/runs/{RUN}/outputs/a00.png?X-Expires=600"
    assert rows[11]["output"] is None and rows[12]["output"] is None
    assert summary["report"] == f"https://bucket.example/runs/{RUN}/report.html?X-Expires=600"
    assert (
        f'href="https://bucket.example/runs/{RUN}/outputs/a00.png?X-Expires=600"'
        in store.get(run_key(RUN, "report.html")).decode()
    )


def test_format_summary_shows_the_headline_numbers_and_failures(store: Store) -> None:
    build_fool_run(store)
    text = format_summary(collect(store, RUN))
    assert "13 items, 11 done, 1 failed, 1 pending" in text
    assert "fooled 10/11 (90.9%) towards 1 goldfish, 6 stingray" in text
    assert "median 3.5, p90 6, max 9" in text
    assert "a11 file:///data/img11.png: a11: cannot identify image file (not an image?)" in text
    assert f"report: {store.url(run_key(RUN, 'report.html'))}" in text


# --- other kinds --------------------------------------------------------------------------------


def test_style_summary_has_final_losses_per_item_and_their_means(store: Store) -> None:
    items = [Item("c0", "file:///c0.png"), Item("c1", "file:///c1.png"), Item("c2", "file:///c2.png")]
    spec = write_spec(store, "st", "style", {"style": ["file:///starry.png"]}, ("file:///c",))
    manifest = write_manifest(store, "st", {"s0": items})
    records = [
        item_done(items[0], None, content_loss=1.0, style_loss=10.0, tv_loss=0.5, loss=11.5),
        item_done(items[1], None, content_loss=3.0, style_loss=30.0, tv_loss=1.5, loss=float("nan")),
        item_failed(items[2], "c2: style image missing"),
    ]
    write_record(store, "st", "style", "s0", "s0", records, 1.0)
    s = summarize(spec, manifest, read_records(store, "st"))
    assert [x["item_id"] for x in s["losses"]] == ["c0", "c1"]
    assert s["losses"][1]["loss"] is None  # NaN is not JSON
    assert s["mean_losses"] == {"content_loss": 2.0, "style_loss": 20.0, "tv_loss": 1.0, "loss": 11.5}
    assert "mean final losses: content_loss 2" in format_summary(s)


def test_saliency_summary_counts_top1_over_labelled_items(store: Store) -> None:
    items = [Item("i0", "file:///0.png", 1), Item("i1", "file:///1.png", 2), Item("i2", "file:///2.png")]
    spec = write_spec(store, "sal", "saliency", {}, ("file:///d",))
    manifest = write_manifest(store, "sal", {"s0": items})
    records = [
        item_done(it, f"memory://o/{it.item_id}", pred=1, score=s, saliency=f"memory://o/{it.item_id}")
        for it, s in zip(items, (9.0, 3.0, 5.0), strict=True)
    ]
    write_record(store, "sal", "saliency", "s0", "s0", records, 1.0)
    s = summarize(spec, manifest, read_records(store, "sal"))
    assert (s["n_done"], s["n_labelled"], s["n_correct"], s["accuracy"]) == (3, 2, 1, 0.5)
    assert s["predictions"][0] == {
        "item_id": "i0",
        "label": 1,
        "label_name": "goldfish",
        "pred": 1,
        "pred_name": "goldfish",
        "score": 9.0,
        "output": "memory://o/i0",
    }


def test_classviz_summary_gives_the_fraction_whose_top1_is_the_requested_class(store: Store) -> None:
    items = [Item(f"k{n}", f"class:{c}") for n, c in enumerate((76, 78, 113, 76))]
    spec = write_spec(store, "cv", "classviz", {"classes": [76, 78, 113]}, ())
    manifest = write_manifest(store, "cv", {"s0": items})
    records = [
        item_done(it, None, class_id=int(it.source[6:]), score=20.0, pred=p)
        for it, p in zip(items[:3], (76, 78, 1), strict=True)
    ]
    write_record(store, "cv", "classviz", "s0", "s0", records, 1.0)
    s = summarize(spec, manifest, read_records(store, "cv"))
    assert (s["n_done"], s["n_pending"], s["n_hit"]) == (3, 1, 2)
    assert s["hit_rate"] == pytest.approx(2 / 3)
    assert s["images"][0]["class_name"] == "tarantula"
    assert "top-1 is the requested class: 2/3 (66.7%)" in format_summary(s)


# --- building blocks ----------------------------------------------------------------------------


def test_p90_is_an_observed_value_by_nearest_rank() -> None:
    assert percentile_nearest_rank(list(range(1, 11)), 90) == 9
    assert percentile_nearest_rank([7], 90) == 7
    assert percentile_nearest_rank([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 90) == 10


def test_histogram_bins_are_integer_and_at_most_twenty() -> None:
    hist = iteration_histogram([0, 99, 100, 5])
    assert hist["bins"][:3] == [0, 6, 12] and len(hist["counts"]) == 17 and hist["bins"][-1] > 100
    assert sum(hist["counts"]) == 4 and hist["counts"][0] == 2 and hist["counts"][-1] == 2
    assert iteration_histogram([]) == {"bins": [], "counts": []}


def test_a_fool_run_with_nothing_fooled_has_null_statistics() -> None:
    it = Item("a", "file:///a.png", 1)
    spec = JobSpec("fool", "r", "memory://r", model="tiny", params={"target": 6}, inputs=("file:///a.png",))
    manifest = {"run_id": "r", "n_items": 1, "shards": [{"shard_id": "s", "items": [asdict(it)]}]}
    s = summarize(spec, manifest, [item_failed(it, "a: broken")])
    assert (s["fooling_rate"], s["iterations"]["median"], s["l2"]["max"]) == (None, None, None)
    assert "fooled 0/0 (-)" in format_summary(s)


def test_the_collector_and_report_do_not_import_torch() -> None:
    code = "import sys, ascent.producer.collector, ascent.producer.report; sys.exit('torch' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
