"""The model zoo: frozen classifiers that take [0, 1] images and carry their normalisation.

``load_classifier("squeezenet1_1", weights=PATH)`` returns a ``Classifier``: ``model(images)`` gives
logits (N×1000) for images N×3×H×W in [0, 1]; ``model.features(images)`` gives the output of every
module of the feature stack in order (for SqueezeNet 1.1 ``features[0..12]``, the reference's indexing).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ascent.shared.catalog import MODEL_NAMES, PRECISIONS, class_names
from ascent.shared.errors import ModelNotFound

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """A frozen classifier split into a feature stack (indexable modules) and a head.

    ``forward`` and ``features`` take images in [0, 1]; the ``*_normalized`` variants take inputs
    already normalised with ``mean``/``std`` (the space the reference optimises in).
    """

    def __init__(self, name: str, stack: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.stack = stack
        self.head = head
        self.class_names: tuple[str, ...] = class_names()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
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
        return self.head(self.stack(self._prepare(inputs)))[:n]

    def forward(self, images: Tensor) -> Tensor:
        """Logits N×1000 for images N×3×H×W in [0, 1]."""
        return self.forward_normalized(self.normalize(images))

    def features_normalized(self, inputs: Tensor, upto: int | None = None) -> list[Tensor]:
        """Outputs of ``stack[0..upto]`` (all modules when ``upto`` is None), in order."""
        last = len(self.stack) - 1 if upto is None else upto
        if not 0 <= last < len(self.stack):
            raise ValueError(f"feature layer {upto} out of range 0..{len(self.stack) - 1} for {self.name}")
        outputs = []
        n = inputs.shape[0]
        x = self._prepare(inputs)
        for index, module in enumerate(self.stack):
            x = module(x)
            outputs.append(x[:n])
            if index == last:
                break
        return outputs

    def features(self, images: Tensor, upto: int | None = None) -> list[Tensor]:
        """The list of outputs of every module of the feature stack for images in [0, 1]."""
        return self.features_normalized(self.normalize(images), upto)


def _split_sequential_features(net: Any) -> tuple[nn.Sequential, nn.Module]:
    # vgg, mobilenet_v3: features -> avgpool -> flatten -> classifier
    head = nn.Sequential(net.avgpool, nn.Flatten(1), net.classifier)
    return net.features, head


def _split_squeezenet(net: Any) -> tuple[nn.Sequential, nn.Module]:
    return net.features, nn.Sequential(net.classifier, nn.Flatten(1))


def _split_resnet(net: Any) -> tuple[nn.Sequential, nn.Module]:
    stack = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return stack, nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)


def _tiny_net() -> nn.Module:
    """A small all-convolutional CNN (9 feature modules, like SqueezeNet's indexing), 1000 outputs."""
    net = nn.Module()
    net.features = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 24, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(24, 32, 3, padding=1),
        nn.ReLU(),
    )
    # a 1×1-conv head like SqueezeNet's: conv layers give bitwise batch-independent results on the CPU
    net.classifier = nn.Sequential(nn.Conv2d(32, 1000, 1), nn.AdaptiveAvgPool2d(1))
    return net


_SPLITS: dict[str, Callable[[Any], tuple[nn.Sequential, nn.Module]]] = {
    "squeezenet1_1": _split_squeezenet,
    "resnet18": _split_resnet,
    "resnet50": _split_resnet,
    "vgg16": _split_sequential_features,
    "vgg19": _split_sequential_features,
    "mobilenet_v3_large": _split_sequential_features,
    "tiny": _split_squeezenet,
}
assert set(_SPLITS) == set(MODEL_NAMES)


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


def _build(name: str, weights: str | os.PathLike[str] | None, seed: int) -> nn.Module:
    import torchvision

    if name == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _tiny_net()
        if weights in (None, "DEFAULT", "random"):
            return net
        return _load_checkpoint(name, net, weights)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torchvision.models.get_model(name, weights=None)
    if weights in (None, "DEFAULT"):
        try:
            return torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as exc:  # network, cache, corrupt download: all end the same way for the user
            home = os.environ.get("TORCH_HOME", "~/.cache/torch")
            raise ModelNotFound(
                f"could not load torchvision's pretrained weights for {name!r} "
                f"({type(exc).__name__}: {exc}); "
                f"without internet put the checkpoint in {home}/hub/checkpoints or pass weights=PATH"
            ) from exc
    return _load_checkpoint(name, torchvision.models.get_model(name, weights=None), weights)


def _load_checkpoint(name: str, net: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"checkpoint for {name!r} not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        net.load_state_dict(state)
    except Exception as exc:
        raise ModelNotFound(
            f"cannot load checkpoint {path} into {name!r}: {type(exc).__name__}: {exc}".strip()[:2000]
            + f" (is it a state_dict for {name}? available models: {', '.join(MODEL_NAMES)})"
        ) from exc
    return net


def load_classifier(
    name: str = "squeezenet1_1",
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> Classifier:
    """A frozen ``Classifier`` in eval mode on ``device`` (default: CUDA when present, else CPU).

    ``weights``: None or "DEFAULT" = torchvision's pretrained weights through its cache (TORCH_HOME);
    a path = a local state_dict checkpoint; "random" = seeded random init (benchmarks). The "tiny"
    model has no pretrained weights: None means seeded random init.
    """
    if name not in _SPLITS:
        raise ModelNotFound(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}")
    net = _build(name, weights, seed)
    stack, head = _SPLITS[name](net)
    model = Classifier(name, stack, head)
    model.eval()
    model.requires_grad_(False)
    model = model.to(torch.device(device) if device is not None else default_device())
    return model.to(memory_format=torch.channels_last)  # see Classifier._prepare
