"""fool's ``--save-format`` (the codec in the success check, outputs stored in that format, hashes in
the records) and ``--target all`` / a class list (a targetability matrix), without Celery: the
producer's plan, the worker's shard handler, the collector, the report and the export."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ascent.producer.cli import build_parser
from ascent.producer.collector import collect, format_summary
from ascent.producer.export import export
from ascent.producer.inputs import enumerate_inputs
from ascent.producer.options import job_params
from ascent.producer.submit import plan_run
from ascent.shared.codecs import decode, encode, parse_save_format, roundtrip
from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.jobs import JOBS
from ascent.shared.jobs.fool import FoolParams
from ascent.shared.keys import run_key
from ascent.shared.models import load_classifier
from ascent.shared.records import DONE
from ascent.shared.settings import Settings
from ascent.shared.spec import JobSpec
from ascent.shared.store import FileStore
from ascent.worker.handler import run_shard
from ascent.worker.runtime import WorkerRuntime
from tests.nets_util import smooth_images
from tests.test_report import assert_well_formed

FOOL = JOBS["fool"]
MODEL = "tests.nets_util:five"
SIZE = 32
ATTACK = {"target": None, "lr": 0.5, "max_iters": 20, "extra_iters": 0}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Twelve smooth 32 px images (JPEG keeps them well) in an .npz, no labels."""
    path = tmp_path_factory.mktemp("inputs") / "x.npz"
    np.savez(path, X=smooth_images(12, SIZE))
    return path


@pytest.fixture(scope="module")
def net() -> Any:
    return load_classifier(MODEL, "random", device="cpu")


def run_fool(
    root: Path, images: Path, run_id: str, params: dict, num_classes: int | None = None, shard_size: int = 16
) -> FileStore:
    """Plan ``params`` over ``images`` as the producer does, run every shard in this process, collect."""
    store = FileStore(root / "store")
    spec = JobSpec(
        kind="fool",
        run_id=run_id,
        store=store.uri,
        model=MODEL,
        weights="random",
        params=params,
        inputs=(images.as_uri(),),
        size=SIZE,
        num_classes=num_classes,
    ).validate()
    manifest = plan_run(spec, FOOL.plan_run_items(spec, enumerate_inputs([images])), shard_size)
    store.put_json(run_key(run_id, "spec.json"), spec.to_dict())
    store.put_json(run_key(run_id, "manifest.json"), manifest.to_dict())
    runtime = WorkerRuntime.build(Settings(store=store.uri, input_roots=(str(images.parent),)))
    for shard in manifest.shards:
        run_shard(spec, shard, store, runtime, "cpu")
    collect(store, run_id)
    return store


def rows_of(store: FileStore, run_id: str) -> list[dict]:
    import json

    return [json.loads(line) for line in store.get(run_key(run_id, "items.jsonl")).decode().splitlines()]


def predict(net: Any, pixels: np.ndarray) -> int:
    with torch.no_grad():
        return int(net(torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255).argmax(1))


def test_save_formats_parse_and_round_trip_deterministically():
    assert parse_save_format("png").lossless and parse_save_format("JPG:75").text == "jpeg:75"
    assert (parse_save_format("webp:80").ext, parse_save_format("jpeg:75").ext) == ("webp", "jpg")
    for bad in ("jpeg", "jpeg:0", "jpeg:101", "png:9", "gif:50", "webp:x"):
        with pytest.raises(InvalidInput, match="give png, jpeg:Q or webp:Q"):
            parse_save_format(bad)
    image = smooth_images(1, SIZE)[0]
    for text in ("jpeg:75", "webp:50"):
        fmt = parse_save_format(text)
        assert encode(image, fmt) == encode(image, fmt)  # what is checked is what is stored
        assert np.array_equal(decode(encode(image, fmt)), roundtrip(image, fmt))
    with pytest.raises(InvalidSpec) as err:
        FoolParams.from_dict({"target": 1, "save_format": "jpeg:200"})
    assert err.value.field == "params.save_format"
    args = build_parser().parse_args(["run", "fool", "--images", "x", "--untargeted", "--save-format", "webp:90"])
    assert job_params(FOOL, args, int)[0]["save_format"] == "webp:90"


def test_jpeg_outputs_still_fool_once_decoded_where_re_encoded_pngs_mostly_do_not(tmp_path, images, net):
    jpeg = run_fool(tmp_path / "j", images, "jpeg", {**ATTACK, "save_format": "jpeg:75"})
    png = run_fool(tmp_path / "p", images, "png", ATTACK)
    jpeg_rows, png_rows = rows_of(jpeg, "jpeg"), rows_of(png, "png")
    assert all(r["status"] == DONE for r in jpeg_rows + png_rows)
    survived = 0
    for r in jpeg_rows:
        data = jpeg.get(run_key("jpeg", "outputs", f"{r['item_id']}.jpg"))
        assert Image.open(io.BytesIO(data)).format == "JPEG"
        assert r["output_sha256"] == hashlib.sha256(data).hexdigest()
        pred = predict(net, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        assert pred == r["pred_after"]  # the record's prediction is the decoded file's
        if r["fooled"]:
            assert pred != r["pred_before"]  # untargeted: away from the clean prediction
            survived += 1
    reencoded = 0
    for r in png_rows:
        data = png.get(run_key("png", "outputs", f"{r['item_id']}.png"))
        assert r["output_sha256"] == hashlib.sha256(data).hexdigest()
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, format="JPEG", quality=75)
        as_jpeg = np.asarray(Image.open(buffer).convert("RGB"))
        reencoded += r["fooled"] and predict(net, as_jpeg) != r["pred_before"]
    png_fooled = sum(r["fooled"] for r in png_rows)
    assert survived >= 8 and reencoded < survived, (survived, reencoded, png_fooled)  # docs/save-format.md
    page = jpeg.get(run_key("jpeg", "report.html")).decode()
    assert "no image" not in page.split("<h2>Images")[1]  # the report finds the .jpg outputs
    assert_well_formed(page)
    out = FileStore(tmp_path / "export")
    assert export(jpeg, "jpeg", "imagefolder", out).items == survived
    assert all(p.suffix in (".jpg", ".csv") for p in Path(out.root).rglob("*") if p.is_file())


def test_target_all_attacks_every_image_towards_every_class_with_a_matrix_in_the_report(tmp_path, net):
    path = tmp_path / "three.npz"
    np.savez(path, X=smooth_images(3, SIZE, seed=1))
    params = {"target": "all", "lr": 0.5, "max_iters": 8, "extra_iters": 0}
    store = run_fool(tmp_path, path, "matrix", params, num_classes=5)
    rows = rows_of(store, "matrix")
    assert [r["item_id"] for r in rows] == [f"00000{i}-t{c}" for i in range(3) for c in range(5)]
    assert all(r["status"] == DONE and r["target"] == int(r["item_id"][-1]) for r in rows)
    assert all(isinstance(r["iterations"], int) for r in rows)
    assert sum(r["iterations"] == 0 for r in rows) == 3  # each image is already its own prediction
    import json

    table = json.loads(store.get(run_key("matrix", "summary.json")))["targetability"]
    assert table["classes"] == [0, 1, 2, 3, 4] and len(table["rows"]) == 3
    for r in rows:
        image, target = r["item_id"].split("-t")
        cells = next(t["cells"] for t in table["rows"] if t["image"] == image)
        if r["pred_before"] == int(target):  # its own clean prediction: shown, not counted as a success
            assert cells[int(target)] == "clean"
        else:
            assert cells[int(target)] == (r["iterations"] if r["fooled"] else None)
    for k, per_class in enumerate(table["per_class"]):
        attacked = [r for r in rows if r["target"] == k and r["pred_before"] != k]
        assert per_class["n"] == len(attacked) and per_class["n_fooled"] == sum(r["fooled"] for r in attacked)
    page = store.get(run_key("matrix", "report.html")).decode()
    assert "Targetability: 3 images × 5 classes" in page
    assert "targetability: 3 images × 5 classes" in format_summary(
        json.loads(store.get(run_key("matrix", "summary.json")))
    )
    matrix = page.split('<table class="targetability">')[1].split("</table>")[0]
    assert matrix.count("<tr>") == 1 + 3 + 1 and matrix.count('<td class="n ') == 15
    assert_well_formed(page)

    listed = FOOL.plan_items(FoolParams.from_dict({"target": [4, 2]}), enumerate_inputs([path]))
    assert [(i.item_id, i.target) for i in listed][:2] == [("000000-t4", 4), ("000000-t2", 2)]
    args = build_parser().parse_args(["run", "fool", "--images", "x", "--target", "4,2"])
    assert job_params(FOOL, args, int)[0]["target"] == [4, 2]
    spec = JobSpec(kind="fool", run_id="r", store="file:///s", params={"target": "all"}, inputs=("x",)).validate()
    with pytest.raises(InvalidSpec, match="class count is not known"):
        FOOL.plan_run_items(spec, [])


def test_the_kernel_keeps_stepping_while_the_codec_undoes_the_attack(net):
    from ascent.shared.kernels import fool

    x = torch.from_numpy(smooth_images(4, SIZE, seed=4)).permute(0, 3, 1, 2) / 255
    plain = fool(net, x, None, lr=0.5, max_iters=10, extra_iters=0)
    # A lossless codec: the same outcome (its gradients are taken at the 8-bit image, straight through,
    # so the pixels may differ by a level here and there).
    same = fool(net, x, None, lr=0.5, max_iters=10, extra_iters=0, codec=lambda q: q)
    assert torch.equal(plain.fooled, same.fooled) and torch.equal(plain.pred_after, same.pred_after)
    assert (plain.images - same.images).abs().max() <= 3 / 255
    assert plain.fooled.any()
    with torch.no_grad():
        black = int(net(torch.zeros(1, 3, SIZE, SIZE)).argmax())
    other = (black + 1) % 5  # a target no decoded (black) image is classified as
    undo = fool(net, x, other, lr=0.5, max_iters=10, extra_iters=0, codec=torch.zeros_like)  # undoes everything
    assert not undo.fooled.any() and undo.passes == 4 * 11  # every image ran the whole budget
    assert (undo.pred_after == black).all()  # the prediction recorded is that of the decoded image


def test_the_eps_budget_is_checked_on_the_decoded_image(net):
    from ascent.shared.kernels import fool

    x = torch.from_numpy(smooth_images(4, SIZE, seed=6)).permute(0, 3, 1, 2) / 255
    shift = lambda q: (q + 3 / 255).clamp(0, 1)  # noqa: E731 (a codec that moves every pixel 3 levels)
    attack = {"norm": "linf", "max_iters": 6, "loss": "ce", "codec": shift}
    tight = fool(net, x, None, eps=2 / 255, **attack)
    assert not tight.fooled.any()  # each decoded image is outside the 2/255 ball, whatever it predicts
    loose = fool(net, x, None, eps=32 / 255, **attack)
    assert loose.fooled.any() and (loose.linf[loose.fooled] <= 32 / 255 + 1e-6).all()
    assert (loose.linf >= 3 / 255 - 1e-6).all()  # the decoded image's perturbation
