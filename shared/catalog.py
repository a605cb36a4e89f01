"""Torch-free facts the producer needs to validate a spec: model names, precisions, fool's norms and
losses, and class names."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ascent.shared.errors import InvalidInput

# Names accepted by ascent.shared.models.load_classifier. "tiny" is a small seeded network for tests
# and load tests (random weights, 1000 outputs); the others are torchvision's ImageNet classifiers.
MODEL_NAMES: tuple[str, ...] = (
    "squeezenet1_1",
    "resnet18",
    "resnet50",
    "vgg16",
    "vgg19",
    "mobilenet_v3_large",
    "tiny",
)

# Numeric precisions of the network while stepping (ascent.shared.models.autocast): float32 is the reference.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

# fool's threat models and objectives (ascent.shared.kernels.fool): the first of each is the reference.
FOOL_NORMS: tuple[str, ...] = ("l2-unbounded", "linf", "l2")
FOOL_LOSSES: tuple[str, ...] = ("score", "ce", "log_softmax", "margin")
#: ``--target`` modes besides a class id: a target per item, drawn or read from the manifest.
FOOL_TARGET_MODES: tuple[str, ...] = ("random", "least-likely", "per-item")

NUM_CLASSES = 1000
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".jit", ".zip", ".torchscript")


def model_kind(model: str) -> str:
    """What ``--model`` names, from its text alone: "timm" (``timm:NAME``), "file" (a path or file URI:
    TorchScript or ``.pt2``), "factory" (``package.module:factory``) or "torchvision" (a model name)."""
    if model.startswith("timm:"):
        return "timm"
    if model.startswith(("file:", "s3:", "memory:", "/", ".", "~")) or "/" in model or "\\" in model:
        return "file"
    if ":" in model:
        return "factory"
    if model.lower().endswith(MODEL_FILE_SUFFIXES):
        return "file"
    return "torchvision"


@dataclass(frozen=True)
class ClassCatalog:
    """The class names of a classifier, index = class id. ``ids_only``: the names and count are not
    known here (a model file without --class-names): every id is a class, named by its number."""

    names: tuple[str, ...]
    ids_only: bool = False

    def __len__(self) -> int:
        return len(self.names)

    def name(self, class_id: object) -> str | None:
        """The name of ``class_id``, or None when it is not a class id of this catalogue."""
        if isinstance(class_id, int) and not isinstance(class_id, bool) and class_id >= 0:
            if class_id < len(self):
                return self.names[class_id]
            if self.ids_only:
                return str(class_id)
        return None

    def label(self, class_id: object) -> str:
        """``"6 stingray"`` for a class id, ``"-"`` for None, the value itself otherwise."""
        if class_id is None:
            return "-"
        name = self.name(class_id)
        return f"{class_id} {name}" if name is not None else str(class_id)

    def resolve(self, value: int | str) -> int:
        """A class id from an int, a numeric string or a name (case-insensitive, exact or unique prefix).

        Raises InvalidInput naming the value when it is out of range, unknown (with the closest
        names) or ambiguous."""
        if isinstance(value, bool):
            raise InvalidInput(f"class {value!r} is not a class id or name")
        last = len(self) - 1
        if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            idx = int(value)
            if not 0 <= idx <= last:
                raise InvalidInput(f"class id {idx} is out of range 0..{last}")
            return idx
        wanted = str(value).strip().lower()
        lowered = [n.lower() for n in self.names]
        if wanted in lowered:
            return lowered.index(wanted)
        hits = [i for i, n in enumerate(lowered) if n.startswith(wanted)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            shown = ", ".join(f"{i} {self.names[i]!r}" for i in hits[:8])
            raise InvalidInput(f"class name {value!r} is ambiguous: {shown}")
        close = difflib.get_close_matches(wanted, lowered, n=3, cutoff=0.75)
        hint = f": did you mean {' or '.join(repr(self.names[lowered.index(c)]) for c in close)}?" if close else ""
        raise InvalidInput(
            f"unknown class name {value!r}{hint} (give an id 0..{last} or a class name; "
            "`ascent classes PATTERN` lists the names that contain PATTERN)"
        )

    def lookup(self, name: str) -> int | None:
        """The id of a class given exactly (case-insensitive) or by its id; None otherwise (no prefixes:
        a folder named ``cat`` is not taken for ``catamaran``)."""
        text = name.strip()
        if text.isdigit():
            return int(text) if int(text) < len(self) else None
        lowered = [n.lower() for n in self.names]
        return lowered.index(text.lower()) if text.lower() in lowered else None

    def search(self, pattern: str = "") -> list[int]:
        """Ids whose name contains ``pattern`` (case-insensitive); every id for an empty pattern."""
        wanted = pattern.strip().lower()
        return [i for i, n in enumerate(self.names) if wanted in n.lower()]

    @classmethod
    def numbered(cls, n: int) -> ClassCatalog:
        """``n`` classes named by their ids (a classifier that came without names)."""
        return cls(tuple(str(i) for i in range(n)))

    @classmethod
    def of(cls, names: Sequence[str]) -> ClassCatalog:
        return cls(tuple(str(n) for n in names))


@cache
def imagenet() -> ClassCatalog:
    """The 1000 ImageNet classes in torchvision order."""
    text = resources.files("ascent.shared").joinpath("imagenet_classes.json").read_text(encoding="utf-8")
    catalog = ClassCatalog.of(json.loads(text))
    assert len(catalog) == NUM_CLASSES
    return catalog


def classes_of(model: str, num_classes: int | None = None, names: Sequence[str] | None = None) -> ClassCatalog:
    """The class names of a run's model: ``names`` when given (its --class-names); ImageNet's for a
    model of 1000 classes and for torchvision's and timm's models; the ids otherwise."""
    if names:
        return ClassCatalog.of(names)
    if num_classes == NUM_CLASSES or (num_classes is None and model_kind(model) in ("torchvision", "timm")):
        return imagenet()
    if num_classes is None:
        return ClassCatalog((), ids_only=True)
    return ClassCatalog.numbered(num_classes)


def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in torchvision order (index = class id)."""
    return imagenet().names


def resolve_class(value: int | str) -> int:
    """An ImageNet class id from an id or a name; see ``ClassCatalog.resolve``."""
    return imagenet().resolve(value)
