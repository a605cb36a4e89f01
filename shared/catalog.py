"""Torch-free facts the producer needs to validate a spec: model names and ImageNet class names."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from shared.errors import InvalidInput

# Names accepted by shared.models.load_classifier. "tiny" is a small seeded network for tests and
# load tests (random weights, 1000 outputs); the others are torchvision's ImageNet classifiers.
MODEL_NAMES: tuple[str, ...] = (
    "squeezenet1_1",
    "resnet18",
    "resnet50",
    "vgg16",
    "vgg19",
    "mobilenet_v3_large",
    "tiny",
)

# Numeric precisions of the network while stepping (shared.models.autocast): float32 is the reference.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

NUM_CLASSES = 1000


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in torchvision order (index = class id)."""
    text = resources.files("shared").joinpath("imagenet_classes.json").read_text(encoding="utf-8")
    names = tuple(json.loads(text))
    assert len(names) == NUM_CLASSES
    return names


def resolve_class(value: int | str) -> int:
    """A class id from an int, a numeric string or a class name (case-insensitive, exact or unique prefix).

    Raises InvalidInput naming the value when it is out of range, unknown or ambiguous.
    """
    if isinstance(value, bool):
        raise InvalidInput(f"class {value!r} is not a class id or name")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        idx = int(value)
        if not 0 <= idx < NUM_CLASSES:
            raise InvalidInput(f"class id {idx} is out of range 0..{NUM_CLASSES - 1}")
        return idx
    wanted = str(value).strip().lower()
    names = [n.lower() for n in class_names()]
    if wanted in names:
        return names.index(wanted)
    hits = [i for i, n in enumerate(names) if n.startswith(wanted)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        shown = ", ".join(f"{i} {class_names()[i]!r}" for i in hits[:8])
        raise InvalidInput(f"class name {value!r} is ambiguous: {shown}")
    raise InvalidInput(f"unknown class name {value!r} (give an id 0..999 or an ImageNet class name)")
