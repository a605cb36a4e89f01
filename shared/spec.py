"""The job spec and the run's plan: typed, JSON round-tripping types that flow producer -> broker ->
worker -> store -> collector.

They carry ids, URIs and parameters, never pixels and never credentials. ``JobSpec.validate`` is
the one validation, called by the producer before anything is enqueued and by the worker when a
message arrives; errors name the field (``InvalidSpec.field``). What a job's ``params`` are is the
job's own (``ascent.shared.jobs``); the spec holds them as that job's ``JobParams``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.limits import Limits
from ascent.shared.params import JobParams

if TYPE_CHECKING:
    from ascent.shared.jobs.base import Job

SPEC_VERSION = 1
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
MIN_SIZE, MAX_SIZE = 16, 4096
ITEM_ID_WIDTH = 6


def item_id(index: int) -> str:
    """The id of the ``index``-th item: zero-padded to six digits (``000017``), wider past a million."""
    return f"{index:0{ITEM_ID_WIDTH}d}"


def shard_id(index: int) -> str:
    """``shard-00000``, ``shard-00001``, ..."""
    return f"shard-{index:05d}"


def _is_class_id(v: Any) -> bool:
    """A class id of some model (the model's own count is checked where the model is known)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: A variant's values: JSON scalars (finite numbers, strings, booleans, null).
Scalar = str | int | float | bool | None
VARIANT_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))


def check_variant(variant: Any, item_id: Any) -> dict[str, Scalar]:
    """A copy of ``variant`` (a mapping of short lower-case names to JSON scalars); InvalidSpec naming
    ``shard.items.variant`` otherwise."""
    if not isinstance(variant, Mapping):
        raise InvalidSpec("shard.items.variant", f"item {item_id}: variant must be an object")
    for key, value in variant.items():
        if not isinstance(key, str) or not VARIANT_KEY.match(key):
            raise InvalidSpec("shard.items.variant", f"item {item_id}: invalid variant name {key!r}")
        if not _is_scalar(value):
            raise InvalidSpec("shard.items.variant", f"item {item_id}: variant {key} = {value!r} is not a JSON scalar")
    return dict(variant)


@dataclass(frozen=True)
class Item:
    """One input of a run. ``source`` is a URI (file:///abs.png, file:///x.npz#3, s3://b/k, class:76);
    ``label``: its true class when known; ``target``: its own target class (a manifest's ``target``
    column); ``original``: the input as the user named it, when ``source`` is an uploaded copy;
    ``path``: where it was found relative to the input the user named (an exported dataset keeps it);
    ``variant``: what this item changes in the job's parameters, planned by the job
    (``Job.plan_items``: fool's ε of an ε sweep, ``{"eps": 0.0157}``), JSON scalars only."""

    item_id: str
    source: str
    label: int | None = None
    original: str | None = None
    target: int | None = None
    path: str | None = None
    variant: Mapping[str, Scalar] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"item_id": self.item_id, "source": self.source, "label": self.label}
        for name in ("original", "target", "path"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.variant:
            d["variant"] = dict(self.variant)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Item:
        if not isinstance(d, Mapping):
            raise InvalidSpec("shard.items", "each item must be an object")
        item_id, source, label = d.get("item_id"), d.get("source"), d.get("label")
        if not isinstance(item_id, str) or not ID_PATTERN.match(item_id):
            raise InvalidSpec("shard.items.item_id", f"invalid item id {item_id!r}")
        if not isinstance(source, str) or not source:
            raise InvalidSpec("shard.items.source", f"item {item_id}: source must be a non-empty URI")
        if label is not None and not _is_class_id(label):
            raise InvalidSpec("shard.items.label", f"item {item_id}: label {label!r} is not a class id")
        target = d.get("target")
        if target is not None and not _is_class_id(target):
            raise InvalidSpec("shard.items.target", f"item {item_id}: target {target!r} is not a class id")
        original, path = d.get("original"), d.get("path")
        text = [v if isinstance(v, str) else None for v in (original, path)]
        variant = check_variant(d.get("variant", {}), item_id)
        return cls(item_id, source, label, text[0], target, text[1], variant)


@dataclass(frozen=True)
class Shard:
    """Items run as one task and one batch."""

    shard_id: str
    items: tuple[Item, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"shard_id": self.shard_id, "items": [i.to_dict() for i in self.items]}

    @classmethod
    def from_dict(cls, d: Any) -> Shard:
        if not isinstance(d, Mapping):
            raise InvalidSpec("shard", "must be an object")
        shard_id = d.get("shard_id")
        if not isinstance(shard_id, str) or not ID_PATTERN.match(shard_id):
            raise InvalidSpec("shard.shard_id", f"invalid shard id {shard_id!r}")
        items = d.get("items")
        if not isinstance(items, list) or not items:
            raise InvalidSpec("shard.items", "must be a non-empty list")
        return cls(shard_id=shard_id, items=tuple(Item.from_dict(i) for i in items))


@dataclass(frozen=True)
class Manifest:
    """The plan of a run: its shards in order (written before anything is enqueued), and when it was
    planned (``created_at``, Unix time; None in runs recorded before it was kept)."""

    run_id: str
    shards: tuple[Shard, ...]
    created_at: float | None = None

    @property
    def items(self) -> list[Item]:
        return [item for shard in self.shards for item in shard.items]

    @property
    def n_items(self) -> int:
        return sum(len(s.items) for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        created = {} if self.created_at is None else {"created_at": self.created_at}
        return {"run_id": self.run_id, "n_items": self.n_items, **created, "shards": [s.to_dict() for s in self.shards]}

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        if not isinstance(d, Mapping) or not isinstance(d.get("shards"), list):
            raise InvalidSpec("manifest", "must be an object with a list of shards")
        created = d.get("created_at")
        created_at = float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else None
        return cls(str(d.get("run_id")), tuple(Shard.from_dict(s) for s in d["shards"]), created_at)


@dataclass(frozen=True)
class JobSpec:
    """What to run. ``params`` holds the kind's parameters (a mapping, or the job's ``JobParams``);
    ``validate`` returns a copy with them as the job's ``JobParams``, defaults filled in. ``size`` is
    the side images are resized and centre-cropped to (or the content's smaller side for style);
    None = the job's default."""

    kind: str
    run_id: str
    store: str
    model: str = "squeezenet1_1"
    weights: str | None = None
    params: Any = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: str | None = None
    num_classes: int | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        params = self.params.to_dict() if isinstance(self.params, JobParams) else dict(self.params)
        return {
            "kind": self.kind,
            "run_id": self.run_id,
            "store": self.store,
            "model": self.model,
            "weights": self.weights,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "class_names": self.class_names,
            "num_classes": self.num_classes,
            "files": dict(self.files),
            "params": params,
            "inputs": list(self.inputs),
            "size": self.size,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: Any, jobs: Mapping[str, Job] | None = None, limits: Limits | None = None) -> JobSpec:
        """Parse and validate against ``jobs`` (default: ``registry()``); raises InvalidSpec naming the field."""
        if not isinstance(d, Mapping):
            raise InvalidSpec("spec", "must be a JSON object")
        version = d.get("version")
        if version != SPEC_VERSION:
            raise InvalidSpec("version", f"unsupported spec version {version!r} (this ascent reads {SPEC_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidSpec(unknown[0], "unknown field")
        for name in ("kind", "run_id", "store"):
            if not isinstance(d.get(name), str):
                raise InvalidSpec(name, "missing or not a string")
        inputs = d.get("inputs", [])
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(u, str) for u in inputs):
            raise InvalidSpec("inputs", "must be a list of URIs")
        params = d.get("params", {})
        if not isinstance(params, Mapping):
            raise InvalidSpec("params", "must be an object")
        normalisation = {k: tuple(d[k]) if isinstance(d.get(k), list) else d.get(k) for k in ("mean", "std")}
        files = d.get("files", {})
        spec = cls(
            kind=d["kind"],
            run_id=d["run_id"],
            store=d["store"],
            model=d.get("model", "squeezenet1_1"),
            weights=d.get("weights"),
            params=dict(params),
            inputs=tuple(inputs),
            size=d.get("size"),
            class_names=d.get("class_names"),
            num_classes=d.get("num_classes"),
            files=dict(files) if isinstance(files, Mapping) else files,
            version=version,
            **normalisation,
        )
        return spec.validate(jobs, limits)

    def validate(self, jobs: Mapping[str, Job] | None = None, limits: Limits | None = None) -> JobSpec:
        """Check every field; return a copy with the job's parameters typed and defaults filled in.
        ``jobs``: the registry that knows ``kind`` (default: ``ascent.shared.jobs.registry()``);
        ``limits``: the bounds on size, iterations and classes (producer and workers pass theirs;
        None checks none, for reading a run that was validated when it was made)."""
        from ascent.shared.jobs import get_job

        job = get_job(self.kind, jobs)
        if not isinstance(self.run_id, str) or not ID_PATTERN.match(self.run_id):
            raise InvalidSpec("run_id", f"{self.run_id!r} must be 1-128 of A-Z a-z 0-9 . _ - and not start with . _ -")
        if not self.store or "://" not in self.store:
            raise InvalidSpec("store", f"{self.store!r} is not a store URI (file://... or s3://bucket/prefix)")
        self._check_model()
        size = job.default_size if self.size is None else self.size
        if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
            raise InvalidSpec("size", f"{size!r} must be an integer {MIN_SIZE}..{MAX_SIZE}")
        params = job.Params.from_dict(self.params)
        if limits is not None:
            try:
                limits.check("max_side", size, "size")
            except InvalidInput as exc:
                raise InvalidSpec("size", str(exc).split(": ", 1)[1]) from None
            params.check_limits(limits)
        for name, class_id in params.class_ids():
            if self.num_classes is not None and class_id >= self.num_classes:
                raise InvalidSpec(f"params.{name}", f"class id {class_id} is out of range 0..{self.num_classes - 1}")
        if job.inputs is not None and not self.inputs:
            raise InvalidSpec("inputs", "no input images given")
        return dataclasses.replace(self, params=params, size=size)

    def _check_model(self) -> None:
        """The model fields: a name or reference, weights, normalisation, class names, file hashes."""
        if not isinstance(self.model, str) or not self.model or len(self.model) > 2048 or "\n" in self.model:
            raise InvalidSpec("model", f"{self.model!r} must name a model (see ascent run JOB --help)")
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            raise InvalidSpec("weights", "must be null, 'DEFAULT', 'random' or a checkpoint path")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is None:
                continue
            if not isinstance(values, tuple) or len(values) != 3 or not all(_is_number(v) for v in values):
                raise InvalidSpec(name, f"{values!r} must be three numbers R,G,B")
            if name == "std" and min(values) <= 0:
                raise InvalidSpec(name, f"{values!r} must be positive")
        if self.class_names is not None and (not isinstance(self.class_names, str) or not self.class_names):
            raise InvalidSpec("class_names", "must be null or the URI of a text file, one name per line")
        if self.num_classes is not None and (not _is_class_id(self.num_classes) or self.num_classes < 1):
            raise InvalidSpec("num_classes", f"{self.num_classes!r} must be a positive integer")
        if not isinstance(self.files, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and SHA256.match(v) for k, v in self.files.items()
        ):
            raise InvalidSpec("files", "must map file URIs to their sha256 (64 hex digits)")
