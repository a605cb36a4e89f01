"""Frozen classifiers that take [0, 1] images and carry their normalisation and class names.

``load_classifier("squeezenet1_1", weights=PATH)`` returns a ``Classifier``: ``model(images)`` gives
logits (N×C) for images N×3×H×W in [0, 1]; for the models whose feature stack ascent knows,
``model.features(images)`` gives the output of every module of the stack in order (for SqueezeNet 1.1
``features[0..12]``, the reference's indexing). Which models and weights: ``ascent.shared.networks``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ascent.shared.catalog import PRECISIONS, imagenet
from ascent.shared.errors import InvalidInput, ModelNotFound
from ascent.shared.networks import IMAGENET_MEAN, IMAGENET_STD, build


class Classifier(nn.Module):
    """A frozen classifier: a feature stack (indexable modules) and a head, or, for a network ascent
    cannot split, the whole network as the head (``stack`` None: no ``features``).

    ``forward`` and ``features`` take images in [0, 1]; the ``*_normalized`` variants take inputs
    already normalised with ``mean``/``std`` (the space the reference optimises in).
    """

    def __init__(
        self,
        name: str,
        stack: nn.Sequential | None,
        head: nn.Module,
        class_names: Sequence[str],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.name = name
        self.stack = stack
        self.head = head
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1))
        self.mean: Tensor
        self.std: Tensor

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std

    def denormalize(self, inputs: Tensor) -> Tensor:
        return inputs * self.std + self.mean

    def _prepare(self, inputs: Tensor) -> Tensor:
        """Inputs as the stack wants them: channels_last, and a lone image padded to two on the CPU.

        channels_last: oneDNN's NCHW max-pooling is ~16x slower than NHWC on the CPU, and cuDNN's
        tensor-core convolutions want NHWC (bench/RESULTS.md: 1.4-1.6x per forward+backward on the CPU).
        Padding: oneDNN takes another code path for a batch of one on the CPU, so an image would get
        (slightly) different logits alone than in a batch; with a batch of two or more the result
        of each image is bitwise the same whatever the batch (tests/test_kernels.py). Padding a
        lone image with a detached copy of itself makes batched and one-at-a-time runs agree.
        """
        if inputs.shape[0] == 1 and inputs.device.type == "cpu":
            inputs = torch.cat([inputs, inputs.detach()])
        return inputs.contiguous(memory_format=torch.channels_last)

    def forward_normalized(self, inputs: Tensor) -> Tensor:
        n = inputs.shape[0]
        x = self._prepare(inputs)
        return self.head(x if self.stack is None else self.stack(x))[:n]

    def forward(self, images: Tensor) -> Tensor:
        """Logits N×C for images N×3×H×W in [0, 1]."""
        return self.forward_normalized(self.normalize(images))

    @property
    def depth(self) -> int:
        """How many modules the feature stack has (0 for a network used as a whole)."""
        return 0 if self.stack is None else len(self.stack)

    def require_features(self) -> nn.Sequential:
        """The feature stack; InvalidInput naming the model when it has none."""
        if self.stack is None:
            raise InvalidInput(
                f"--model {self.name}: style transfer needs a model whose feature stack ascent knows "
                "(squeezenet1_1, vgg16, vgg19, resnet18, resnet50, mobilenet_v3_large, tiny)"
            )
        return self.stack

    def features_normalized(self, inputs: Tensor, upto: int | None = None) -> list[Tensor]:
        """Outputs of ``stack[0..upto]`` (all modules when ``upto`` is None), in order."""
        stack = self.require_features()
        last = len(stack) - 1 if upto is None else upto
        if not 0 <= last < len(stack):
            raise ValueError(f"feature layer {upto} out of range 0..{len(stack) - 1} for {self.name}")
        outputs = []
        n = inputs.shape[0]
        x = self._prepare(inputs)
        for index, module in enumerate(stack):
            x = module(x)
            outputs.append(x[:n])
            if index == last:
                break
        return outputs

    def features(self, images: Tensor, upto: int | None = None) -> list[Tensor]:
        """The list of outputs of every module of the feature stack for images in [0, 1]."""
        return self.features_normalized(self.normalize(images), upto)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context a network forward runs in: float32 (``"fp32"``, the reference), or bfloat16
    autocast (``"bf16"``: convolutions and matmuls in bf16, their gradients too; worth it on GPUs
    and on CPUs with AMX/AVX512-BF16, slow elsewhere). Callers cast the outputs back to float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_classifier(
    name: str = "squeezenet1_1",
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    probe_size: int = 32,
) -> Classifier:
    """A frozen ``Classifier`` in eval mode on ``device`` (default: CUDA when present, else CPU).

    ``name`` and ``weights``: see ``ascent.shared.networks`` (None or "DEFAULT" = pretrained weights
    through the caches; "random" = seeded random init; a path = a state_dict). ``mean``/``std``: the
    normalisation the model was trained with (default: the model's own when its source says, else
    ImageNet's). ``class_names``: one per output (default: the source's, ImageNet's for 1000 outputs,
    else the ids). The output width is found by a forward pass on a ``probe_size`` image: a model whose
    output is not N×C, or whose width differs from ``class_names``, raises ModelNotFound.
    """
    found = build(name, None if weights is None else os.fspath(weights), seed)
    stack, head = found.split if found.split is not None else (None, found.net)
    mean = tuple(mean or found.mean or IMAGENET_MEAN)
    std = tuple(std or found.std or IMAGENET_STD)
    for what, values in (("--mean", mean), ("--std", std)):
        if len(values) != 3 or (what == "--std" and min(values) <= 0):
            raise ModelNotFound(f"{what} {','.join(map(str, values))}: give three numbers (R,G,B; std > 0)")
    width = _output_width(name, head if stack is None else nn.Sequential(stack, head), probe_size)
    names = tuple(class_names or found.class_names or (imagenet().names if width == 1000 else ()))
    names = names or tuple(str(i) for i in range(width))
    if len(names) != width:
        raise ModelNotFound(f"--model {name}: it has {width} outputs but {len(names)} class names (--class-names)")
    model = Classifier(name, stack, head, names, mean, std)
    model.eval()
    model.requires_grad_(False)
    model = model.to(torch.device(device) if device is not None else default_device())
    return model.to(memory_format=torch.channels_last)  # see Classifier._prepare


def _output_width(name: str, net: nn.Module, size: int) -> int:
    """The number of classes: the width of the logits for two probe images (ModelNotFound unless N×C)."""
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, 3, size, size))
    except Exception as exc:
        raise ModelNotFound(
            f"--model {name}: a forward pass on a 2×3×{size}×{size} batch failed ({type(exc).__name__}: "
            f"{str(exc)[:200]}); models must take N×3×H×W images of any batch size (export with a dynamic batch)"
        ) from None
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelNotFound(
            f"--model {name}: its output for a 2×3×{size}×{size} batch is {shape}; ascent needs N×C logits"
        )
    return int(out.shape[1])
