"""torchattacks' targeted PGD-L2 against our ``fool`` kernel, timed interleaved in one process.

Run by bench_fool.py in a subprocess whose PYTHONPATH holds ``$ASCENT_PEERS`` (default
/tmp/ascent-peers, filled with ``pip install --no-deps --target /tmp/ascent-peers torchattacks scipy``:
torchattacks pins requests~=2.25, which would break moto in the project venv). Writes JSON (--json).

Equivalent settings:
- torchattacks works on [0, 1] images with the normalisation inside the model and steps
  ``x ← x + α g_x/‖g_x‖``. Our kernel (and the notebook) step in normalised space,
  ``n ← n + lr g_n/‖g_n‖`` with n = (x − mean)/std, i.e. ``Δx = std·Δn``: a pixel-space step of L2
  length ``lr·‖std·ĝ_n‖`` ∈ lr·[0.224, 0.229]. So α = lr·√(mean std²) = 0.2260·lr (equal to ±1.3 %);
  the directions differ by the per-channel 1/std² weighting (≤ 4.6 % between channels).
- The peer attacks the network as its users hold it: torchvision's SqueezeNet 1.1 with the same
  weights behind a normalising wrapper, NCHW, no padding (not our Classifier, whose channels_last
  layout is one of our optimisations).
- eps = 1e6 (L2 in [0, 1] pixel units): never binds (a whole 224² image has L2 ≤ 388).
- random_start=False (we start from the image itself, as the reference does).
- Its objective is −CE(target) (PGD's targeted loss), ours the raw target logit; both stop-free in
  its case: PGD always runs all ``steps`` on every image (no early stopping).
- Step budget: the smallest ``steps`` whose fooling rate (its float outputs) reaches ours. PGD with
  s steps is exactly the first s steps of a longer run (deterministic, non-binding eps), so one run of
  ``--max-iters`` steps with a recording model wrapper gives the rate after every s.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

from bench import common


def trunc8(x: torch.Tensor) -> torch.Tensor:
    """What torchattacks' ``to_type(x, "int")`` / ``save`` stores: ``(x*255).type(uint8)`` (truncation)."""
    return (x * 255).type(torch.uint8).float() / 255


def round8(x: torch.Tensor) -> torch.Tensor:
    """What a PNG writer that rounds (ours) stores."""
    return torch.round(x * 255) / 255


class Recorder(nn.Module):
    """Wraps the classifier; records the prediction of every call (call k sees the image after k steps)
    and, on the steps in ``grid``, the predictions of its 8-bit truncation and rounding."""

    def __init__(self, model: nn.Module, grid: set[int]):
        super().__init__()
        self.model, self.grid = model, grid
        self.reset()

    def reset(self) -> None:
        self.k, self.float_preds, self.q_preds = 0, [], {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        self.float_preds.append(logits.detach().argmax(1))
        if self.k in self.grid:
            with torch.no_grad():
                xd = x.detach()
                self.q_preds[self.k] = (self.model(trunc8(xd)).argmax(1), self.model(round8(xd)).argmax(1))
        self.k += 1
        return logits


class Normalized(nn.Module):
    """A plain network behind ImageNet normalisation: [0, 1] images in, logits out."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def chunks(n: int, batch: int | None):
    size = batch or n
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser("torchattacks PGD-L2 vs fool")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None, help="images per attack call (default: all)")
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--max-iters", type=int, default=100)
    parser.add_argument("--extra-iters", type=int, default=2)
    parser.add_argument("--steps-max", type=int, default=200)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument(
        "--variants", default="current", help="ours as these bench/fool_variants.py variants (comma list)"
    )
    args = parser.parse_args(argv)
    try:
        import torchattacks
    except ImportError as exc:
        common.log(f"torchattacks is not importable ({exc}); set ASCENT_PEERS")
        return 3

    from ascent.shared.kernels import auto_max_batch, fool

    device = common.pick_device(args.device)
    model = common.load_model(device)
    images, labels = common.load_val25(device, args.repeat)
    n, target = images.shape[0], common.TARGET_CLASS
    auto = auto_max_batch(device)
    std = torch.tensor([0.229, 0.224, 0.225])
    alpha = args.lr * math.sqrt(float(std.pow(2).mean()))
    eps = 1e6
    parts = chunks(n, args.batch)

    peer_model = Normalized(common.raw_network(device), model.mean, model.std).eval()

    def make(net: nn.Module, steps: int):
        atk = torchattacks.PGDL2(net, eps=eps, alpha=alpha, steps=steps, random_start=False)
        atk.set_mode_targeted_by_function(lambda inputs, labels: torch.full_like(labels, target), quiet=True)
        return atk

    def peer(steps: int) -> torch.Tensor:
        atk = make(peer_model, steps)
        return torch.cat([atk(images[p], labels[p]) for p in parts])

    from bench.fool_variants import variant_runner

    fool_kw = dict(lr=args.lr, max_iters=args.max_iters, extra_iters=args.extra_iters)
    names = [v.strip() for v in args.variants.split(",") if v.strip()] or ["current"]
    ours = {
        name: (
            (lambda: fool(model, images, target, **fool_kw))
            if name == "current"
            else variant_runner(name, device, images, **fool_kw)
        )
        for name in names
    }

    common.log(f"torchattacks {torchattacks.__version__}: alpha={alpha:.5f}, eps={eps:g}, batch={args.batch}")
    # warm-up, and our fooling rate (per variant)
    fool(model, images[: min(n, 4)], target, max_iters=3, extra_iters=0)
    ours_fooled = {name: int(run().fooled.sum()) for name, run in ours.items()}
    goal = max(ours_fooled.values())

    # search: the rate after every s steps from one run (the prefix property), 8-bit on a grid
    def search(budget: int, start: torch.Tensor) -> tuple[list[torch.Tensor], dict, torch.Tensor]:
        grid = set(range(0, budget + 1, 5))
        # eval(): torchattacks "restores" the wrapper's training flag after the attack, and a fresh
        # module is in training mode, which would switch SqueezeNet's dropout on for everything after
        rec = Recorder(peer_model, grid).eval()
        floats: list[list[torch.Tensor]] = []
        qs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        finals = []
        for p in parts:
            rec.reset()
            adv = make(rec, budget)(start[p], labels[p])
            with torch.no_grad():  # the image after the last step
                rec.float_preds.append(peer_model(adv).argmax(1))
                rec.q_preds[budget] = (peer_model(trunc8(adv)).argmax(1), peer_model(round8(adv)).argmax(1))
            floats.append(rec.float_preds)
            for k, v in rec.q_preds.items():
                qs.setdefault(k, []).append(v)
            finals.append(adv)
        per_step = [torch.cat([f[s] for f in floats]) for s in range(budget + 1)]
        q = {k: (torch.cat([a for a, _ in v]), torch.cat([b for _, b in v])) for k, v in qs.items()}
        return per_step, q, torch.cat(finals)

    budget = min(args.steps_max, args.max_iters)
    common.log(f"searching the step budget (≤ {budget} steps, one recorded run) ...")
    per_step, q, adv_end = search(budget, images)
    assert not peer_model.training, "the search left the model in training mode (dropout on)"
    counts = [int((p == target).sum()) for p in per_step]
    offset, notes = 0, []
    if max(counts) < goal and args.steps_max > budget:
        # continue from where it stopped (approximately the same trajectory; the timed run checks it)
        more = args.steps_max - budget
        common.log(f"not reached in {budget}; continuing to {args.steps_max} steps ...")
        per2, q2, _ = search(more, adv_end)
        counts += [int((p == target).sum()) for p in per2[1:]]
        q.update({budget + k: v for k, v in q2.items()})
        offset = budget
        notes.append(f"torchattacks search continued past {budget} steps from its state at {budget}")

    def budget_for(fooled: int) -> tuple[int, bool]:
        reached = [s for s, c in enumerate(counts) if c >= fooled]
        return max(1, reached[0] if reached else len(counts) - 1), bool(reached)

    def first_q(i: int, fooled: int) -> int | None:
        hits = [k for k in sorted(q) if int((q[k][i] == target).sum()) >= fooled]
        return hits[0] if hits else None

    def describe(s: int | None) -> str:
        return f"{s} steps" if s is not None else f"more than {len(counts) - 1} steps"

    # timed, interleaved: each variant of ours and torchattacks at the budget matching its rate
    quiet = common.quiet_seconds(args, device)
    steps_of = {name: budget_for(ours_fooled[name])[0] for name in names}
    best_ours: dict[str, common.Timing] = {}
    best_peer: dict[int, common.Timing] = {}
    for trial in range(args.trials):
        timed_this_trial: set[int] = set()
        for name in names:
            t = common.measure_settled(ours[name], device, quiet)
            if name not in best_ours or t.wall < best_ours[name].wall:
                best_ours[name] = t
            steps = steps_of[name]
            if steps not in timed_this_trial:  # variants needing the same budget share its timing
                timed_this_trial.add(steps)
                t = common.measure_settled(lambda steps=steps: peer(steps), device, quiet)
                if steps not in best_peer or t.wall < best_peer[steps].wall:
                    best_peer[steps] = t
            bo, bp = best_ours[name], best_peer[steps]
            common.log(
                f"trial {trial} {name}: ours {bo.wall:.2f}s (others {bo.others:.0%}), "
                f"torchattacks ({steps} steps) {bp.wall:.2f}s (others {bp.others:.0%})"
            )

    results = []
    for name in names:
        steps, reached = budget_for(ours_fooled[name])
        with torch.no_grad():
            adv = best_peer[steps].out
            pf = torch.cat([peer_model(adv[p]).argmax(1) for p in chunks(n, auto)]) == target
            pt = torch.cat([peer_model(trunc8(adv[p])).argmax(1) for p in chunks(n, auto)]) == target
            pr = torch.cat([peer_model(round8(adv[p])).argmax(1) for p in chunks(n, auto)]) == target
        if int(pf.sum()) != counts[steps]:
            notes.append(
                f"torchattacks timed run fooled {int(pf.sum())}, the recorded search said {counts[steps]} at "
                f"{steps} steps"
            )
        fooled = ours_fooled[name]
        notes.append(
            f"ours={name} ({fooled}/{n}): smallest torchattacks budget whose float outputs reach it: {steps} "
            f"steps{'' if reached else ' (NOT reached: its best within the budget)'}; after uint8 truncation "
            f"(its save): {describe(first_q(0, fooled))}, after rounding: {describe(first_q(1, fooled))} "
            "(8-bit checked every 5 steps)"
        )
        results.append(
            {
                "variant": name,
                "steps": steps,
                "reached": reached,
                "passes": steps * n,
                "rate_float": int(pf.sum()) / n,
                "fooled_float": int(pf.sum()),
                "survive_trunc": int((pf & pt).sum()),
                "survive_round": int((pf & pr).sum()),
                "ours_fooled": fooled,
                "ours_rate": fooled / n,
                "t_ours": best_ours[name].wall,
                "t_peer": best_peer[steps].wall,
                "others_ours": best_ours[name].others,
                "others_peer": best_peer[steps].others,
            }
        )
    curve = []
    for k in sorted(q):
        if k <= max(steps_of.values()) + 10 or k % 20 == 0 or k == len(counts) - 1:
            curve.append([k, counts[k], int((q[k][0] == target).sum()), int((q[k][1] == target).sum())])
    notes.insert(
        0,
        f"torchattacks {torchattacks.__version__} PGDL2: alpha = lr·√mean(std²) = {alpha:.4f} (our lr "
        f"{args.lr:g} in normalised space), eps {eps:g} (never binds), random_start=False, batch "
        f"{args.batch or n}",
    )
    out = {
        "available": True,
        "version": torchattacks.__version__,
        "alpha": alpha,
        "eps": eps,
        "batch": args.batch or n,
        "n": n,
        "search_offset": offset,
        "results": results,
        "curve": curve,
        "notes": notes,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
