"""Every store key of a run, built in one place from run, shard and item ids (never from file names).

Layout under ``runs/<run_id>/``:

    spec.json                       the validated JobSpec
    manifest.json                   shards and their items (written before anything is enqueued)
    uploads/<name><ext>             local inputs uploaded by the producer for remote workers
    inputs/<item_id>.png            the preprocessed input the kernel saw (for the report)
    inputs/<name>.png               other inputs of the run (style images: style-<k>)
    outputs/<item_id>.png           results (8-bit exact; .jpg/.webp with fool's --save-format)
    steps/<item_id>/<name>.png      an item's intermediate images (style's --save-every)
    attempts/<shard_id>/<n>.json    one marker per attempt that has not returned (workers that died)
    progress/<shard_id>.json        how far a running shard is (worker, items, estimate), rewritten as it goes
    cancel.json                     the cancel marker (``ascent cancel``): workers stop the run's work
    records/<shard_id>.json         per-shard record of every item, written last (the commit marker)
    summary.json, items.jsonl, report.html   written by the collector (verify.json too for verify)
    stopped.json                    written once when the run's stopping rule is met (--until-ci)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ascent.shared.errors import InvalidInput

_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SAFE_EXT = re.compile(r"^\.[a-z0-9]{1,10}$")
RUNS = "runs"


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key (no '..', no absolute path, plain characters)."""
    parts = key.split("/")
    if not key or any(not _KEY_PART.match(p) or ".." in p for p in parts):
        raise InvalidInput(f"unsafe store key {key!r}")
    return key


def _run_file(name: str) -> Any:
    """A property: the key of ``runs/<run_id>/<name>``."""
    return property(lambda self: self.key(name), doc=f"runs/<run_id>/{name}")


@dataclass(frozen=True)
class RunKeys:
    """The keys of run ``run_id``: ``RunKeys("r1").output("000003")`` -> ``runs/r1/outputs/000003.png``."""

    run_id: str

    def __post_init__(self) -> None:
        if "/" in self.run_id:
            raise InvalidInput(f"unsafe run id {self.run_id!r}")
        validate_key(f"{RUNS}/{self.run_id}")

    def key(self, *parts: str) -> str:
        return validate_key("/".join((RUNS, self.run_id, *parts)))

    spec = _run_file("spec.json")
    manifest = _run_file("manifest.json")
    summary = _run_file("summary.json")
    items = _run_file("items.jsonl")
    report = _run_file("report.html")
    failure = _run_file("failure.json")  # why the whole run cannot go on (a model that does not load)
    cancel = _run_file("cancel.json")  # the run was cancelled: workers record what is left cancelled
    stopped = _run_file("stopped.json")  # why the remaining shards need not run (fool --until-ci)
    verify = _run_file("verify.json")  # a verify run's integrity and transfer table

    @property
    def records(self) -> str:
        """The prefix of the shard records (ends with '/')."""
        return self.key("records") + "/"

    def record(self, shard_id: str) -> str:
        return self.key("records", f"{shard_id}.json")

    def shard_of_record(self, key: str) -> str | None:
        """The shard id of a record key, None for any other key."""
        if not key.startswith(self.records) or not key.endswith(".json"):
            return None
        return key[len(self.records) : -len(".json")]

    def attempts(self, shard_id: str) -> str:
        """The prefix of the attempt markers of a shard (ends with '/')."""
        return self.key("attempts", shard_id) + "/"

    @property
    def progress_markers(self) -> str:
        """The prefix of the shards' progress markers (ends with '/')."""
        return self.key("progress") + "/"

    def progress(self, shard_id: str) -> str:
        return self.key("progress", f"{shard_id}.json")

    def input(self, name: str) -> str:
        """A preprocessed input image: ``name`` is an item id or a run-level name such as ``style-0``."""
        return self.key("inputs", f"{name}.png")

    @property
    def inputs(self) -> str:
        return self.key("inputs") + "/"

    def output(self, item_id: str, ext: str = "png") -> str:
        return self.key("outputs", f"{item_id}.{ext}")

    def item_image(self, item_id: str, name: str) -> str:
        """``steps/<item_id>/<name>.png``: another image of one item (an intermediate result)."""
        return self.key("steps", item_id, f"{name}.png")

    @property
    def uploads(self) -> str:
        return self.key("uploads")

    def upload(self, name: str, filename: str) -> str:
        """``uploads/<name><ext>``: only a plain extension of ``filename`` is kept, never the name."""
        dot = filename.rfind(".")
        ext = filename[dot:].lower() if dot > 0 else ""
        return self.key("uploads", f"{name}{ext if _SAFE_EXT.match(ext) else ''}")


def run_key(run_id: str, *parts: str) -> str:
    """``runs/<run_id>/<parts...>``, validated."""
    return RunKeys(run_id).key(*parts)
