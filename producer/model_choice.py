"""The model a job command names (``--model``, ``--weights``, ``--mean``, ``--std``, ``--class-names``):
checked here before anything starts, and what the producer needs from it (its class names, to resolve
``--target stingray`` or an ImageFolder's folder names).

In the embedded default the model is loaded here once (``probe``): one that cannot load, or does not
give N×C logits, stops the command with one message naming the flag, before Redis or a worker starts.
Elsewhere the producer may have no torch: local files must exist, and the first worker that cannot
load the model marks the run failed (``ascent.worker.handler``).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from ascent.producer.inputs import local_path
from ascent.shared.catalog import ClassCatalog, imagenet, model_kind
from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.uris import is_s3

PRETRAINED = ("DEFAULT", "random")


@dataclass(frozen=True)
class ModelChoice:
    """What the spec records about the model, and its class names when they are known here."""

    model: str
    weights: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    class_names: str | None
    catalog: ClassCatalog | None
    num_classes: int | None

    def resolve_class(self, value: str) -> int:
        """A class id from an id or a name of this model; InvalidInput saying why not."""
        if self.catalog is not None:
            return self.catalog.resolve(value)
        if str(value).strip().isdigit():
            return int(value)
        raise InvalidInput(f"class {value!r}: give a class id, or the model's names with --class-names FILE")


def _triple(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidSpec(flag.lstrip("-"), f"{flag} {text}: give three numbers R,G,B") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or (flag == "--std" and min(values) <= 0):
        raise InvalidSpec(flag.lstrip("-"), f"{flag} {text}: give three numbers R,G,B (std > 0)")
    return values


def _local_file(value: str, flag: str) -> str:
    """A local file's URI (it must exist), or an s3:// URI as given (the workers read it)."""
    if is_s3(value):
        return value
    path = local_path(value, flag.lstrip("-"))
    if not path.is_file():
        raise InvalidSpec(flag.lstrip("-").replace("-", "_"), f"{flag} {value}: no such file")
    return path.as_uri()


def choose_model(args: argparse.Namespace, *, probe: bool) -> ModelChoice:
    """The command's model; with ``probe`` it is loaded here (ModelNotFound, an InvalidInput, when it
    cannot be)."""
    from ascent.shared.uris import scheme_of

    model = args.model
    kind = model_kind(model)
    if kind == "file":
        model = _local_file(model, "--model")
    weights = args.weights if args.weights in (*PRETRAINED, None) else _local_file(args.weights, "--weights")
    names_uri = None if args.class_names is None else _local_file(args.class_names, "--class-names")
    names = None
    if names_uri is not None and scheme_of(names_uri) == "file":
        text = local_path(names_uri).read_text(encoding="utf-8")
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not names:
            raise InvalidSpec("class_names", f"--class-names {args.class_names}: no names in the file")
    mean, std = _triple(args.mean, "--mean"), _triple(args.std, "--std")
    catalog = ClassCatalog(names) if names else None
    num_classes = len(names) if names else None
    remote = [u for u in (model, weights, names_uri) if u is not None and is_s3(u)]
    if probe and not remote:
        from ascent.shared.models import load_classifier

        loaded = load_classifier(model, weights, device="cpu", mean=mean, std=std, class_names=names)
        catalog, num_classes = ClassCatalog(loaded.class_names), loaded.num_classes
    elif catalog is None and kind == "torchvision":
        catalog = imagenet()  # every classification model of torchvision is an ImageNet-1k one
    return ModelChoice(model, weights, mean, std, names_uri, catalog, num_classes)
