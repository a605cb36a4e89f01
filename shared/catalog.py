"""Torch-free facts the producer needs to validate a spec: model names, precisions and class names."""

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

NUM_CLASSES = 1000


@dataclass(frozen=True)
class ClassCatalog:
    """The class names of a classifier, index = class id."""

    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def name(self, class_id: object) -> str | None:
        """The name of ``class_id``, or None when it is not a class id of this catalogue."""
        if isinstance(class_id, int) and not isinstance(class_id, bool) and 0 <= class_id < len(self):
            return self.names[class_id]
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
        close = difflib.get_close_matches(wanted, lowered, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(self.names[lowered.index(c)]) for c in close)}?" if close else ""
        raise InvalidInput(f"unknown class name {value!r} (give an id 0..{last} or a class name{hint})")

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


def classes_of(model: str) -> ClassCatalog:
    """The class names of a model of the zoo (every one of them is an ImageNet classifier)."""
    return imagenet()


def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in torchvision order (index = class id)."""
    return imagenet().names


def resolve_class(value: int | str) -> int:
    """An ImageNet class id from an id or a name; see ``ClassCatalog.resolve``."""
    return imagenet().resolve(value)
