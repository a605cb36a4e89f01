"""L-BFGS (Nocedal 1980) on a batch of images with one independent optimisation per image.

``torch.optim.LBFGS`` over a batch sees one vector: its history, curvature checks and step sizes mix
the images, so an image's result depends on the others. Here every dot product, history entry,
curvature test and step size is per row, so row i follows exactly the iterates it would follow
alone. Fixed step ``lr`` without a line search (one function evaluation per iteration, as
neural-style's ``-optimizer lbfgs``); the first step is scaled by min(1, 1/‖g‖₁) as torch's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ascent.shared.kernels.loop import current_hook

# x (N×...) -> per-image gradient of the per-image objective to *minimise* (N×..., same shape)
Gradient = Callable[[int, Tensor], Tensor]
# (t, x after step t) -> None: sees the iterates (intermediate saves)
Observer = Callable[[int, Tensor], None]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot products of N×D tensors (N)."""
    return (a * b).sum(1)


def lbfgs(
    x0: Tensor,
    gradient: Gradient,
    iters: int,
    history: int = 20,
    lr: float = 1.0,
    tolerance_grad: float = 1e-7,
    observe: Observer | None = None,
) -> Tensor:
    """Minimise from ``x0`` (N×...) for ``iters`` iterations, each one gradient evaluation at the
    current iterate and one step; returns x after the last step. A row whose gradient is below
    ``tolerance_grad`` (max-norm) stops moving; a step failing the curvature test (sᵀy ≤ 1e-10) is
    kept out of that row's history. ``history`` pairs (s, y) per row. The iteration hook installed by
    ``loop.iteration_hook`` runs before each iteration; what it raises (a cancel) ends the loop."""
    shape, n = x0.shape, x0.shape[0]
    x = x0.detach().clone().reshape(n, -1)
    m = max(1, history)
    s_hist = x.new_zeros(m, *x.shape)
    y_hist = x.new_zeros(m, *x.shape)
    rho = x.new_zeros(m, n)  # 1/(sᵀy), 0 where the pair is not in the row's history
    gamma = x.new_ones(n)  # the initial Hessian scale sᵀy / yᵀy of the newest accepted pair
    prev_x: Tensor | None = None
    prev_g: Tensor | None = None
    hook = current_hook()  # the worker's progress and cancel check, as ``ascend`` calls it
    for t in range(iters):
        if hook is not None:
            hook(t, iters, n, n)
        g = gradient(t, x.reshape(shape)).detach().reshape(n, -1)
        if prev_x is not None and prev_g is not None:
            s, y = x - prev_x, g - prev_g
            ys = _dot(y, s)
            ok = ys > 1e-10
            slot = (t - 1) % m
            s_hist[slot], y_hist[slot] = s, y
            rho[slot] = torch.where(ok, 1 / torch.where(ok, ys, 1.0), 0.0)
            gamma = torch.where(ok, ys / _dot(y, y).clamp_min(1e-30), gamma)
        q = g.clone()
        newest_first = [(t - 1 - j) % m for j in range(min(t, m))]
        alphas = []
        for slot in newest_first:
            alpha = rho[slot] * _dot(s_hist[slot], q)
            q -= alpha[:, None] * y_hist[slot]
            alphas.append(alpha)
        r = q * gamma[:, None]
        for slot, alpha in zip(reversed(newest_first), reversed(alphas), strict=True):
            beta = rho[slot] * _dot(y_hist[slot], r)
            r += s_hist[slot] * (alpha - beta)[:, None]
        step = torch.full((n,), float(lr), dtype=x.dtype, device=x.device)
        if t == 0:
            step = step * (1 / g.abs().sum(1).clamp_min(1e-30)).clamp(max=1.0)
        step = torch.where(g.abs().amax(1) <= tolerance_grad, 0.0, step)
        prev_x, prev_g = x, g
        x = x - step[:, None] * r
        if observe is not None:
            observe(t, x.reshape(shape))
    return x.reshape(shape)
