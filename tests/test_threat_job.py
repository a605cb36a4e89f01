"""fool's threat-model options end to end without Celery: the command line, the spec, the producer's
(image, ε) plan, the worker's records, the summary per ε and the report's accuracy-vs-ε curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ascent.producer.cli import build_parser
from ascent.producer.collector import collect, format_summary
from ascent.producer.inputs import enumerate_inputs
from ascent.producer.options import job_params
from ascent.producer.submit import plan_run
from ascent.shared.catalog import resolve_class
from ascent.shared.errors import InvalidSpec
from ascent.shared.jobs import JOBS
from ascent.shared.jobs.fool import FoolParams
from ascent.shared.jobs.fool_report import eps_text
from ascent.shared.keys import run_key
from ascent.shared.models import load_classifier
from ascent.shared.params import parse_fraction
from ascent.shared.records import DONE
from ascent.shared.settings import Settings
from ascent.shared.spec import Item, JobSpec, Manifest, Shard
from ascent.shared.store import FileStore
from ascent.worker.handler import run_shard
from ascent.worker.runtime import WorkerRuntime
from tests.test_report import assert_well_formed

FOOL = JOBS["fool"]
SWEEP = "1/255,2/255,4/255,8/255"


def flags(*extra: str) -> dict:
    args = build_parser().parse_args(["run", "fool", "--images", "x", "--target", "6", *extra])
    return job_params(FOOL, args, resolve_class)[0]


def test_fractions_and_switches_on_the_command_line_reach_the_spec():
    params = flags("--norm", "linf", "--eps", SWEEP, "--step-size", "1/255", "--random-start", "--no-early-stop")
    assert params["eps"] == [1 / 255, 2 / 255, 4 / 255, 8 / 255]
    assert params["step_size"] == 1 / 255 and params["random_start"] is True and params["early_stop"] is False
    p = FoolParams.from_dict(params)
    assert p.eps == (1 / 255, 2 / 255, 4 / 255, 8 / 255) and p.norm == "linf"
    assert FoolParams.from_dict(p.to_dict()) == p  # JSON round trip
    assert "random_start" not in flags() and "early_stop" not in flags()  # unset: the spec's defaults
    assert parse_fraction(" 8/255 ") == 8 / 255 and parse_fraction("0.5") == 0.5
    with pytest.raises(SystemExit):
        flags("--eps", "8/zero")


def test_defaults_are_the_reference_threat_model():
    p = FoolParams.from_dict({"target": 6})
    assert (p.norm, p.loss, p.eps, p.early_stop, p.random_start, p.restarts, p.momentum) == (
        "l2-unbounded",
        "score",
        None,
        True,
        False,
        1,
        0.0,
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"norm": "linf"}, "params.eps"),
        ({"norm": "l2", "eps": [0.5, 0.5]}, "params.eps"),
        ({"norm": "linf", "eps": [2.0]}, "params.eps"),
        ({"eps": [0.1]}, "params.eps"),
        ({"step_size": 0.1}, "params.step_size"),
        ({"random_start": True}, "params.random_start"),
        ({"norm": "linf", "eps": [0.1], "restarts": 3}, "params.restarts"),
        ({"norm": "linf", "eps": [-0.1]}, "params.eps"),
        ({"norm": "linf", "eps": [0.1], "random_start": "yes"}, "params.random_start"),
        ({"norm": "l1", "eps": [0.1]}, "params.norm"),
        ({"loss": "hinge"}, "params.loss"),
    ],
)
def test_inconsistent_threat_parameters_are_refused_naming_the_field(params, field):
    with pytest.raises(InvalidSpec) as err:
        FoolParams.from_dict({"target": 6, **params})
    assert err.value.field == field


def items(n: int) -> list[Item]:
    return [Item(f"00000{i}", f"file:///img{i}.png", label=i) for i in range(n)]


def test_an_eps_sweep_is_planned_as_one_item_per_image_and_eps():
    p = FoolParams.from_dict({"target": 6, "norm": "linf", "eps": [1 / 255, 8 / 255]})
    planned = FOOL.plan_items(p, items(2))
    assert [i.item_id for i in planned] == ["000000-e0", "000000-e1", "000001-e0", "000001-e1"]
    assert [i.variant["eps"] for i in planned] == [1 / 255, 8 / 255] * 2
    assert [i.label for i in planned] == [0, 0, 1, 1] and planned[1].source == "file:///img0.png"
    one = FOOL.plan_items(p.replace(eps=(0.5,)), items(1))
    assert [(i.item_id, dict(i.variant)) for i in one] == [("000000", {"eps": 0.5})]
    assert FOOL.plan_items(FoolParams.from_dict({"target": 6}), items(2)) == items(2)  # no budget: as enumerated


def test_item_variants_round_trip_through_the_manifest_and_are_validated():
    spec = JobSpec(kind="fool", run_id="r", store="file:///s", params={"target": 6}, inputs=("x",)).validate()
    planned = FOOL.plan_items(spec.params.replace(norm="l2", eps=(0.5, 1.0)), items(2))
    manifest = plan_run(spec, planned, 3)
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest and again.items[3].variant == {"eps": 1.0}
    assert "variant" not in Item("000000", "file:///a.png").to_dict()  # absent when empty
    for bad in ({"eps": [1]}, {"Eps": 1}, {"eps": float("nan")}, "eps=1"):
        with pytest.raises(InvalidSpec) as err:
            Item.from_dict({"item_id": "000000", "source": "file:///a.png", "variant": bad})
        assert err.value.field == "shard.items.variant"


@pytest.fixture
def labelled_npz(tmp_path: Path) -> Path:
    """Three 32×32 images, labelled with the tiny network's own predictions (so clean accuracy is 3/3)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        preds = load_classifier("tiny", device="cpu")(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    path = tmp_path / "x.npz"
    np.savez(path, X=x, y=preds.argmax(1).numpy())
    return path


def test_a_sweep_runs_as_items_whose_records_carry_eps_and_summarise_per_eps(tmp_path, labelled_npz):
    store = FileStore(tmp_path / "store")
    params = {"target": None, "norm": "linf", "eps": [0.0, 2 / 255, 16 / 255], "max_iters": 8}
    spec = JobSpec(
        kind="fool", run_id="sweep", store=store.uri, model="tiny", params=params, inputs=("x",), size=32
    ).validate()
    enumerated = enumerate_inputs([labelled_npz])  # labels from the .npz's y, as the producer reads them
    planned = FOOL.plan_items(spec.params, enumerated)
    manifest = plan_run(spec, planned, 16)
    store.put_json(run_key("sweep", "spec.json"), spec.to_dict())
    store.put_json(run_key("sweep", "manifest.json"), manifest.to_dict())
    record = run_shard(
        spec,
        manifest.shards[0],
        store,
        WorkerRuntime.build(Settings(store=store.uri, input_roots=(str(tmp_path),))),
        "cpu",
    )
    rows = {i.item_id: i.to_dict() for i in record.items}
    assert len(rows) == 9 and all(r["status"] == DONE for r in rows.values())
    assert [rows[f"000001-e{k}"]["eps"] for k in range(3)] == [0.0, 2 / 255, 16 / 255]
    assert store.exists(run_key("sweep", "outputs", "000002-e1.png"))
    assert all(r["linf"] <= r["eps"] + 1e-7 for r in rows.values())
    assert not any(rows[f"00000{i}-e0"]["fooled"] for i in range(3))  # ε = 0: nothing can change

    summary = collect(store, "sweep")
    per_eps = summary["per_eps"]
    assert [e["eps"] for e in per_eps] == [0.0, 2 / 255, 16 / 255]
    assert [e["eps_text"] for e in per_eps] == ["0/255", "2/255", "16/255"]
    at0 = per_eps[0]
    assert (at0["n"], at0["n_labelled"], at0["n_robust"], at0["robust_accuracy"], at0["success_rate"]) == (
        3,
        3,
        3,
        1.0,
        0.0,
    )  # the labels are the clean predictions: ε = 0 keeps them all
    for e in per_eps:
        assert e["n_robust"] + e["n_fooled"] == e["n_labelled"]  # untargeted: fooled = moved off the label
    lines = store.get(run_key("sweep", "items.jsonl")).decode().splitlines()
    assert json.loads(lines[1])["variant"] == {"eps": 2 / 255} and json.loads(lines[1])["eps"] == 2 / 255
    text = format_summary(summary)
    assert "eps 2/255: success" in text and "robust accuracy 100.0% (3/3 labelled)" in text
    page = store.get(run_key("sweep", "report.html")).decode()
    assert "Success and robust accuracy vs ε" in page and "<polyline" in page and "ε 16/255" in page
    assert_well_formed(page)


def test_robust_accuracy_is_null_without_labelled_items(tmp_path):
    from ascent.producer.collector import summarize
    from tests.records_util import item_done

    spec = JobSpec(
        kind="fool", run_id="r", store="file:///s", params={"target": 6, "norm": "l2", "eps": [0.5]}, inputs=("x",)
    ).validate()
    item = Item("000000", "file:///a.png", variant={"eps": 0.5})
    row = item_done(item, None, fooled=True, iterations=2, target=6, pred_before=1, pred_after=6, l2=0.4, linf=0.1)
    summary = summarize(spec, plan_run(spec, [item], 1), [{**row, "eps": 0.5}])
    assert summary["per_eps"] == [
        {
            "eps": 0.5,
            "eps_text": "0.5",
            "success_rate": 1.0,
            "n": 1,
            "n_failed": 0,
            "n_fooled": 1,
            "median_iterations": 2,
            "n_labelled": 0,
            "n_robust": 0,
            "robust_accuracy": None,
        }
    ]
    assert eps_text(8 / 255) == "8/255" and eps_text(None) == "-"


def test_the_reference_run_has_no_eps_section(tmp_path):
    shard = Shard("shard-00000", (Item("000000", "file:///missing.png"),))
    spec = JobSpec(kind="fool", run_id="r", store="file:///s", params={"target": 6}, inputs=("x",)).validate()
    assert FOOL.plan_items(spec.params, list(shard.items)) == list(shard.items)
    assert FOOL.report_sections({"per_eps": [], "iterations": {"histogram": {"bins": [], "counts": []}},
                                 "per_target": {}, "per_true_class": {}}, None)[0] == ""  # fmt: skip
