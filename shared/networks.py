"""Build the network a ``--model`` names, with the ``--weights`` it asks for, and what is known about it.

``--model`` is one of

    squeezenet1_1, resnet18, ...   a torchvision classification model (any of torchvision's list)
    tiny                            a small seeded CNN for tests and load tests (1000 outputs)
    timm:NAME                       a timm model (``pip install 'ascent[timm]'``)
    PATH.pt2                        a program saved with ``torch.export.save`` (export it with a dynamic
                                    batch dimension: ascent runs batches of any size)
    PATH (.pt, .pth, .ts, ...)      a module saved with ``torch.jit.save`` (TorchScript)
    package.module:factory          a callable returning an ``nn.Module`` (it must import on the workers)

and ``--weights`` is ``DEFAULT`` (torchvision's or timm's pretrained weights, through their caches),
``random`` (seeded), or a state_dict file (``.pth``/``.pt`` read with ``weights_only=True``: weights,
never code; or ``.safetensors``). Every failure is a ``ModelNotFound`` whose message starts with the
flag and value at fault and says what to do; none passes on torch's advice to load code.
"""

from __future__ import annotations

import importlib
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ascent.shared.catalog import model_kind
from ascent.shared.errors import ModelNotFound

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED = ("DEFAULT", None)
EXPORT_SUFFIXES = (".pt2",)


@dataclass
class Network:
    """A network and what its source says about it: its feature stack and head when ascent knows how
    to split it (style transfer needs the stack), its normalisation and class names when known."""

    net: nn.Module
    split: tuple[nn.Sequential, nn.Module] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None
    input_size: int | None = None


def _split_sequential_features(net: Any) -> tuple[nn.Sequential, nn.Module]:
    # vgg, mobilenet_v3: features -> avgpool -> flatten -> classifier
    return net.features, nn.Sequential(net.avgpool, nn.Flatten(1), net.classifier)


def _split_squeezenet(net: Any) -> tuple[nn.Sequential, nn.Module]:
    return net.features, nn.Sequential(net.classifier, nn.Flatten(1))


def _split_resnet(net: Any) -> tuple[nn.Sequential, nn.Module]:
    stack = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return stack, nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)


#: Models whose feature stack ascent knows (the indexing style transfer's layer numbers use).
SPLITS: dict[str, Callable[[Any], tuple[nn.Sequential, nn.Module]]] = {
    "squeezenet1_1": _split_squeezenet,
    "resnet18": _split_resnet,
    "resnet50": _split_resnet,
    "vgg16": _split_sequential_features,
    "vgg19": _split_sequential_features,
    "mobilenet_v3_large": _split_sequential_features,
    "tiny": _split_squeezenet,
}


def tiny_net() -> nn.Module:
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


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _torchvision(name: str, weights: str | None, seed: int) -> Network:
    import torchvision

    if name == "tiny":
        net = _seeded(seed, tiny_net)
        split = SPLITS[name](net)
        return (
            Network(net, split, IMAGENET_MEAN, IMAGENET_STD)
            if weights in (*PRETRAINED, "random")
            else _with(Network(net, split, IMAGENET_MEAN, IMAGENET_STD), weights, name)
        )
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ModelNotFound(
            f"--model {name}: not a torchvision classification model, timm:NAME, a model file or "
            "package.module:factory (torchvision's names: python -c 'import torchvision; "
            "print(torchvision.models.list_models(module=torchvision.models))')"
        )
    enum = torchvision.models.get_model_weights(name).DEFAULT
    meta = Network(nn.Identity(), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    categories = enum.meta.get("categories")
    meta.class_names = tuple(categories) if categories else None
    if weights == "random":
        meta.net = _seeded(seed, lambda: torchvision.models.get_model(name, weights=None))
    elif weights in PRETRAINED:
        try:
            meta.net = torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as exc:  # network, cache, corrupt download: all end the same way for the user
            home = os.environ.get("TORCH_HOME", "~/.cache/torch")
            raise ModelNotFound(
                f"--model {name}: torchvision's pretrained weights could not be loaded ({type(exc).__name__}); "
                f"without internet put the checkpoint ({enum.url.rsplit('/', 1)[-1]}) in {home}/hub/checkpoints, "
                "or pass --weights PATH"
            ) from None
    else:
        meta.net = torchvision.models.get_model(name, weights=None)
        meta = _with(meta, weights, name)
    meta.split = SPLITS[name](meta.net) if name in SPLITS else None
    return meta


def _timm(name: str, weights: str | None, seed: int) -> Network:
    try:
        import timm
    except ImportError:
        raise ModelNotFound(f"--model timm:{name}: timm is not installed (pip install 'ascent[timm]')") from None
    try:
        net = _seeded(seed, lambda: timm.create_model(name, pretrained=weights in PRETRAINED))
    except RuntimeError as exc:
        raise ModelNotFound(f"--model timm:{name}: {exc}") from None
    except Exception as exc:  # the hub is out of reach, a name timm does not know...
        raise ModelNotFound(
            f"--model timm:{name}: timm could not create it ({type(exc).__name__}: {str(exc)[:200]}); without "
            "internet pass --weights PATH (a state_dict) or --weights random"
        ) from None
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = cfg.get("input_size")
    found = Network(
        net,
        None,
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
        None,
        size[-1] if size else None,
    )
    return found if weights in (*PRETRAINED, "random") else _with(found, weights, f"timm:{name}")


def _factory(reference: str, weights: str | None, seed: int) -> Network:
    module_name, _, attribute = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ModelNotFound(
            f"--model {reference}: cannot import it here ({type(exc).__name__}: {exc}); a factory must be importable "
            "on every worker (install its package there, or put it on PYTHONPATH)"
        ) from None
    try:
        net = _seeded(seed, factory)
    except Exception as exc:
        raise ModelNotFound(f"--model {reference}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise ModelNotFound(f"--model {reference}: the factory returned a {type(net).__name__}, not an nn.Module")
    found = Network(net)
    return found if weights in (*PRETRAINED, "random") else _with(found, weights, reference)


def _file(path: Path, shown: str, weights: str | None) -> Network:
    if not path.is_file():
        raise ModelNotFound(f"--model {shown}: no such file")
    try:
        if path.suffix.lower() in EXPORT_SUFFIXES:
            net: nn.Module = Exported(torch.export.load(str(path)).module())
        else:
            with warnings.catch_warnings():  # deprecated in torch 2.14: users still have such files
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
                net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelNotFound(
            f"--model {shown}: not a model saved with torch.export.save (.pt2) or torch.jit.save "
            f"({type(exc).__name__}); a state_dict goes with --weights and a model of that architecture"
        ) from None
    found = Network(net)
    return found if weights in (*PRETRAINED, "random") else _with(found, weights, shown)


class Exported(nn.Module):
    """A ``torch.export`` program's module: frozen for inference already, so ``eval()``/``train()``
    (which the program refuses) stop here instead of reaching it."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> Exported:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def read_state_dict(path: Path, shown: str) -> dict[str, torch.Tensor]:
    """A state_dict from a file: safetensors, or torch.save'd tensors loaded with ``weights_only``."""
    if not path.is_file():
        raise ModelNotFound(f"--weights {shown}: no such file")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        # weights_only names a pickled object it refuses "Unsupported global"; anything else is garbage.
        objects = isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc)
        kind = "it holds Python objects besides tensors" if objects else f"unreadable: {type(exc).__name__}"
        raise ModelNotFound(
            f"--weights {shown}: not a checkpoint ascent can read ({kind}): give a state_dict saved with "
            "torch.save(model.state_dict(), PATH) or a .safetensors file (ascent loads weights, never code)"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelNotFound(f"--weights {shown}: holds a {type(state).__name__}, not a state_dict of tensors")
    return state


def _with(found: Network, weights: str | None, model: str) -> Network:
    from ascent.shared.uris import local_path

    assert weights is not None
    state = read_state_dict(local_path(weights), weights)
    result = found.net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = result.missing_keys[:4], result.unexpected_keys[:4]
        raise ModelNotFound(
            f"--weights {weights}: does not fit --model {model} (missing {len(result.missing_keys)} keys such as "
            f"{missing}, unexpected {len(result.unexpected_keys)} such as {unexpected}): is it a state_dict of that "
            "architecture?"
        )
    return found


def build(model: str, weights: str | None = None, seed: int = 0) -> Network:
    """The network ``model`` names with ``weights`` (see the module docstring); raises ModelNotFound."""
    kind = model_kind(model)
    if kind == "timm":
        return _timm(model[len("timm:") :], weights, seed)
    if kind == "factory":
        return _factory(model, weights, seed)
    if kind == "file":
        from ascent.shared.uris import local_path

        return _file(local_path(model), model, weights)
    return _torchvision(model, weights, seed)
