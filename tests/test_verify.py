"""``ascent verify RUN_ID --model M``: a finished fool run's stored outputs checked against their
recorded sha256 and claimed predictions, and their transfer to a second model, as a run of the verify
job: in this process through the shard handler, and through the real command (embedded Redis and a
worker process)."""

from __future__ import annotations

import argparse
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ascent.producer.collector import collect
from ascent.producer.verify_command import plan_verify
from ascent.shared.errors import InvalidInput
from ascent.shared.images import encode_png, resize_center_crop
from ascent.shared.keys import run_key
from ascent.shared.models import load_classifier
from ascent.shared.settings import Settings
from ascent.shared.spec import JobSpec
from ascent.shared.store import FileStore
from ascent.worker.handler import run_shard
from ascent.worker.runtime import WorkerRuntime
from tests.faults_util import REPO, ascent
from tests.nets_util import smooth_images
from tests.test_report import assert_well_formed
from tests.test_save_format import MODEL, SIZE, rows_of, run_fool

VICTIM, VICTIM_SIZE = "tests.nets_util:five_wide", 24


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> FileStore:
    """A finished fool run ``src``: six labelled images, each towards classes 1 and 3 (12 outputs)."""
    root = tmp_path_factory.mktemp("verify")
    path = root / "x.npz"
    np.savez(path, X=smooth_images(6, SIZE, seed=2), y=np.arange(6) % 5)
    return run_fool(root, path, "src", {"target": [1, 3], "lr": 0.5, "max_iters": 8, "extra_iters": 0})


def verify_args(store: FileStore, *victim: str, verify_id: str = "v") -> argparse.Namespace:
    victims = [{"model": victim[0], "weights": "random", "size": VICTIM_SIZE}] if victim else []
    return argparse.Namespace(run_id="src", victims=victims, verify_id=verify_id)


def test_on_a_finished_run_every_hash_and_claimed_prediction_holds(source):
    settings = Settings(store=source.uri)
    spec, items, _ = plan_verify(verify_args(source), settings, probe=True)
    assert len(items) == 12 and spec.model == MODEL and spec.params.source_run == "src"
    store = settings.open_store()
    store.put_json(run_key("v", "spec.json"), spec.to_dict())
    from ascent.producer.submit import plan_run

    manifest = plan_run(spec, items, 8)
    store.put_json(run_key("v", "manifest.json"), manifest.to_dict())
    runtime = WorkerRuntime.build(settings)
    for shard in manifest.shards:
        run_shard(spec, shard, store, runtime, "cpu")
    v = collect(store, "v")["verify"]
    assert (v["n_checked"], v["n_hash_ok"], v["n_claims_hold"]) == (12, 12, 12)
    assert v["tampered"] == v["missing"] == v["claims_broken"] == []
    assert json.loads(store.get(run_key("v", "verify.json"))) == v
    assert_well_formed(store.get(run_key("v", "report.html")).decode())
    fooled = sum(r["fooled"] for r in rows_of(source, "src"))
    assert v["transfer"][0]["k"] == fooled  # on the run's own model, success is what the run claimed
    with pytest.raises(InvalidInput, match="not in"):
        plan_verify(argparse.Namespace(run_id="nope", victims=[], verify_id="w"), settings, probe=False)


def test_a_local_victim_file_travels_with_the_run_and_workers_check_its_sha256(source, tmp_path):
    import hashlib

    from ascent.producer.submit import plan_run
    from ascent.producer.verify_command import with_victim_files
    from ascent.shared.jobs.verify import Victim
    from tests.nets_util import five_wide

    local = tmp_path / "victim.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated, yet users have such files
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        torch.jit.save(torch.jit.trace(five_wide().eval(), torch.zeros(1, 3, VICTIM_SIZE, VICTIM_SIZE)), local)
    args = argparse.Namespace(run_id="src", victims=[{"model": str(local), "size": VICTIM_SIZE}], verify_id="v3")
    settings = Settings(store=source.uri)
    spec, items, _ = plan_verify(args, settings, probe=False)
    spec = with_victim_files(spec, source, upload=True).validate()  # as for a broker's remote workers

    victim = Victim.from_json(spec.params.victims[0])
    assert victim.model == source.url(run_key("v3", "uploads", "victim-0-model.pt"))
    assert spec.files[victim.model] == hashlib.sha256(local.read_bytes()).hexdigest()
    local.unlink()  # a remote worker cannot read the producer's file: it runs the copy
    source.put_json(run_key("v3", "spec.json"), spec.to_dict())
    first, second = plan_run(spec, items, 8).shards
    runtime = WorkerRuntime.build(settings)
    assert {r.status for r in run_shard(spec, first, source, runtime, "cpu").items} == {"done"}

    copy = run_key("v3", "uploads", "victim-0-model.pt")
    source.put(copy, source.get(copy) + b"tampered")
    failed = run_shard(spec, second, source, WorkerRuntime.build(settings), "cpu").items
    assert all(r.status == "failed" and "sha256 is not the one recorded" in (r.error or "") for r in failed)


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval, written out here."""
    z, p = 1.959963984540054, k / n
    centre, spread = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_verify_command_reports_a_tampered_output_and_the_transfer_table_on_worker_processes(source, tmp_path):
    rows = {r["item_id"]: r for r in rows_of(source, "src")}
    tampered = "000002-t3"
    key = run_key("src", "outputs", f"{tampered}.png")
    pixels = np.asarray(Image.open(io.BytesIO(source.get(key))).convert("RGB")).copy()
    pixels[0, 0] ^= 1
    source.put(key, encode_png(pixels))
    args = ["verify", "src", "--model", VICTIM, "--weights", "random", "--size", str(VICTIM_SIZE)]
    done = ascent([*args, "--store", source.uri, "--verify-id", "v2"], tmp_path, PYTHONPATH=str(REPO))
    assert done.returncode == 1, done.stderr
    assert f"tampered (1): {tampered}" in done.stdout
    assert "ascent: run src does not verify: 1 tampered (the items are listed above)" in done.stderr
    v = json.loads(source.get(run_key("v2", "verify.json")))
    assert v["tampered"] == [tampered] and v["n_hash_ok"] == 11 and v["missing"] == []
    report = source.get(run_key("v2", "report.html")).decode()
    assert "Transfer" in report and tampered in report
    records = [json.loads(source.get(k)) for k in source.list(run_key("v2", "records") + "/")]
    assert records and all("@" in r["worker"] and r["task_id"] for r in records)  # Celery worker processes ran it

    models = [
        (load_classifier(MODEL, "random", device="cpu"), SIZE),
        (load_classifier(VICTIM, "random", device="cpu"), VICTIM_SIZE),
    ]
    for table, (net, size) in zip(v["transfer"], models, strict=True):
        hits: dict[int, list[bool]] = {}
        for item_id, r in rows.items():
            if item_id == tampered:
                continue
            image = np.asarray(Image.open(io.BytesIO(source.get(run_key("src", "outputs", f"{item_id}.png")))))
            image = resize_center_crop(image, size)
            with torch.no_grad():
                pred = int(net(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255).argmax(1))
            hits.setdefault(r["target"], []).append(pred == r["target"])
        k, n = sum(sum(h) for h in hits.values()), sum(len(h) for h in hits.values())
        assert (table["k"], table["n"]) == (k, n) == (table["k"], 11)
        assert (table["low"], table["high"]) == pytest.approx(wilson(k, n))
        assert [(c["class_id"], c["k"], c["n"]) for c in table["per_class"]] == [
            (c, sum(h), len(h)) for c, h in sorted(hits.items())
        ]
    assert JobSpec.from_dict(json.loads(source.get(run_key("v2", "spec.json")))).params.victims


def test_the_options_after_a_model_are_that_victims_own(capsys):
    from ascent.producer.cli import build_parser

    args = build_parser().parse_args(
        ["verify", "r", "--model", "a", "--size", "64", "--model", "b", "--weights", "random"]
    )
    assert args.victims == [{"model": "a", "size": 64}, {"model": "b", "weights": "random"}]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["verify", "r", "--mean", "0.5,0.5,0.5"])
    assert "--mean belongs to a --model" in capsys.readouterr().err


def test_verify_reads_the_stored_outputs_within_the_workers_own_pixel_limit(source):
    settings = Settings(store=source.uri)
    spec, items, _ = plan_verify(verify_args(source, verify_id="vp"), settings, probe=True)
    store = settings.open_store()
    from ascent.producer.submit import plan_run

    shard = plan_run(spec, items, 2).shards[0]
    strict = WorkerRuntime.build(Settings(store=source.uri, max_pixels=SIZE * SIZE - 1))  # ASCENT_MAX_PIXELS
    record = run_shard(spec, shard, store, strict, "cpu").to_dict()
    assert [i["readable"] for i in record["items"]] == [False, False]
    assert all(i["problem"].startswith("unreadable: ") and "pixels" in i["problem"] for i in record["items"])
