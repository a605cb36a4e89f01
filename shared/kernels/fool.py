"""Adversarial images with per-sample early stopping, 8-bit exact: the CS231n normalised-gradient
ascent (Szegedy et al. 2014; the reference) and the ε-bounded attacks of the peers (PGD L∞ and L2,
FGSM, MI-FGSM: Madry et al. 2018, Goodfellow et al. 2015, Dong et al. 2018), on the one loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ascent.shared.kernels import attacks
from ascent.shared.kernels.attacks import (
    inside_ball,
    l2_step,
    lattice_l2,
    lattice_linf,
    levels,
    objective_of,
    per_row,
    project_l2,
    project_linf,
    projected,
    signed_step,
    with_momentum,
)
from ascent.shared.kernels.fool_args import check_arguments, labels_tensor, row_seeds
from ascent.shared.kernels.loop import (
    Step,
    ascend,
    auto_max_batch,
    check_images,
    class_tensor,
    model_device,
    normalized_gradient_step,
    num_classes,
    progress_part,
    quantize,
)
from ascent.shared.models import Classifier, autocast


@dataclass(frozen=True)
class FoolResult:
    """Per image: ``images`` N×3×H×W on the 8-bit lattice (inside the ε-ball for ``linf``/``l2``);
    ``fooled`` (bool, decided on that image), ``iterations`` (steps before the model first predicted
    the target; 0 = already did; −1 = never), ``pred_before``/``pred_after`` (class ids, on the 8-bit
    input/output), ``targets`` (the class aimed at, or moved away from when untargeted), ``l2``/``linf``
    (perturbation in [0, 1] pixel units), ``eps`` (the budget, None for ``l2-unbounded``), ``restart``
    (which restart gave the image, 0-based); ``passes`` = image forward+backward passes run."""

    images: Tensor
    fooled: Tensor
    iterations: Tensor
    pred_before: Tensor
    pred_after: Tensor
    targets: Tensor
    l2: Tensor
    linf: Tensor
    passes: int
    eps: Tensor | None = None
    restart: Tensor | None = None


def fool(
    model: Classifier,
    images: Tensor,
    targets: Any,
    lr: float = 1.0,
    max_iters: int = 100,
    extra_iters: int = 2,
    max_batch: int | None = None,
    loss: str = "score",
    precision: str = "fp32",
    norm: str = "l2-unbounded",
    eps: Any = None,
    step_size: float | None = None,
    random_start: bool = False,
    restarts: int = 1,
    momentum: float = 0.0,
    early_stop: bool = True,
    seed: Any = 0,
    labels: Any = None,
    codec: Callable[[Tensor], Tensor] | None = None,
) -> FoolResult:
    """Adversarial images, each pushed until the model predicts its target (or, untargeted, any class
    but its true one) on its 8-bit image, then ``extra_iters`` more steps; images that are done leave
    the batch (``early_stop=False``: every image runs the whole budget and is judged at its end).

    ``targets``: one class id for all, one per image, or None (untargeted: away from ``labels[i]`` when
    given, else from the clean prediction). ``labels``: None or one true class (or None) per image.

    ``norm="l2-unbounded"`` (default): the reference's normalised-gradient ascent, n ← n + lr·g/‖g‖
    in normalised space, no budget; at most ``max_iters`` steps to the first success plus the extra
    steps; the 8-bit rounding is checked when an image is about to leave (if rounding undoes the
    attack, stepping goes on).

    ``norm="linf"`` / ``"l2"``: PGD in the ball of radius ``eps`` (pixel units; a number, or one per
    image) around the 8-bit original: x ← Π(x + α·sign(g)) / Π(x + α·g/‖g‖₂), α = ``step_size``
    (default ε/4), at most ``max_iters`` steps in all. The objective and its gradient are evaluated at
    the iterate's 8-bit image in the ball (``lattice_linf``/``lattice_l2``: for L∞
    |q − x0| ≤ ⌊255ε⌋ levels per pixel, for L2 ‖q − x0‖₂ ≤ ε; rounding that would leave the ball rounds
    towards the original), so every forward is also the success check of exactly what is returned: no
    extra passes. FGSM is ``norm="linf", max_iters=1, step_size=eps``; ``momentum`` μ > 0 is MI-FGSM
    (any norm). ``random_start``: uniform in the ball, drawn from ``seed`` (an int: row i uses its own
    stream; or one seed per image, which makes a batch equal to its images run one at a time).
    ``restarts`` N: images not fooled are attacked again from a new random start (needs
    ``random_start``), up to N times; the first success is kept.

    ``loss``: ``score`` (the raw target logit, the reference), ``ce``/``log_softmax`` (−CE of the
    target: the peers' PGD), ``margin`` (C&W). ``precision="bf16"`` runs the stepping forwards and
    backwards under bf16 autocast; the predictions that decide success stay float32 on the 8-bit image.
    ``max_batch`` caps how many images run through the model at once (None: ``auto_max_batch``).

    ``codec``: what storing does to an 8-bit image (N×3×H×W -> decoded N×3×H×W, e.g. a JPEG round
    trip, ``ascent.shared.codecs.tensor_roundtrip``). Success is then decided on the decoded image,
    which must also be inside the ε-ball; each step's gradient is taken at the decoded image, straight
    through to the iterate (BPDA), and while the codec undoes the attack stepping goes on (as for the
    8-bit check). ``images`` stay the 8-bit images to encode; ``pred_after``, ``l2`` and ``linf``
    are those of their decoded images.
    """
    check_images(images)
    check_arguments(lr, max_iters, extra_iters, restarts, loss, norm, momentum, precision, eps, step_size, random_start)
    bounded = norm != "l2-unbounded"
    device = model_device(model)
    x0 = quantize(images.to(device=device, dtype=torch.float32))
    n = x0.shape[0]
    eps_rows = per_row(eps, n, "eps", device) if bounded else None
    seeds = row_seeds(seed, n)
    classes = num_classes(model)
    untargeted = targets is None
    true = labels_tensor(labels, n, classes, device)
    goal = true.clone() if untargeted else class_tensor(targets, n, classes, "targets", device)
    attack = _Attack(
        model,
        x0,
        goal,
        untargeted,
        auto_max_batch(device, max_batch),
        loss,
        precision,
        norm,
        eps_rows,
        step_size,
        momentum,
        lr,
        max_iters,
        extra_iters,
        early_stop,
        codec,
    )
    if random_start or codec is not None:  # the clean prediction: the stepping forwards are elsewhere
        with torch.no_grad():
            attack.pred_before[:] = attack.predict(x0)
        attack.fill_goal()
    images_out = x0.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=device)
    first_hit = torch.full((n,), -1, dtype=torch.long, device=device)
    pred_after = torch.full((n,), -1, dtype=torch.long, device=device)
    restart_of = torch.zeros(n, dtype=torch.long, device=device)
    todo = torch.arange(n, device=device)
    for r in range(restarts):
        start = None
        if random_start:
            assert eps_rows is not None
            rows_seeds = [(seeds[i] + r * 7919) for i in todo.tolist()]
            start = attacks.random_start(x0[todo], eps_rows[todo], norm, rows_seeds)
        with progress_part(r, 1, restarts):  # a restart that ends the attack early leaves the rest unused
            adv, hit, first, after = attack.run(todo, start)
        images_out[todo], fooled[todo], first_hit[todo], pred_after[todo] = adv, hit, first, after
        restart_of[todo] = r
        todo = todo[~hit]
        if todo.numel() == 0:
            break
    delta = ((images_out if codec is None else codec(images_out)) - x0).flatten(1)
    return FoolResult(
        images=images_out,
        fooled=fooled,
        iterations=first_hit,
        pred_before=attack.pred_before,
        pred_after=pred_after,
        targets=goal,
        l2=delta.norm(dim=1),
        linf=delta.abs().amax(dim=1),
        passes=attack.passes,
        eps=None if eps_rows is None else eps_rows.float(),
        restart=restart_of,
    )


class _Attack:
    """One attack configuration over the batch ``x0``; ``run`` attacks a subset of its rows once."""

    def __init__(
        self,
        model: Classifier,
        x0: Tensor,
        goal: Tensor,
        untargeted: bool,
        max_batch: int | None,
        loss: str,
        precision: str,
        norm: str,
        eps: Tensor | None,
        step_size: float | None,
        momentum: float,
        lr: float,
        max_iters: int,
        extra_iters: int,
        early_stop: bool,
        codec: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.model, self.x0, self.goal, self.untargeted = model, x0, goal, untargeted
        self.max_batch, self.loss, self.precision, self.norm = max_batch, loss, precision, norm
        self.eps, self.step_size, self.momentum, self.lr = eps, step_size, momentum, lr
        self.max_iters, self.extra_iters, self.early_stop = max_iters, extra_iters, early_stop
        self.bounded = norm != "l2-unbounded"
        self.codec = codec
        n, device = x0.shape[0], x0.device
        self.pred_before = torch.full((n,), -1, dtype=torch.long, device=device)
        self.x0_255 = torch.round(x0 * 255)
        self.levels = levels(eps) if eps is not None and norm == "linf" else None
        # With bounded norms in float32 the stepping forward is on the 8-bit image and decides success.
        self.authoritative = self.bounded and precision == "fp32" and codec is None
        self.passes = 0

    def predict(self, x: Tensor) -> Tensor:
        """float32 argmax of the model on x, in chunks of ``max_batch``."""
        return torch.cat([self.model(part).argmax(1) for part in x.split(self.max_batch or x.shape[0])])

    def fill_goal(self) -> None:
        """Untargeted rows without a label move away from their clean prediction."""
        if self.untargeted:
            unknown = self.goal < 0
            self.goal[unknown] = self.pred_before[unknown]

    def succeeded(self, pred: Tensor, rows: Tensor) -> Tensor:
        return pred != self.goal[rows] if self.untargeted else pred == self.goal[rows]

    def judge(self, image: Tensor, rows: Tensor, decoded: bool = False) -> tuple[Tensor, Tensor]:
        """(float32 prediction, success) of 8-bit images of batch rows ``rows`` as stored: after the
        codec (``decoded``: ``image`` is already its output), whose decoded image must also stay inside
        the ε-ball."""
        shown = image if self.codec is None or decoded else self.codec(image)
        with torch.no_grad():
            pred = self.predict(shown)
        ok = self.succeeded(pred, rows)
        if self.codec is not None and self.bounded:
            assert self.eps is not None
            bound = self.levels[rows] if self.levels is not None else self.eps[rows]
            ok &= inside_ball(shown, self.x0_255[rows], self.norm, bound)
        return pred, ok

    def lattice(self, x: Tensor, rows: Tensor) -> Tensor:
        """The 8-bit image of iterate x inside each row's ball."""
        if self.norm == "linf":
            assert self.levels is not None
            return lattice_linf(x, self.x0_255[rows], self.levels[rows])
        assert self.eps is not None
        return lattice_l2(x, self.x0_255[rows], self.eps[rows])

    def step_rule(self) -> Step:
        if not self.bounded:
            step = normalized_gradient_step(self.lr, self.model.std.pow(2))
        else:
            assert self.eps is not None
            alpha = self.eps / 4 if self.step_size is None else torch.full_like(self.eps, self.step_size)
            step = signed_step(alpha) if self.norm == "linf" else l2_step(alpha)
        if self.momentum > 0:
            step = with_momentum(step, self.momentum, self.x0)
        if self.bounded:
            assert self.eps is not None
            eps, x0 = self.eps, self.x0
            ball = project_linf if self.norm == "linf" else project_l2
            step = projected(step, lambda x, rows: ball(x, x0[rows], eps[rows]))
        return step

    def run(self, rows0: Tensor, start: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Attack the rows ``rows0`` of the batch from ``start`` (default: the originals). Returns per
        row: the 8-bit image, success, first iteration that succeeded (−1 never), prediction on it."""
        m = rows0.numel()
        device = self.x0.device
        first_hit = torch.full((m,), -1, dtype=torch.long, device=device)
        pred_after = torch.full((m,), -1, dtype=torch.long, device=device)
        clean_start = start is None and self.codec is None  # with a codec pred_before is known already
        extra, max_iters = self.extra_iters, self.max_iters
        # local row r of this run is row rows0[r] of the batch
        goal_rows = rows0

        def objective(t: int, xa: Tensor, rows: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            batch_rows = goal_rows[rows]
            with autocast(device, self.precision):
                logits = self.model(xa)
            logits = logits.float()
            pred = logits.detach().argmax(1)
            if t == 0 and clean_start:  # the first forward is on the 8-bit original: the clean prediction
                self.pred_before[batch_rows] = pred
                if self.untargeted:
                    unknown = self.goal[batch_rows] < 0
                    self.goal[batch_rows[unknown]] = pred[unknown]
            value = objective_of(self.loss, logits, self.goal[batch_rows], self.untargeted)
            return value, (pred, xa.detach())

        def stop(t: int, aux: tuple[Tensor, Tensor], rows: Tensor) -> Tensor:
            pred, xa = aux
            batch_rows = goal_rows[rows]
            hit = self.succeeded(pred, batch_rows)
            first = first_hit[rows]
            first = torch.where(hit & (first < 0), torch.full_like(first, t), first)
            first_hit[rows] = first
            if self.authoritative:
                pred_after[rows] = pred
                if not self.early_stop:
                    return torch.zeros_like(hit)
                return hit & (t - first >= extra)
            if not self.early_stop:
                return torch.zeros_like(hit)
            candidates = hit & (t - first >= extra)
            settled = torch.zeros_like(hit)
            if bool(candidates.any()):
                # The 8-bit check (float32): only what survives rounding (and the codec: then xa is the
                # decoded image already) counts; otherwise keep stepping.
                decoded = self.codec is not None
                image = xa[candidates] if self.bounded or decoded else quantize(xa[candidates])
                pred_q, ok = self.judge(image, batch_rows[candidates], decoded=decoded)
                settled[candidates] = ok
                pred_after[rows[candidates][ok]] = pred_q[ok]
            if self.bounded:
                return settled
            gave_up = (first < 0) & (t >= max_iters)
            return settled | gave_up

        if self.bounded:
            iters = max_iters
        else:
            iters = max_iters + extra if self.early_stop else max_iters
        x_start = self.x0[rows0] if start is None else start
        x, passes = ascend(
            x_start,
            objective,
            self.step_rule_for(rows0),
            iters,
            stop,
            project=None if self.bounded else (lambda t, xa: xa.clamp_(0, 1)),
            max_batch=self.max_batch,
            evaluate_at=self.evaluation_point(goal_rows),
        )
        self.passes += passes
        adv = self.lattice(x, rows0) if self.bounded else quantize(x)
        if self.codec is not None:  # success is the stored image's: judged once more, as it is returned
            pred_after, ok = self.judge(adv, rows0)
            return adv, ok, first_hit, pred_after
        unsettled = pred_after < 0
        if bool(unsettled.any()):
            with torch.no_grad():
                pred_after[unsettled] = self.predict(adv[unsettled])
        return adv, self.succeeded(pred_after, rows0), first_hit, pred_after

    def evaluation_point(self, goal_rows: Tensor) -> Callable[[Tensor, Tensor], Tensor] | None:
        """Where each step's forward and gradient are taken (straight through to the iterate): ε-attacks
        at the iterate's 8-bit image; with a codec at that image as stored and decoded (BPDA: the
        gradient of what the codec returns, so the attack climbs the objective as the codec sees it)."""
        codec = self.codec
        if not self.bounded and codec is None:
            return None

        def point(xa: Tensor, rows: Tensor) -> Tensor:
            image = self.lattice(xa, goal_rows[rows]) if self.bounded else quantize(xa)
            return image if codec is None else codec(image)

        return point

    def step_rule_for(self, rows0: Tensor) -> Step:
        """The step rule on local rows (``ascend`` numbers the rows of this run from 0)."""
        step = self.step_rule()

        def local(t: int, x: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
            return step(t, x, grad, rows0[rows])

        return local
