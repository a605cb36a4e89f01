"""The HTML report: self-contained, escaped, and showing what a user looks for first."""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from ascent.producer.collector import collect
from ascent.producer.report import render_report
from ascent.shared.html import histogram_svg, thumbnail
from ascent.shared.jobs.fool_report import perturbation_png
from ascent.shared.keys import run_key
from ascent.shared.spec import Item, JobSpec, Manifest
from ascent.shared.store import MemoryStore, Store
from tests.records_util import item_done, item_failed
from tests.test_collector import RUN, build_fool_run, png, write_manifest, write_record, write_spec

HOSTILE_SOURCE = 'file:///in/"><script>alert(1)</script>.png'
VOID_TAGS = {"meta", "img", "br", "hr", "input", "link", "line", "rect", "path", "circle"}


class TagBalance(HTMLParser):
    """Records tags left open or closed out of order (void and self-closed tags excepted)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def assert_well_formed(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    checker = TagBalance()
    checker.feed(page)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []


def data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


@pytest.fixture
def store() -> Store:
    return MemoryStore(f"test-{uuid.uuid4().hex}")


@pytest.fixture
def fool_page(store: Store) -> str:
    build_fool_run(store, hostile_source=HOSTILE_SOURCE)
    collect(store, RUN)
    return store.get(run_key(RUN, "report.html")).decode("utf-8")


def test_fool_report_is_well_formed_html_with_the_run_and_its_fooling_rate(fool_page: str) -> None:
    assert_well_formed(fool_page)
    assert f"ascent run {RUN} — fool" in fool_page
    assert "90.9%" in fool_page
    assert "fooled 10 of 11" in fool_page
    assert "3.5 / 6 / 9" in fool_page  # iterations median / p90 / max


def test_fool_report_has_an_svg_histogram_with_one_bar_per_bin(fool_page: str) -> None:
    svg = re.search(r"<svg .*?</svg>", fool_page, re.S)
    assert svg is not None
    assert svg.group(0).count("<rect") == 10


def test_fool_report_names_classes_in_tables_and_captions(fool_page: str) -> None:
    for name in ("goldfish", "stingray", "great white shark"):
        assert name in fool_page
    assert "pred 1 goldfish → 6 stingray" in fool_page
    assert "fooled ✓" in fool_page and "not fooled ✗" in fool_page


def test_fool_report_embeds_small_png_thumbnails_and_perturbations(fool_page: str) -> None:
    images = [Image.open(io.BytesIO(b)) for b in data_uris(fool_page)]
    assert len(images) == 11 * 3  # original | adversarial | perturbation for every done item
    assert all(im.format == "PNG" and max(im.size) <= 128 for im in images)
    assert "|Δ| ×85 (max 3/255)" in fool_page


def test_fool_report_escapes_hostile_sources_and_errors(fool_page: str) -> None:
    assert "<script" not in fool_page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fool_page
    assert fool_page.count("&quot;&gt;&lt;script&gt;") >= 2  # failures table and the a10 tile
    assert "a11: cannot identify image file (not an image?)" in fool_page


def test_report_loads_nothing_from_elsewhere(fool_page: str) -> None:
    assert re.search(r"https?://", fool_page) is None
    assert "@import" not in fool_page and "<link" not in fool_page


def test_record_strings_cannot_become_markup_or_script_links(store: Store) -> None:
    build_fool_run(store)
    spec = JobSpec.from_dict(store.get_json(run_key(RUN, "spec.json")))
    manifest = Manifest.from_dict(store.get_json(run_key(RUN, "manifest.json")))
    summary = collect(store, RUN)
    rows = [json.loads(line) for line in store.get(run_key(RUN, "items.jsonl")).splitlines()]
    rows[0].update(output="javascript:alert(1)", item_id="a00", label="<b>7</b>")
    summary["failures"][0]["error"] = "<img src=x onerror=alert(1)>"
    page = render_report(spec, manifest, summary, rows, store)
    assert 'href="javascript' not in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;7&lt;/b&gt;" in page
    assert_well_formed(page)


def test_missing_images_show_placeholders_and_a_capped_grid_says_so(store: Store) -> None:
    build_fool_run(store)
    store.delete(run_key(RUN, "inputs", "a00.png"))
    spec = JobSpec.from_dict(store.get_json(run_key(RUN, "spec.json")))
    manifest = Manifest.from_dict(store.get_json(run_key(RUN, "manifest.json")))
    summary = collect(store, RUN)
    rows = [json.loads(line) for line in store.get(run_key(RUN, "items.jsonl")).splitlines()]
    page = render_report(spec, manifest, summary, rows, store, max_grid=2)
    assert "Showing the first 2 of 11 finished images" in page
    assert page.count('class="tile"') == 2
    assert '<div class="ph">no image</div>original' in page
    assert '<div class="ph">needs both images</div>perturbation' in page


def test_perturbation_is_magnified_so_its_maximum_is_255() -> None:
    original = np.full((4, 4, 3), 100, np.uint8)
    adversarial = original.copy()
    adversarial[0, 0, 0], adversarial[1, 1, 2] = 102, 99

    def encode(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return buf.getvalue()

    result = perturbation_png(encode(original), encode(adversarial))
    assert result is not None
    data, peak = result
    diff = np.asarray(Image.open(io.BytesIO(data)))
    assert peak == 2
    assert diff[0, 0, 0] == 255 and diff[1, 1, 2] == 128 and diff.sum() == 255 + 128
    assert perturbation_png(encode(original), encode(np.zeros((5, 4, 3), np.uint8))) is None


def test_thumbnails_keep_grayscale_and_reject_non_images() -> None:
    uri, w, h = thumbnail(png(30, size=300, mode="L"))
    assert (w, h) == (128, 128)
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).mode == "L"
    assert thumbnail(b"not a png") is None


def test_histogram_without_fooled_images_says_so() -> None:
    assert "<svg" not in histogram_svg([], [])


def test_saliency_report_shows_original_and_map(store: Store) -> None:
    items = [Item("i0", "file:///0.png", 1)]
    write_spec(store, "sal", "saliency", {}, ("file:///d",))
    write_manifest(store, "sal", {"s0": items})
    write_record(store, "sal", "saliency", "s0", "s0", [item_done(items[0], None, pred=1, score=7.5)], 1.0)
    store.put(run_key("sal", "inputs", "i0.png"), png(90, size=224))
    store.put(run_key("sal", "outputs", "i0.png"), png(200, size=224, mode="L"))
    collect(store, "sal")
    page = store.get(run_key("sal", "report.html")).decode()
    assert_well_formed(page)
    assert "original</figure>" in page and "saliency</figure>" in page
    assert "pred 1 goldfish · score 7.5" in page
    assert len(data_uris(page)) == 2


def test_classviz_report_shows_each_image_with_class_name_and_score(store: Store) -> None:
    items = [Item("k0", "class:76"), Item("k1", "class:78")]
    write_spec(store, "cv", "classviz", {"classes": [76, 78]}, ())
    write_manifest(store, "cv", {"s0": items})
    records = [
        item_done(items[0], None, class_id=76, score=31.25, pred=76),
        item_failed(items[1], "k1: NaN loss"),
    ]
    write_record(store, "cv", "classviz", "s0", "s0", records, 1.0)
    store.put(run_key("cv", "outputs", "k0.png"), png(10, size=224))
    collect(store, "cv")
    page = store.get(run_key("cv", "report.html")).decode()
    assert_well_formed(page)
    assert "<b>76 tarantula</b>" in page and "score 31.2" in page and "top-1 ✓" in page
    assert "k1: NaN loss" in page
    assert "50.0%" not in page and "100.0%" in page  # hit rate over the images that did not fail


def test_style_report_shows_content_style_result_and_losses(store: Store) -> None:
    items = [Item("c0", "file:///c0.png"), Item("c1", "file:///c1.png")]
    write_spec(store, "st", "style", {"style": ["file:///starry.png"]}, ("file:///c",))
    write_manifest(store, "st", {"s0": items})
    records = [item_done(it, None, content_loss=1.0, style_loss=2.0, tv_loss=0.25, loss=3.25) for it in items]
    write_record(store, "st", "style", "s0", "s0", records, 1.0)
    store.put(run_key("st", "inputs", "style-0.png"), png(250, size=512))
    for it in items:
        store.put(run_key("st", "inputs", f"{it.item_id}.png"), png(60, size=192))
        store.put(run_key("st", "outputs", f"{it.item_id}.png"), png(160, size=192))
    collect(store, "st")
    page = store.get(run_key("st", "report.html")).decode()
    assert_well_formed(page)
    assert page.count("content</figure>") == 2 and page.count("style 0</figure>") == 2
    assert page.count("result</figure>") == 2
    assert "style loss 2 · tv loss 0.25 · loss 3.25" in page
    assert len(data_uris(page)) == 1 + 2 * 2  # the style image once, content and result per item


def test_run_level_inputs_come_in_the_order_of_their_number_not_of_their_key():
    from ascent.producer.report import RunMedia

    store = MemoryStore(f"report-{uuid.uuid4().hex[:8]}")
    for k in (10, 2, 0, 11, 1):
        store.put(run_key(RUN, f"inputs/style-{k}.png"), str(k).encode())
    assert RunMedia(store, RUN).run_inputs("style-") == [b"0", b"1", b"2", b"10", b"11"]
