"""Saliency maps (Simonyan et al. 2014): one backward pass of the class score or its cross-entropy."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ascent.shared.errors import InvalidInput
from ascent.shared.kernels.loop import check_images, class_tensor, input_gradient, model_device, num_classes
from ascent.shared.models import Classifier


def saliency(model: Classifier, images: Tensor, labels: Any, loss: str = "cross_entropy") -> Tensor:
    """Saliency maps N×H×W (≥ 0): max over channels of |∂loss/∂input| (normalised input, as the
    reference). ``loss="cross_entropy"`` of ``labels`` (default) or ``"score"`` = the class logit."""
    check_images(images)
    if loss not in ("cross_entropy", "score"):
        raise InvalidInput(f"loss must be 'cross_entropy' or 'score', got {loss!r}")
    device = model_device(model)
    labels_t = class_tensor(labels, images.shape[0], num_classes(model), "labels", device)
    inputs = model.normalize(images.to(device)).detach().requires_grad_(True)
    logits = model.forward_normalized(inputs)
    if loss == "score":
        objective = logits.gather(1, labels_t[:, None]).squeeze(1)
    else:
        objective = -F.cross_entropy(logits, labels_t, reduction="none")
    return input_gradient(objective, inputs).abs().amax(dim=1)
