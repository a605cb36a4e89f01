"""The job registry: a job defined outside ascent, in one module, joins every part of the system through
one setting, and the packaging keeps ascent's code under the ``ascent`` namespace."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "worker", "producer")

# A toy job, written as a user of ascent would write one: its parameters, its batch, its numbers and its
# report section, in one module. It needs no torch: the worker hands it uint8 images.
BLUR_JOB = """
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageFilter

from ascent.shared import html
from ascent.shared.jobs.base import Job, Outcome
from ascent.shared.params import POSITIVE_NUMBER, JobParams, param
from ascent.shared.stats import mean_or_none


@dataclass(frozen=True)
class BlurParams(JobParams):
    job: ClassVar[str] = "blur"
    radius: float = param(1.5, POSITIVE_NUMBER, "Gaussian blur radius in pixels")


class Blur(Job):
    name = "blur"
    help = "a Gaussian blur per image"
    Params = BlurParams

    def run(self, ctx, batch):
        radius = ctx.spec.params.radius
        outcomes = []
        for x in batch:
            blurred = np.asarray(Image.fromarray(x.image).filter(ImageFilter.GaussianBlur(radius)))
            change = float(np.abs(blurred.astype(int) - x.image.astype(int)).mean())
            outcomes.append(Outcome(x.item, {"change": change}, blurred, x.image))
        return outcomes

    def summarize(self, spec, rows, classes):
        return {"mean_change": mean_or_none([r.get("change") for r in rows if r["status"] == "done"])}

    def summary_lines(self, summary):
        return [f"mean change per pixel {summary['mean_change']:.2f}"]

    def report_sections(self, summary, classes):
        return [f"<h2>Blur</h2><p>mean change per pixel {html.num(summary['mean_change'])}</p>"]


JOB = Blur()
"""


def write_images(folder: Path, n: int, size: int = 24) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_job_defined_outside_ascent_runs_end_to_end_with_its_option_and_report_section(tmp_path, monkeypatch):
    (tmp_path / "my_jobs").mkdir()
    (tmp_path / "my_jobs" / "blur_job.py").write_text(textwrap.dedent(BLUR_JOB))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "my_jobs"))  # where the user's module lives
    monkeypatch.setenv("ASCENT_JOBS", "blur_job:JOB")  # the one line that registers it
    write_images(tmp_path / "images", 3)
    store = tmp_path / "store"

    def ascent(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ascent.producer", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )

    help_text = ascent("run", "blur", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "--radius RADIUS" in help_text.stdout and "Gaussian blur radius in pixels (default 1.5)" in help_text.stdout
    args = ["run", "blur", "--images", "images", "--radius", "2", "--store", store.as_uri(), "--run-id", "b1"]
    args += ["--model", "tiny", "--shard-size", "2"]
    done = ascent(*args)
    assert done.returncode == 0, done.stderr
    assert "3 items, 3 done, 0 failed" in done.stdout and "mean change per pixel" in done.stdout

    run = store / "runs" / "b1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "blur" and summary["params"] == {"radius": 2.0} and summary["mean_change"] > 0
    records = [json.loads(p.read_text()) for p in sorted((run / "records").glob("*.json"))]
    assert len(records) == 2 and all(r["worker"].startswith("ascent-local-") for r in records)  # real workers
    original = np.asarray(Image.open(run / "inputs" / "000000.png"))
    blurred = np.asarray(Image.open(run / "outputs" / "000000.png"))
    from PIL import ImageFilter

    expected = np.asarray(Image.fromarray(original).filter(ImageFilter.GaussianBlur(2)))
    assert np.array_equal(blurred, expected)
    page = (run / "report.html").read_text()
    assert "<h2>Blur</h2>" in page and "ascent run b1 — blur" in page and page.count('class="tile"') == 3


def test_an_extra_job_that_cannot_be_imported_is_an_error_naming_the_setting(tmp_path, monkeypatch):
    from ascent.producer.cli import main

    monkeypatch.setenv("ASCENT_JOBS", "no_such_module:JOB")
    assert main(["run", "fool", "--help"]) == 2


def test_a_parameter_is_validated_by_the_spec_with_the_field_named():
    from ascent.shared.errors import InvalidSpec
    from ascent.shared.jobs import JOBS

    params = JOBS["fool"].Params.from_dict({"target": 6, "lr": 2})
    assert params.lr == 2 and params.max_iters == 100 and params.to_dict()["target"] == 6
    assert JOBS["fool"].Params.from_dict(params.to_dict()) == params  # JSON round trip
    with pytest.raises(InvalidSpec) as err:
        JOBS["fool"].Params.from_dict({"lr": -1})
    assert err.value.field == "params.lr" and "positive number" in str(err.value)
    with pytest.raises(InvalidSpec) as err:
        JOBS["style"].Params.from_dict({"style": ["file:///s.png"], "style_layers": [1, 2]})
    assert err.value.field == "params.style_weights"


# ----------------------------------------------------------------------------- packaging and layout


def test_every_package_folder_is_installed_under_the_ascent_namespace():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        "ascent." + ".".join(p.parent.relative_to(REPO).parts)
        for top in PACKAGES
        for p in (REPO / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == folders
    assert config["package-dir"] == {f"ascent.{top}": top for top in PACKAGES}


def test_outside_the_repo_the_kernels_import_as_ascent_and_plain_shared_does_not(tmp_path):
    code = (
        "import importlib.util, ascent.shared.kernels as k; "
        "assert callable(k.fool) and callable(k.style_transfer); "
        "assert all(importlib.util.find_spec(m) is None for m in ('shared', 'worker', 'producer'))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120)


def test_no_module_outside_the_job_modules_branches_on_a_job_name():
    names = "|".join(("fool", "saliency", "classviz", "style"))
    branch = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = []
    for top in PACKAGES:
        for path in (REPO / top).rglob("*.py"):
            if path.parent.name == "jobs":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if branch.search(line):
                    found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_no_module_runs_past_four_hundred_lines():
    long = [
        f"{p.relative_to(REPO)}: {n} lines"
        for top in PACKAGES
        for p in (REPO / top).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not long, long
