"""The ``ascent`` command line: argument errors, messages, exit codes, status and collect (no torch)."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ascent.producer.cli import build_parser, main
from ascent.producer.options import job_params as params_from_flags
from ascent.shared.catalog import resolve_class
from ascent.shared.errors import InvalidSpec
from ascent.shared.jobs import JOBS
from ascent.shared.keys import run_key
from ascent.shared.spec import Item, JobSpec
from ascent.shared.store import MemoryStore
from tests.records_util import item_done, item_failed, shard_record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for var in ("ASCENT_BROKER_URL", "ASCENT_STORE", "ASCENT_FLOWER_BASIC_AUTH"):
        monkeypatch.delenv(var, raising=False)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "cat.png"
    Image.new("RGB", (8, 8)).save(path)
    return path


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["run"], "the following arguments are required: JOB"),
        (["run", "paint"], "invalid choice: 'paint'"),
        (["run", "fool", "--images", "x"], "one of the arguments --untargeted --target is required"),
        (["run", "fool", "--target", "6"], "the following arguments are required: --images"),
        (
            ["run", "fool", "--images", "x", "--target", "6", "--workers", "0"],
            "--workers: '0' must be a positive",
        ),
        (["run", "fool", "--images", "x", "--target", "6", "--shard-size", "ten"], "'ten' is not an integer"),
        (["run", "fool", "--images", "x", "--target", "6", "--lr", "fast"], "--lr: invalid float value"),
        (["run", "style", "--content", "x"], "the following arguments are required: --style"),
        (["run", "style", "--content", "x", "--style", "y", "--preset", "monet"], "invalid choice: 'monet'"),
        (["run", "classviz"], "the following arguments are required: --classes"),
        (["run", "fool", "--images", "x", "--target", "6", "--precision", "fp16"], "invalid choice: 'fp16'"),
        (
            ["submit", "fool", "--images", "x", "--target", "6", "--workers", "2"],
            "unrecognized arguments: --workers",
        ),
        (["collect"], "the following arguments are required: RUN_ID"),
    ],
)
def test_argument_errors_exit_2_with_the_message(capsys, argv, message):
    assert exit_code(argv) == 2
    assert message in capsys.readouterr().err


def test_help_lists_every_command_and_job(capsys):
    assert exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "submit", "status", "collect", "worker", "flower"):
        assert command in out
    assert exit_code(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(kind in out for kind in ("fool", "saliency", "classviz", "style"))


def test_every_run_job_takes_the_common_options():
    parser = build_parser()
    for job, required in (
        ("fool", ["--images", "x", "--target", "6"]),
        ("saliency", ["--images", "x"]),
        ("classviz", ["--classes", "1"]),
        ("style", ["--content", "x", "--style", "y"]),
    ):
        common = ["--model", "tiny", "--weights", "w.pth", "--store", "file:///s", "--workers", "3"]
        common += ["--shard-size", "4", "--broker", "redis://h:1/0", "--size", "64", "--run-id", "r"]
        args = parser.parse_args(["run", job, *required, *common])
        assert (args.model, args.workers, args.shard_size, args.broker, args.size) == (
            "tiny",
            3,
            4,
            "redis://h:1/0",
            64,
        )


def job_params(args):
    return params_from_flags(JOBS[args.job], args, resolve_class)


def test_precision_flag_reaches_the_spec_of_each_stepping_job(image):
    parser = build_parser()
    for job, required in (
        ("fool", ["--images", "x", "--target", "6"]),
        ("classviz", ["--classes", "1"]),
        ("style", ["--content", "x", "--style", str(image)]),
    ):
        args = parser.parse_args(["run", job, *required, "--precision", "bf16"])
        assert job_params(args)[0]["precision"] == "bf16"
        assert "precision" not in job_params(parser.parse_args(["run", job, *required]))[0]  # spec default
    spec = JobSpec(kind="fool", run_id="r", store="file:///s", params={"target": 6}, inputs=("/i.png",))
    assert spec.validate().params.precision == "fp32"
    with pytest.raises(InvalidSpec) as err:
        JobSpec(**{**spec.to_dict(), "params": {"target": 6, "precision": "fp16"}}).validate()
    assert err.value.field == "params.precision"


def test_a_class_name_is_accepted_for_the_target(image):
    args = build_parser().parse_args(["run", "fool", "--images", str(image), "--target", "stingray"])
    assert job_params(args)[0]["target"] == 6


def test_an_unknown_model_is_one_line_naming_the_flag_before_anything_starts(tmp_path, image, capsys):
    argv = ["run", "fool", "--images", str(image), "--target", "stingray", "--model", "nope"]
    assert main([*argv, "--store", (tmp_path / "s").as_uri()]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("ascent: error: --model nope: not a torchvision classification model") and err.count("\n") == 1
    )
    assert not (tmp_path / "s").exists()


def test_an_ambiguous_class_name_is_refused_naming_the_field(tmp_path, image, capsys):
    argv = ["run", "fool", "--images", str(image), "--target", "great", "--model", "tiny"]
    assert main([*argv, "--store", tmp_path.as_uri()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ascent: error: params.target: class name 'great' is ambiguous")


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["classviz", "--classes", "1,2000"], "params.classes"),
        (["classviz", "--classes", "1", "--iters", "0"], "params.iters"),
        (["saliency", "--images", "MISSING"], "inputs"),
        (["style", "--content", "IMAGE", "--style", "MISSING"], "params.style"),
        (["style", "--content", "IMAGE", "--style", "IMAGE", "--style-blend", "1,2"], "params.style_blend"),
        (
            ["style", "--content", "IMAGE", "--style", "IMAGE", "--style-layers", "1,2"],
            "params.style_weights",
        ),
    ],
)
def test_invalid_specs_of_every_kind_exit_2_naming_the_field(tmp_path, image, capsys, argv, field):
    argv = [a.replace("MISSING", str(tmp_path / "missing.png")).replace("IMAGE", str(image)) for a in argv]
    assert main(["run", *argv, "--model", "tiny", "--store", (tmp_path / "store").as_uri()]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ascent: error: {field}:") and err.count("\n") == 1
    assert not (tmp_path / "store").exists()


def test_submit_without_a_broker_says_how_to_configure_one(image, tmp_path, capsys):
    assert main(["submit", "saliency", "--images", str(image), "--store", tmp_path.as_uri()]) == 2
    assert "no broker configured: set ASCENT_BROKER_URL or pass --broker" in capsys.readouterr().err


def test_a_malformed_broker_url_names_the_variable(image, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASCENT_BROKER_URL", "localhost:6379")
    assert main(["submit", "saliency", "--images", str(image), "--store", tmp_path.as_uri()]) == 2
    assert "ASCENT_BROKER_URL" in capsys.readouterr().err


def recorded_run(store: MemoryStore, run_id: str) -> None:
    """A saliency run of 3 items, 2 of them recorded (one done, one failed), written as a worker would."""
    items = [Item(f"00000{i}", f"file:///img/{i}.png", 1) for i in range(3)]
    spec = JobSpec(kind="saliency", run_id=run_id, store=store.uri, model="tiny", inputs=("file:///img",)).validate()
    store.put_json(run_key(run_id, "spec.json"), spec.to_dict())
    manifest = {
        "run_id": run_id,
        "n_items": 3,
        "shards": [
            {
                "shard_id": "shard-00000",
                "items": [{"item_id": i.item_id, "source": i.source, "label": 1} for i in items[:2]],
            },
            {
                "shard_id": "shard-00001",
                "items": [{"item_id": "000002", "source": items[2].source, "label": 1}],
            },
        ],
    }
    store.put_json(run_key(run_id, "manifest.json"), manifest)
    records = [
        item_done(items[0], None, pred=1, class_id=1, score=2.0),
        item_failed(items[1], "item 000001: broken"),
    ]
    record = shard_record(run_id, "shard-00000", "saliency", records, worker="w1@host")
    store.put_json(run_key(run_id, "records", "shard-00000.json"), record)


def test_status_counts_done_failed_and_pending_items_per_worker(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    recorded_run(store, "s1")
    assert main(["status", "s1", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert "run s1: 3 items, 1 done, 1 failed, 1 pending" in out
    assert "w1@host: 2 items" in out


def test_status_of_an_unknown_run_is_a_one_line_error(capsys):
    assert main(["status", "nope", "--store", MemoryStore(uuid.uuid4().hex).uri]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ascent: error:") and "nope" in err and "Traceback" not in err


def test_collect_writes_the_summary_and_report_of_what_is_recorded(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    recorded_run(store, "c1")
    assert main(["collect", "c1", "--store", store.uri]) == 0
    assert "1 done, 1 failed, 1 pending" in capsys.readouterr().out
    assert store.get_json(run_key("c1", "summary.json"))["n_pending"] == 1
    assert store.exists(run_key("c1", "report.html"))


def test_collect_wait_gives_up_after_the_timeout_with_status_1(capsys):
    store = MemoryStore(uuid.uuid4().hex)
    recorded_run(store, "w1")
    assert main(["collect", "w1", "--store", store.uri, "--wait", "--timeout", "0.2"]) == 1
    captured = capsys.readouterr()
    assert "1 of 3 items still pending after 0.2s" in captured.err
    assert "run w1" in captured.out


def test_python_dash_m_ascent_producer_is_the_ascent_command():
    done = subprocess.run(
        [sys.executable, "-m", "ascent.producer", "run", "fool", "--help"],
        cwd=REPO.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert "usage: ascent run fool" in done.stdout and "--target CLASS" in done.stdout


def test_flower_refuses_a_non_loopback_address_without_authentication(capsys):
    assert main(["flower", "--address", "0.0.0.0", "--broker", "redis://127.0.0.1:1/0"]) == 2
    assert "refusing to serve Flower on 0.0.0.0 without authentication" in capsys.readouterr().err


def test_worker_and_flower_need_a_broker(capsys):
    assert main(["worker"]) == 2
    assert main(["flower"]) == 2
    assert capsys.readouterr().err.count("no broker configured") == 2
