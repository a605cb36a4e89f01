"""The job spec: one JSON type that flows producer -> broker -> worker -> store -> collector.

It carries ids, URIs and parameters, never pixels and never credentials. ``JobSpec.validate`` is
the one validation, called by the producer before anything is enqueued and by the worker when a
message arrives; errors name the field (``InvalidSpec.field``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.catalog import MODEL_NAMES, NUM_CLASSES, PRECISIONS
from shared.errors import InvalidSpec

SPEC_VERSION = 1
JOB_KINDS: tuple[str, ...] = ("fool", "saliency", "classviz", "style")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _non_negative_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v == v and v != float("inf")


def _non_negative_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf")


def _class_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < NUM_CLASSES


def _optional_class_id(v: Any) -> bool:
    return v is None or _class_id(v)


def _class_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_class_id(c) for c in v)


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_non_negative_int(c) for c in v)


def _number_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_non_negative_number(c) for c in v)


def _uri_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(u, str) and u for u in v)


def _one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


@dataclass(frozen=True)
class Param:
    default: Any
    check: Callable[[Any], bool]
    meaning: str


# The literal registry of job kinds and their parameters (defaults are REFERENCE.md's).
PRECISION_PARAM = Param("fp32", _one_of(*PRECISIONS), "'fp32' (reference) or 'bf16' (autocast)")

JOB_PARAMS: dict[str, dict[str, Param]] = {
    "fool": {
        "target": Param(None, _optional_class_id, "target class id 0..999, or null for untargeted"),
        "lr": Param(1.0, _positive_number, "a positive step size"),
        "max_iters": Param(100, _positive_int, "a positive integer"),
        "extra_iters": Param(2, _non_negative_int, "a non-negative integer"),
        "loss": Param("score", _one_of("score", "log_softmax"), "'score' (reference) or 'log_softmax'"),
        "precision": PRECISION_PARAM,
    },
    "saliency": {
        "loss": Param("cross_entropy", _one_of("cross_entropy", "score"), "'cross_entropy' or 'score'"),
    },
    "classviz": {
        "classes": Param(None, _class_list, "a non-empty list of class ids 0..999"),
        "iters": Param(100, _positive_int, "a positive integer"),
        "lr": Param(25.0, _positive_number, "a positive step size"),
        "l2_reg": Param(1e-3, _non_negative_number, "a non-negative number"),
        "jitter": Param(16, _non_negative_int, "a non-negative integer (pixels)"),
        "blur_every": Param(10, _non_negative_int, "a non-negative integer (0 = never)"),
        "blur_sigma": Param(0.5, _non_negative_number, "a non-negative number"),
        "seed": Param(0, _non_negative_int, "a non-negative integer"),
        "precision": PRECISION_PARAM,
    },
    "style": {
        "style": Param(None, _uri_list, "a non-empty list of style image URIs"),
        "style_blend": Param(None, lambda v: v is None or _number_list(v), "weights, one per style image"),
        "style_size": Param(512, _positive_int, "a positive integer (pixels)"),
        "content_layer": Param(3, _non_negative_int, "a feature-layer index"),
        "content_weight": Param(5e-2, _non_negative_number, "a non-negative number"),
        "style_layers": Param([1, 4, 6, 7], _int_list, "a list of feature-layer indices"),
        "style_weights": Param([20000, 500, 12, 1], _number_list, "non-negative weights, one per layer"),
        "tv_weight": Param(5e-2, _non_negative_number, "a non-negative number"),
        "iters": Param(200, _positive_int, "a positive integer"),
        "lr": Param(3.0, _positive_number, "a positive step size"),
        "decayed_lr": Param(0.1, _positive_number, "a positive step size"),
        "decay_at": Param(180, _non_negative_int, "an iteration index"),
        "init": Param("content", _one_of("content", "noise"), "'content' or 'noise'"),
        "seed": Param(0, _non_negative_int, "a non-negative integer"),
        "precision": PRECISION_PARAM,
    },
}

# Named style presets (REFERENCE.md §1): size, style size and loss settings.
STYLE_PRESETS: dict[str, dict[str, Any]] = {
    "composition_vii": {
        "size": 192,
        "style_size": 512,
        "content_layer": 3,
        "content_weight": 5e-2,
        "style_layers": [1, 4, 6, 7],
        "style_weights": [20000, 500, 12, 1],
        "tv_weight": 5e-2,
    },
    "scream": {
        "size": 192,
        "style_size": 224,
        "content_layer": 3,
        "content_weight": 3e-2,
        "style_layers": [1, 4, 6, 7],
        "style_weights": [200000, 800, 12, 1],
        "tv_weight": 2e-2,
    },
    "starry_night": {
        "size": 192,
        "style_size": 192,
        "content_layer": 3,
        "content_weight": 6e-2,
        "style_layers": [1, 4, 6, 7],
        "style_weights": [300000, 1000, 15, 3],
        "tv_weight": 2e-2,
    },
}


@dataclass(frozen=True)
class Item:
    """One input of a run. ``source`` is a URI (file:///abs.png, file:///x.npz#3, s3://b/k, class:76)."""

    item_id: str
    source: str
    label: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Item:
        if not isinstance(d, Mapping):
            raise InvalidSpec("shard.items", "each item must be an object")
        item_id, source, label = d.get("item_id"), d.get("source"), d.get("label")
        if not isinstance(item_id, str) or not _ID_RE.match(item_id):
            raise InvalidSpec("shard.items.item_id", f"invalid item id {item_id!r}")
        if not isinstance(source, str) or not source:
            raise InvalidSpec("shard.items.source", f"item {item_id}: source must be a non-empty URI")
        if label is not None and not _class_id(label):
            raise InvalidSpec("shard.items.label", f"item {item_id}: label {label!r} is not a class id")
        return cls(item_id=item_id, source=source, label=label)


@dataclass(frozen=True)
class Shard:
    shard_id: str
    items: tuple[Item, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"shard_id": self.shard_id, "items": [asdict(i) for i in self.items]}

    @classmethod
    def from_dict(cls, d: Any) -> Shard:
        if not isinstance(d, Mapping):
            raise InvalidSpec("shard", "must be an object")
        shard_id = d.get("shard_id")
        if not isinstance(shard_id, str) or not _ID_RE.match(shard_id):
            raise InvalidSpec("shard.shard_id", f"invalid shard id {shard_id!r}")
        items = d.get("items")
        if not isinstance(items, list) or not items:
            raise InvalidSpec("shard.items", "must be a non-empty list")
        return cls(shard_id=shard_id, items=tuple(Item.from_dict(i) for i in items))


@dataclass(frozen=True)
class JobSpec:
    """What to run. ``params`` holds the kind's parameters (see ``JOB_PARAMS``), filled with defaults
    by ``validate``. ``size`` is the side images are resized and centre-cropped to (fool, saliency,
    classviz) or the content's smaller side (style)."""

    kind: str
    run_id: str
    store: str
    model: str = "squeezenet1_1"
    weights: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    size: int = 224
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = list(self.inputs)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> JobSpec:
        """Parse and validate; raises InvalidSpec naming the field."""
        if not isinstance(d, Mapping):
            raise InvalidSpec("spec", "must be a JSON object")
        version = d.get("version")
        if version != SPEC_VERSION:
            raise InvalidSpec(
                "version", f"unsupported spec version {version!r} (this ascent reads {SPEC_VERSION})"
            )
        known = {"kind", "run_id", "store", "model", "weights", "params", "inputs", "size", "version"}
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
        spec = cls(
            kind=d["kind"],
            run_id=d["run_id"],
            store=d["store"],
            model=d.get("model", "squeezenet1_1"),
            weights=d.get("weights"),
            params=dict(params),
            inputs=tuple(inputs),
            size=d.get("size", 224),
            version=version,
        )
        return spec.validate()

    def validate(self) -> JobSpec:
        """Check every field; return a copy with the kind's default parameters filled in."""
        if self.kind not in JOB_KINDS:
            raise InvalidSpec("kind", f"unknown job kind {self.kind!r}; known: {', '.join(JOB_KINDS)}")
        if not _ID_RE.match(self.run_id):
            raise InvalidSpec(
                "run_id", f"{self.run_id!r} must be 1-128 of A-Z a-z 0-9 . _ - and not start with . _ -"
            )
        if not self.store or "://" not in self.store:
            raise InvalidSpec(
                "store", f"{self.store!r} is not a store URI (file://... or s3://bucket/prefix)"
            )
        if self.model not in MODEL_NAMES:
            raise InvalidSpec("model", f"unknown model {self.model!r}; available: {', '.join(MODEL_NAMES)}")
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            raise InvalidSpec("weights", "must be null, 'DEFAULT' or a checkpoint path")
        if not _positive_int(self.size) or not 16 <= self.size <= 4096:
            raise InvalidSpec("size", f"{self.size!r} must be an integer 16..4096")
        schema = JOB_PARAMS[self.kind]
        for name in self.params:
            if name not in schema:
                raise InvalidSpec(
                    f"params.{name}", f"unknown parameter for {self.kind}; known: {', '.join(schema)}"
                )
        filled: dict[str, Any] = {}
        for name, p in schema.items():
            value = self.params.get(name, p.default)
            if value is None and p.default is None and not p.check(None):
                raise InvalidSpec(f"params.{name}", f"required: {p.meaning}")
            if not p.check(value):
                raise InvalidSpec(f"params.{name}", f"{value!r} is invalid: expected {p.meaning}")
            filled[name] = value
        if self.kind == "style":
            if len(filled["style_layers"]) != len(filled["style_weights"]):
                raise InvalidSpec("params.style_weights", "needs one weight per style layer")
            blend = filled["style_blend"]
            if blend is not None and len(blend) != len(filled["style"]):
                raise InvalidSpec("params.style_blend", "needs one weight per style image")
        if self.kind != "classviz" and not self.inputs:
            raise InvalidSpec("inputs", "no input images given")
        return JobSpec(
            kind=self.kind,
            run_id=self.run_id,
            store=self.store,
            model=self.model,
            weights=self.weights,
            params=filled,
            inputs=self.inputs,
            size=self.size,
            version=self.version,
        )


def task_message(spec: JobSpec, shard: Shard) -> dict[str, Any]:
    """The JSON body of one shard task."""
    return {"version": SPEC_VERSION, "spec": spec.to_dict(), "shard": shard.to_dict()}


def parse_task_message(message: Any) -> tuple[JobSpec, Shard]:
    """Inverse of ``task_message``; raises InvalidSpec on a malformed or unknown-version message."""
    if not isinstance(message, Mapping):
        raise InvalidSpec("message", "a task message must be a JSON object")
    if message.get("version") != SPEC_VERSION:
        raise InvalidSpec("message.version", f"unsupported message version {message.get('version')!r}")
    return JobSpec.from_dict(message.get("spec")), Shard.from_dict(message.get("shard"))
