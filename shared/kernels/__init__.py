"""The four jobs as batched kernels that optimise the input image of a frozen classifier.

All take images N×3×H×W in [0, 1] (float) on the model's device and return tensors plus per-image
metrics; none does I/O. They share one loop, ``loop.ascend``: the jobs differ only in the objective,
the start image, the stop rule, the update rule and the projection (clamp, blur) after each step.

- ``saliency``: one backward pass (Simonyan et al. 2014).
- ``fool``: normalised-gradient ascent on the target score, per-sample early stopping, 8-bit exact.
- ``class_visualization``: ascent on the raw class score with L2, jitter and blur (CS231n).
- ``style_transfer``: Adam or per-image L-BFGS descent on content + style + TV losses (Gatys et al.
  2016; CS231n), optionally coarse to fine, with original colours, per-image styles and weights.
"""

from ascent.shared.kernels.classviz import class_visualization
from ascent.shared.kernels.fool import FoolResult, fool
from ascent.shared.kernels.loop import (
    AdamStep,
    ascend,
    auto_max_batch,
    input_gradient,
    normalized_gradient_step,
    quantize,
)
from ascent.shared.kernels.saliency import saliency
from ascent.shared.kernels.style import StyleResult, style_transfer

__all__ = [
    "AdamStep",
    "FoolResult",
    "StyleResult",
    "ascend",
    "auto_max_batch",
    "class_visualization",
    "fool",
    "input_gradient",
    "normalized_gradient_step",
    "quantize",
    "saliency",
    "style_transfer",
]
