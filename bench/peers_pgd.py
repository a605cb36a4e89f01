"""ε-bounded attacks side by side in one process: ascent's ``fool`` vs torchattacks, Foolbox 3 and ART.

At identical settings (targeted → class 6, no random start, batch 8 on the CPU): PGD L∞ (ε 8/255,
step 2/255, 10 steps), PGD L2 (ε 3.0, step 0.75, 10 steps), FGSM (ε 8/255) and MI-FGSM (ε 8/255, step
2/255, 10 steps, μ 1.0), on the 25 val images and on ``--repeat`` copies of them aimed at
``--targets`` in turn (64+ images). Each method is timed interleaved with the others, best of
``--trials``; success is counted after 8-bit saving: ours as returned (on the lattice, inside the
ball), torchattacks after its own ``save`` (``(x·255).type(uint8)``: truncation), Foolbox and ART after
rounding (they have no saving of their own).

The peers attack the network as their users hold it: torchvision's SqueezeNet 1.1 with the same
weights behind a normalising wrapper, NCHW; one extra row gives torchattacks PGD on our channels_last
``Classifier`` to separate the layout from the loop. Ours runs with its defaults otherwise: per-sample
early stopping with 2 extra steps, the 8-bit ball, ``loss="ce"`` (the peers' PGD loss).

The peers live in their own venv (``$ASCENT_PEERS_PYTHON``, default ``.peers-venv/bin/python``): run
from the project venv, this script re-runs itself there with ``.ci/typecheck`` (the ``ascent``
package as links) and the repository on PYTHONPATH. A peer that cannot be imported is reported as such.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import (
    REPO,
    TARGET_CLASS,
    Report,
    Table,
    base_parser,
    environment,
    finish,
    load_model,
    load_val25,
    log,
    pick_device,
    wait_for_quiet,
)

PEERS_PYTHON = os.environ.get("ASCENT_PEERS_PYTHON", str(REPO / ".peers-venv" / "bin" / "python"))
LINF, LINF_STEP, STEPS = 8 / 255, 2 / 255, 10
L2, L2_STEP = 3.0, 0.75
BATCH = 8
COLUMNS = ["set", "attack", "library", "images", "success after saving", "wall s", "images/s", "wall / ours", "8-bit"]


def trunc8(x: torch.Tensor) -> torch.Tensor:
    """torchattacks' ``save``/``to_type(x, "int")``: ``(x·255).type(uint8)`` (truncation)."""
    return (x * 255).type(torch.uint8).float() / 255


def round8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255) / 255


def peer_network(model: Any, device: torch.device) -> torch.nn.Module:
    """torchvision's SqueezeNet 1.1 (same weights) behind ImageNet normalisation, NCHW, eval mode."""
    from bench.common import raw_network
    from bench.peer_torchattacks import Normalized

    return Normalized(raw_network(device), model.mean, model.std).eval()


def chunked(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch: int = BATCH):
    def run(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(images[i : i + batch], targets[i : i + batch]) for i in range(0, len(images), batch)])

    return run


def ours(model: Any, **settings: Any):
    from ascent.shared.kernels import fool

    def run(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return fool(model, images, targets.tolist(), loss="ce", **settings).images

    return run


def torchattacks_methods(net: torch.nn.Module, classifier: Any) -> dict[str, Callable]:
    import torchattacks

    def make(cls: Any, model: torch.nn.Module, **kw: Any):
        def run(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            atk = cls(model, **kw)
            atk.set_mode_targeted_by_function(lambda inputs, labels: targets, quiet=True)
            return atk(images, targets)

        return chunked(run)

    pgd = {"eps": LINF, "alpha": LINF_STEP, "steps": STEPS, "random_start": False}
    return {
        "linf": make(torchattacks.PGD, net, **pgd),
        "linf-channels-last": make(torchattacks.PGD, classifier, **pgd),
        "l2": make(torchattacks.PGDL2, net, eps=L2, alpha=L2_STEP, steps=STEPS, random_start=False),
        "fgsm": make(torchattacks.FGSM, net, eps=LINF),
        "mifgsm": make(torchattacks.MIFGSM, net, eps=LINF, alpha=LINF_STEP, steps=STEPS, decay=1.0),
    }


def foolbox_methods(net: torch.nn.Module) -> dict[str, Callable]:
    import foolbox as fb

    fmodel = fb.PyTorchModel(net, bounds=(0, 1))

    def make(attack: Any, eps: float):
        def run(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            criterion = fb.criteria.TargetedMisclassification(targets)
            _, clipped, _ = attack(fmodel, images, criterion, epsilons=[eps])
            return clipped[0]

        return chunked(run)

    return {
        "linf": make(fb.attacks.LinfPGD(abs_stepsize=LINF_STEP, steps=STEPS, random_start=False), LINF),
        "l2": make(fb.attacks.L2PGD(abs_stepsize=L2_STEP, steps=STEPS, random_start=False), L2),
    }


def art_methods(net: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, Callable]:
    import numpy as np
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    estimator = PyTorchClassifier(
        model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=shape, nb_classes=1000, clip_values=(0.0, 1.0)
    )

    def make(norm: Any, eps: float, step: float):
        attack = ProjectedGradientDescent(
            estimator,
            norm=norm,
            eps=eps,
            eps_step=step,
            max_iter=STEPS,
            targeted=True,
            num_random_init=0,
            batch_size=BATCH,
            verbose=False,
        )

        def run(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            adv = attack.generate(x=images.cpu().numpy(), y=targets.cpu().numpy())
            return torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(images.device)

        return run

    return {"linf": make(np.inf, LINF, LINF_STEP), "l2": make(2, L2, L2_STEP)}


def reexec_in_peers_venv(argv: list[str]) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / ".ci" / "typecheck"), str(REPO), env.get("PYTHONPATH", "")])
    log(f"re-running in the peers venv: {PEERS_PYTHON}")
    return subprocess.run([PEERS_PYTHON, "-m", "bench.peers_pgd", *argv], cwd=REPO, env=env).returncode


def main(argv: list[str] | None = None) -> Report | int:
    parser = base_parser(__doc__.splitlines()[0], quiet_wait=20.0)
    parser.add_argument("--trials", type=int, default=2, help="interleaved timed rounds; best is kept")
    parser.add_argument("--repeat", type=int, default=3, help="the larger set: val25 × K (75 images)")
    parser.add_argument("--targets", default="6,100,300", help="targets of the copies, in turn")
    parser.add_argument("--sets", default="val25,repeated", help="which sets to run")
    parser.add_argument(
        "--repeated-attacks", default="linf", help="attacks run on the larger set (comma list; default PGD L∞ only)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N val images (a smoke run)")
    args = parser.parse_args(argv)
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        if Path(PEERS_PYTHON).is_file() and not os.environ.get("ASCENT_PEERS_REEXEC"):
            os.environ["ASCENT_PEERS_REEXEC"] = "1"
            return reexec_in_peers_venv(sys.argv[1:] if argv is None else argv)
    device = pick_device(args.device)
    model = load_model(device)
    net = peer_network(model, device)
    methods: dict[str, dict[str, Callable]] = {"ascent": {}}
    unavailable: dict[str, str] = {}
    linf = {"norm": "linf", "eps": LINF, "step_size": LINF_STEP, "max_iters": STEPS}
    methods["ascent"] = {
        "linf": ours(model, **linf),
        "l2": ours(model, norm="l2", eps=L2, step_size=L2_STEP, max_iters=STEPS),
        "fgsm": ours(model, norm="linf", eps=LINF, step_size=LINF, max_iters=1, extra_iters=0),
        "mifgsm": ours(model, **linf, momentum=1.0),
    }
    for peer, build in (
        ("torchattacks", lambda: torchattacks_methods(net, model)),
        ("foolbox", lambda: foolbox_methods(net)),
        ("art", lambda: art_methods(net, (3, 224, 224))),
    ):
        try:
            methods[peer] = build()
        except ImportError as exc:
            unavailable[peer] = f"{type(exc).__name__}: {exc}"
            log(f"{peer}: not available ({exc})")
    versions = {"ascent": "this commit"}
    for peer, module in (("torchattacks", "torchattacks"), ("foolbox", "foolbox"), ("art", "art")):
        if peer in methods:
            versions[peer] = __import__(module).__version__

    val25, _ = load_val25(device)
    val25 = val25[: args.limit]
    targets_list = [int(t) for t in args.targets.split(",")]
    sets = {}
    if "val25" in args.sets:
        sets["val25"] = (val25, torch.full((len(val25),), TARGET_CLASS, dtype=torch.long, device=device))
    if "repeated" in args.sets:
        images = val25.repeat(args.repeat, 1, 1, 1)
        targets = torch.tensor(
            [targets_list[i % len(targets_list)] for i in range(args.repeat) for _ in range(len(val25))], device=device
        )
        sets[f"val25×{args.repeat}"] = (images, targets)

    # warm-up: oneDNN primitives and allocator, every method once on a few images
    for fns in methods.values():
        for fn in fns.values():
            fn(val25[:2], torch.full((2,), TARGET_CLASS, dtype=torch.long, device=device))

    def success(adv: torch.Tensor, targets: torch.Tensor, save: Callable) -> int:
        with torch.no_grad():
            preds = torch.cat([model(save(adv[i : i + BATCH])).argmax(1) for i in range(0, len(adv), BATCH)])
        return int((preds == targets).sum())

    saving = {"ascent": lambda x: x, "torchattacks": trunc8, "foolbox": round8, "art": round8}
    rows, metrics = [], []
    for set_name, (images, targets) in sets.items():
        n = len(images)
        best: dict[tuple[str, str], float] = {}
        outputs: dict[tuple[str, str], torch.Tensor] = {}
        chosen = None if set_name == "val25" else {a.strip() for a in args.repeated_attacks.split(",")}
        for trial in range(args.trials):
            if device.type == "cpu" and args.quiet_wait > 0:
                wait_for_quiet(max_wait=args.quiet_wait)
            for peer, fns in methods.items():
                for attack, fn in fns.items():
                    if chosen is not None and attack.split("-")[0] not in chosen:
                        continue
                    start = time.perf_counter()
                    adv = fn(images, targets)
                    wall = time.perf_counter() - start
                    key = (peer, attack)
                    if wall < best.get(key, float("inf")):
                        best[key], outputs[key] = wall, adv
                    log(f"{set_name} trial {trial}: {peer} {attack} {wall:.2f}s")
        for (peer, attack), wall in best.items():
            adv = outputs[(peer, attack)]
            ok = success(adv, targets, saving[peer])
            exact = bool(torch.equal(adv, round8(adv)))
            ours_wall = best[("ascent", attack.split("-")[0])]
            rows.append([set_name, attack, peer, n, f"{ok}/{n}", wall, n / wall, ours_wall and wall / ours_wall, exact])
        for attack in methods["ascent"]:
            if ("ascent", attack) not in best:
                continue
            ours_ok = success(outputs[("ascent", attack)], targets, saving["ascent"])
            for peer in ("torchattacks", "foolbox", "art"):
                if (peer, attack) not in best:
                    continue
                ratio = best[(peer, attack)] / best[("ascent", attack)]
                theirs = success(outputs[(peer, attack)], targets, saving[peer])
                goal = attack == "linf" and set_name == "val25"
                metrics.append(
                    (
                        f"{set_name} {attack}: ours vs {peer} images/s (success after saving ours / theirs)",
                        f"{ratio:.2f}× ({ours_ok}/{n} vs {theirs}/{n})",
                        "≥ 2× and ≥ their success" if goal else "",
                        (ratio >= 2 and ours_ok >= theirs) if goal else None,
                    )
                )
    report = Report(
        bench="peers_pgd",
        title="ε-bounded attacks vs torchattacks, Foolbox, ART (one process, interleaved)",
        env=environment(device),
        settings={
            "linf": f"ε 8/255, step 2/255, {STEPS} steps",
            "l2": f"ε {L2:g}, step {L2_STEP:g}, {STEPS} steps",
            "fgsm": "ε 8/255",
            "mifgsm": f"ε 8/255, step 2/255, {STEPS} steps, μ 1",
            "batch": BATCH,
            "trials": args.trials,
            "targets": f"val25 → {TARGET_CLASS}; copies → {args.targets}",
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        },
    )
    for name, value, target, met in metrics:
        report.metric(name, value, target, met)
    report.tables.append(
        Table(
            "every method (best of the trials): success after 8-bit saving, wall, images/s",
            COLUMNS,
            rows,
        )
    )
    report.notes += [f"{peer} not measured: {why}" for peer, why in unavailable.items()]
    return finish(report, args)


if __name__ == "__main__":
    result = main()
    sys.exit(result if isinstance(result, int) else 0)
