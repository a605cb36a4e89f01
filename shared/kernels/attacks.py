"""The pieces of ε-bounded attacks that ``fool`` combines: objectives, norm steps, projections onto the
ε-ball (float and 8-bit), random starts and momentum. Pure tensor functions, no I/O.

Images are N×3×H×W in [0, 1]; ε and step sizes are in the same pixel units (8/255 is the common L∞
budget). The definitions follow the peers' (torchattacks 3.5.1 ``PGD``, ``PGDL2``, ``MIFGSM``, ``FGSM``;
Madry et al. 2018; Dong et al. 2018), so their settings carry over unchanged; what they lack is the
8-bit ball: ``lattice_linf``/``lattice_l2`` give the nearest 8-bit image inside the ball around the
8-bit original, rounding towards the original where nearest rounding would leave it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ascent.shared.catalog import FOOL_LOSSES as LOSSES
from ascent.shared.catalog import FOOL_NORMS as NORMS
from ascent.shared.errors import InvalidInput
from ascent.shared.kernels.loop import Step

__all__ = ["LOSSES", "NORMS"]  # re-exported for the kernel
#: ε given as k/255 in floating point (8/255·255 = 7.999...): counted as k levels.
LEVEL_TOLERANCE = 1e-6
#: The float L2 projection aims this much inside the ball, so that rounding towards the original is
#: always enough to stay inside it (float32 error in x·255 is ~1e-7 relative).
L2_SLACK = 1e-5
#: Rungs of the L2 rounding repair: pixels rounded away from the original by at least τ (in levels)
#: are rounded towards it instead, for the largest τ that brings the image back inside the ball.
L2_REPAIR_RUNGS = (0.45, 0.4, 0.3, 0.2, 0.1, 0.0)


def _rows(v: Tensor) -> Tensor:
    """A per-row value as N×1×1×1 for broadcasting over images."""
    return v.view(-1, 1, 1, 1)


def per_row(value: Any, n: int, name: str, device: torch.device) -> Tensor:
    """A float tensor of n values from a number (broadcast) or one number per image; InvalidInput
    naming ``name`` for a wrong length, a negative or non-finite value."""
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a number or one number per image, got {value!r}")
    values = [value] * n if isinstance(value, (int, float)) else value
    try:
        out = torch.as_tensor(values, dtype=torch.float64).to(device)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidInput(f"{name} must be a number or one number per image, got {value!r}") from None
    if out.dim() != 1 or out.numel() != n:
        raise InvalidInput(f"{name} must have one value per image ({n}), got shape {tuple(out.shape)}")
    bad = ~torch.isfinite(out) | (out < 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise InvalidInput(f"{name}[{i}] = {float(out[i])!r} must be a finite non-negative number")
    return out


# ----------------------------------------------------------------------------- objectives


def objective_of(loss: str, logits: Tensor, goal: Tensor, untargeted: bool) -> Tensor:
    """The per-sample value to *maximise* from float32 logits (N×C) and goal classes (N).

    Targeted (towards ``goal``): ``score`` the raw logit z_goal (the reference); ``ce`` = ``log_softmax``
    = −CE(goal) (PGD's targeted loss: log p_goal, which also pushes the other classes down); ``margin``
    z_goal − max_{j≠goal} z_j (the C&W margin, unclamped). Untargeted (away from ``goal``, the true or
    clean class): the negative of each, so ``ce`` maximises CE(goal), as the peers' untargeted PGD.
    """
    picked = goal[:, None]
    if loss == "score":
        value = logits.gather(1, picked).squeeze(1)
    elif loss in ("ce", "log_softmax"):
        value = logits.log_softmax(1).gather(1, picked).squeeze(1)
    elif loss == "margin":
        own = logits.gather(1, picked).squeeze(1)
        others = logits.scatter(1, picked, float("-inf")).amax(1)
        value = own - others
    else:
        raise InvalidInput(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return -value if untargeted else value


# ----------------------------------------------------------------------------- the ball


def levels(eps: Tensor) -> Tensor:
    """⌊ε·255⌋ per row (as float): the L∞ budget in 8-bit steps (k/255 counts as k)."""
    return torch.floor(eps * 255 + LEVEL_TOLERANCE)


def project_linf(x: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """x clipped to the L∞ ball of radius ε (per row) around x0, then to [0, 1] (PGD's projection)."""
    e = _rows(eps).to(x.dtype)
    return torch.minimum(torch.maximum(x, x0 - e), x0 + e).clamp_(0, 1)


def project_l2(x: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """x moved onto the L2 ball of radius ε (per row, shrunk by ``L2_SLACK``) around x0 when outside it,
    then clamped to [0, 1] (which only shortens the perturbation: x0 is in [0, 1])."""
    delta = x - x0
    norm = delta.flatten(1).norm(dim=1)
    radius = (eps * (1 - L2_SLACK)).to(x.dtype)
    factor = torch.where(norm > radius, radius / norm.clamp_min(1e-12), torch.ones_like(norm))
    return (x0 + delta * _rows(factor)).clamp_(0, 1)


def lattice_linf(x: Tensor, x0_255: Tensor, k: Tensor) -> Tensor:
    """The 8-bit image nearest x inside the L∞ ball of k levels (per row) around the 8-bit original
    ``x0_255`` (integer values as float, 0..255): round(x·255) clipped to [x0 − k, x0 + k] ∩ [0, 255]
    per pixel, so a rounding that would leave the ball rounds towards the original. Returns q/255."""
    kk = _rows(k).to(x.dtype)
    q = torch.round(x * 255)
    q = torch.minimum(torch.maximum(q, x0_255 - kk), x0_255 + kk).clamp_(0, 255)
    return q / 255


def _sum_squares(levels_: Tensor) -> Tensor:
    """Σ over each row of integer levels² in float64 (exact: levels are integers ≤ 255)."""
    return levels_.flatten(1).double().pow(2).sum(1)


def lattice_l2(x: Tensor, x0_255: Tensor, eps: Tensor) -> Tensor:
    """The 8-bit image nearest x inside the L2 ball of radius ε (per row) around the 8-bit original
    ``x0_255``: ‖q − x0·255‖₂ ≤ 255·ε in integers. Nearest rounding first; in a row where that leaves
    the ball, the pixels that were rounded away from the original by at least τ levels are rounded
    towards it instead, τ the largest of ``L2_REPAIR_RUNGS`` that is enough (τ = 0: every pixel rounded
    towards the original, which is inside when x is: |trunc d| ≤ |d|). x must be inside the ball
    (``project_l2``). Returns q/255."""
    d = x * 255 - x0_255
    r = torch.round(d)
    bound = (eps.double() * 255) ** 2
    over = _sum_squares(r) > bound
    if bool(over.any()):
        rows = over.nonzero().squeeze(1)
        dr, rr = d[rows], r[rows]
        away = rr.abs() > dr.abs()  # rounded away from the original (|r| ≥ 1 there)
        excess = torch.where(away, rr.abs() - dr.abs(), torch.full_like(dr, -1.0))
        saving = (2 * rr.abs() - 1).double()
        need = _sum_squares(rr) - bound[rows]
        chosen = torch.zeros_like(need)
        found = torch.zeros_like(need, dtype=torch.bool)
        for tau in L2_REPAIR_RUNGS:
            flip = excess >= tau
            enough = (saving * flip).flatten(1).sum(1) >= need
            chosen = torch.where(~found & enough, torch.full_like(chosen, tau), chosen)
            found |= enough
        flip = (excess >= _rows(chosen).to(excess.dtype)) & _rows(found)
        fixed = torch.where(flip, rr - rr.sign(), rr)
        # never taken in practice (τ = 0 always fits a projected x); keeps the guarantee unconditional
        fixed = torch.where(_rows(_sum_squares(fixed) > bound[rows]), torch.zeros_like(fixed), fixed)
        r = r.index_copy(0, rows, fixed)
    return (x0_255 + r).clamp_(0, 255) / 255


# ----------------------------------------------------------------------------- starts and steps


def random_start(x0: Tensor, eps: Tensor, norm: str, seeds: Sequence[int]) -> Tensor:
    """x0 plus a perturbation drawn uniformly from the ball (per row, its own seed), clamped to [0, 1]:
    L∞ uniform in [−ε, ε] per pixel (torchattacks' and Madry's); L2 uniform in the L2 ball (direction
    from a Gaussian, radius ε·u^(1/D), as Foolbox). Drawn on the CPU, so a seed gives the same start
    on every device and whatever the batch."""
    shape = x0.shape[1:]
    dims = math.prod(shape)
    noise = []
    for i, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed))
        e = float(eps[i])
        if norm == "linf":
            noise.append((torch.rand(shape, generator=gen) * 2 - 1) * e)
        else:
            direction = torch.randn(shape, generator=gen)
            radius = e * (1 - L2_SLACK) * float(torch.rand((), generator=gen)) ** (1 / dims)
            noise.append(direction * (radius / float(direction.norm().clamp_min(1e-12))))
    return (x0 + torch.stack(noise).to(device=x0.device, dtype=x0.dtype)).clamp_(0, 1)


def signed_step(alpha: Tensor) -> Step:
    """x ← x + α·sign(g) per row (FGSM, PGD L∞)."""

    def step(t: int, x: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
        return x + _rows(alpha[rows]).to(x.dtype) * grad.sign()

    return step


def l2_step(alpha: Tensor) -> Step:
    """x ← x + α·g/‖g‖₂ per row (PGD L2)."""

    def step(t: int, x: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return x + _rows(alpha[rows].to(x.dtype) / norm) * grad

    return step


def with_momentum(step: Step, mu: float, like: Tensor) -> Step:
    """MI-FGSM's accumulated gradient: g ← μ·g + ∇/mean|∇| per sample (state per row, so rows may
    leave the batch), then ``step`` on g (Dong et al. 2018; torchattacks ``MIFGSM``)."""
    accumulated = torch.zeros_like(like)

    def momentum_step(t: int, x: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
        scale = grad.abs().flatten(1).mean(1).clamp_min(1e-12)
        g = accumulated[rows].mul_(mu).add_(grad / _rows(scale))
        accumulated[rows] = g
        return step(t, x, g, rows)

    return momentum_step


def projected(step: Step, project: Any) -> Step:
    """``step`` followed by ``project(x, rows)`` (the ball of each row)."""

    def projected_step(t: int, x: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
        return project(step(t, x, grad, rows), rows)

    return projected_step


def inside_ball(image: Tensor, x0_255: Tensor, norm: str, bound: Tensor) -> Tensor:
    """Per row, whether 8-bit ``image`` (N×3×H×W in [0, 1]) lies in the ball around ``x0_255`` (the
    originals ×255): L∞ within ``bound`` levels (integers), L2 within ``bound`` = ε in pixel units."""
    d255 = (torch.round(image * 255) - x0_255).flatten(1)
    if norm == "linf":
        return d255.abs().amax(1) <= bound
    return d255.double().pow(2).sum(1) <= (bound.double() * 255) ** 2
