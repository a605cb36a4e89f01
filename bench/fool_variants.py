"""Candidate kernel changes for ``fool``, measured by patching them in *this process only* (shared/ is
not edited): each variant runs the same 25 images → class 6, interleaved, best of ``--trials``.

- ``current``: shared.kernels as it is (channels_last, auto max_batch: 8 on the CPU, balanced chunks,
  raw score, float32).
- ``nchw``: the layout before channels_last became the default (weights and inputs NCHW). oneDNN's
  NCHW max-pooling is ~15× slower than NHWC on this CPU.
- ``split``: the chunking before commit 0744f64 (``rows.split``: 25 → 8+8+8+1, a lone padded chunk).
- ``mb4``, ``mb16``: max_batch 4 / 16.
- ``bf16``: ``precision="bf16"`` (bf16 autocast while stepping; the 8-bit check stays float32).
- ``ls``: ``loss="log_softmax"`` (the target's log-probability, as PGD's −CE; not the default).
- ``ls-bf16``: both.
- ``nopad-native``: no singleton padding, oneDNN off (the native convolution is bitwise
  batch-independent even at batch 1, checked below).
- ``extra0``: ``extra_iters=0`` (diagnostic, not a proposal: the same work as the plain loop).

``variant_runner`` is also used by peer_torchattacks.py (``--variants``) to time variants against
torchattacks in one process. CPU figures; on a GPU only ``nchw``, ``bf16`` and ``ls`` are meaningful.
The patches themselves are ``bench.variants.patched``.
"""

from __future__ import annotations

import statistics

import torch

import ascent.shared.kernels as K
from bench import common, variants
from bench.bench_fool import pass_fn

# name: (patch kwargs, fool kwargs)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "current": ({}, {}),
    "nchw": ({"nchw": True}, {}),
    "split": ({"split": True}, {}),
    "mb4": ({}, {"max_batch": 4}),
    "mb16": ({}, {"max_batch": 16}),
    "bf16": ({}, {"precision": "bf16"}),
    "ls": ({}, {"loss": "log_softmax"}),
    "ls-bf16": ({}, {"loss": "log_softmax", "precision": "bf16"}),
    "nopad-native": ({"nopad": True, "nchw": True, "mkldnn": False}, {}),
    "extra0": ({}, {"extra_iters": 0}),
}


def variant_runner(name: str, device: torch.device, images: torch.Tensor, target: int = common.TARGET_CLASS, **fool_kw):
    """A zero-argument callable running ``fool`` as variant ``name`` (on its own model copy, in the
    variant's memory layout, so nothing leaks into other models of the process)."""
    patch, kw = VARIANTS[name]
    model = variants.layout(common.load_model(device), patch.get("nchw", False))

    def go():
        with variants.patched(**patch):
            return K.fool(model, images, target, **{**fool_kw, **kw})

    return go


def batch_independent(model, images, mkldnn: bool) -> bool:
    """Is a lone image's forward+backward (unpadded) bitwise what it gets inside a batch of 3?"""
    with variants.patched(nopad=True, nchw=not mkldnn, mkldnn=mkldnn):
        outs = []
        for x in (images[:1], images[:3]):
            xa = x.clone().requires_grad_(True)
            logits = model(xa)
            (g,) = torch.autograd.grad(logits[:, common.TARGET_CLASS].sum(), xa)
            outs.append((logits[0].detach(), g[0]))
    return torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def pass_table(device, images, repeat: int) -> common.Table:
    """Best forward+backward time per batch size (through the Classifier, padded as it pads): NCHW
    vs channels_last (the default), and unpadded native convolution; round-robin."""
    cl = common.load_model(device)
    base = variants.layout(common.load_model(device), nchw=True)
    sizes = (1, 2, 4, 8, 16)
    fns = {}
    for b in sizes:
        for tag, model, patch in (
            ("nchw", base, {"nchw": True}),
            ("cl", cl, {}),
            ("native", base, {"nopad": True, "nchw": True, "mkldnn": False}),
        ):
            fn = pass_fn(model, images, b, common.TARGET_CLASS, device)

            def once(fn=fn, patch=patch):
                with variants.patched(**patch):
                    fn()

            fns[(tag, b)] = once
    t = common.best_times(fns, device, repeat)
    rows = [
        [
            b,
            t[("nchw", b)] * 1e3,
            b / t[("nchw", b)],
            t[("cl", b)] * 1e3,
            b / t[("cl", b)],
            t[("nchw", b)] / t[("cl", b)],
            t[("native", b)] * 1e3,
        ]
        for b in sizes
    ]
    return common.Table(
        f"forward+backward per batch size (best of {repeat}, round-robin); batch 1 is padded to 2 "
        "except for the native (oneDNN off, unpadded) column",
        ["batch", "NCHW ms", "NCHW img/s", "channels_last ms", "CL img/s", "CL speed-up", "native ms"],
        rows,
    )


def main(argv: list[str] | None = None) -> common.Report:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--pass-repeat", type=int, default=5)
    args = parser.parse_args(argv)
    device = common.pick_device(args.device)
    quiet = common.quiet_seconds(args, device)
    images, _ = common.load_val25(device)
    n = images.shape[0]
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "current" not in names:
        names.insert(0, "current")
    runners = {name: variant_runner(name, device, images) for name in names}
    runners["current"]()  # warm-up; the first trial warms the others (best of trials is kept)
    best = common.interleaved(
        {name: lambda run=run: common.measure_settled(run, device, quiet) for name, run in runners.items()},
        args.trials,
    )

    base = best["current"]
    ref = base.out
    rows = []
    for name in names:
        t = best[name]
        r = t.out
        done = [int(i) for i in r.iterations if i >= 0]
        same = torch.equal(r.iterations, ref.iterations) and torch.equal(r.images, ref.images)
        rows.append(
            [
                name,
                t.wall,
                base.wall / t.wall,
                f"{int(r.fooled.sum())}/{n}",
                statistics.median(done) if done else "-",
                max(done) if done else "-",
                r.passes,
                "yes" if same else "no",
                f"{t.others:.0%}",
            ]
        )
    report = common.Report(
        bench="fool-variants",
        title=f"fool kernel variants (patched in-process), {n} images → class {common.TARGET_CLASS}",
        env=common.environment(device),
        settings={"trials": args.trials},
    )
    report.tables.append(
        common.Table(
            "variants (best of trials, interleaved); 'same results' = bitwise the current kernel's images",
            [
                "variant",
                "wall s",
                "speed-up vs current",
                "fooled",
                "median it",
                "max it",
                "passes",
                "same results",
                "others' CPU",
            ],
            rows,
        )
    )
    variants.speedups(report, {name: t.wall for name, t in best.items()}, "current")
    if device.type == "cpu":
        common.settle(quiet)
        report.tables.append(pass_table(device, images, args.pass_repeat))
        for mk in (True, False):
            model = variants.layout(common.load_model(device), nchw=not mk)
            ok = batch_independent(model, images, mk)
            report.notes.append(
                f"oneDNN {'on' if mk else 'off'}: an unpadded lone image gets bitwise its in-batch logits "
                f"and gradient: {ok}"
            )
    return common.finish(report, args)


if __name__ == "__main__":
    main()
