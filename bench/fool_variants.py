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
"""

from __future__ import annotations

import statistics
import sys
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import ascent.shared.kernels as K
from ascent.shared.models import Classifier
from bench.common import (
    TARGET_CLASS,
    Report,
    Table,
    Timing,
    base_parser,
    environment,
    finish,
    load_model,
    load_val25,
    log,
    measure_settled,
    pick_device,
    wait_for_quiet,
)


@contextmanager
def patched(split=False, nopad=False, mkldnn=None, nchw=False):
    saved_chunks, saved_prepare, saved_mk = (
        K._balanced_chunks,
        Classifier._prepare,
        torch.backends.mkldnn.enabled,
    )
    try:
        if split:
            K._balanced_chunks = lambda rows, max_batch: rows.split(max_batch or int(rows.numel()))
        if nopad:
            Classifier._prepare = lambda self, inputs: inputs.contiguous(
                memory_format=torch.contiguous_format if nchw else torch.channels_last
            )
        elif nchw:
            Classifier._prepare = lambda self, inputs: saved_prepare(self, inputs).contiguous()
        if mkldnn is not None:
            torch.backends.mkldnn.enabled = mkldnn
        yield
    finally:
        K._balanced_chunks, Classifier._prepare = saved_chunks, saved_prepare
        torch.backends.mkldnn.enabled = saved_mk


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


def _layout(model: Classifier, nchw: bool) -> Classifier:
    return model.to(memory_format=torch.contiguous_format) if nchw else model


def variant_runner(name: str, device: torch.device, images: torch.Tensor, target: int = TARGET_CLASS, **fool_kw):
    """A zero-argument callable running ``fool`` as variant ``name`` (on its own model copy, in the
    variant's memory layout, so nothing leaks into other models of the process)."""
    patch, kw = VARIANTS[name]
    model = _layout(load_model(device), patch.get("nchw", False))

    def go():
        with patched(**patch):
            return K.fool(model, images, target, **{**fool_kw, **kw})

    return go


def batch_independent(model, images, mkldnn: bool) -> bool:
    """Is a lone image's forward+backward (unpadded) bitwise what it gets inside a batch of 3?"""
    with patched(nopad=True, nchw=not mkldnn, mkldnn=mkldnn):
        outs = []
        for x in (images[:1], images[:3]):
            xa = x.clone().requires_grad_(True)
            logits = model(xa)
            (g,) = torch.autograd.grad(logits[:, TARGET_CLASS].sum(), xa)
            outs.append((logits[0].detach(), g[0]))
    return torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def pass_table(device, images, repeat: int) -> Table:
    """Best forward+backward time per batch size (through the Classifier, padded as it pads): NCHW
    vs channels_last (the default), and unpadded native convolution; round-robin."""
    from bench.bench_fool import best_times, pass_fn

    cl = load_model(device)
    base = _layout(load_model(device), nchw=True)
    sizes = (1, 2, 4, 8, 16)
    fns = {}
    for b in sizes:
        for tag, model, patch in (
            ("nchw", base, {"nchw": True}),
            ("cl", cl, {}),
            ("native", base, {"nopad": True, "nchw": True, "mkldnn": False}),
        ):
            fn = pass_fn(model, images, b, TARGET_CLASS, device)

            def once(fn=fn, patch=patch):
                with patched(**patch):
                    fn()

            fns[(tag, b)] = once
    t = best_times(fns, device, repeat)
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
    return Table(
        f"forward+backward per batch size (best of {repeat}, round-robin); batch 1 is padded to 2 "
        "except for the native (oneDNN off, unpadded) column",
        ["batch", "NCHW ms", "NCHW img/s", "channels_last ms", "CL img/s", "CL speed-up", "native ms"],
        rows,
    )


def main(argv: list[str] | None = None) -> Report:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    parser.add_argument("--pass-repeat", type=int, default=5)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    images, _ = load_val25(device)
    n = images.shape[0]
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "current" not in names:
        names.insert(0, "current")
    runners = {name: variant_runner(name, device, images) for name in names}
    runners["current"]()  # warm-up; the first trial warms the others (best of trials is kept)
    best: dict[str, Timing] = {}
    for trial in range(args.trials):
        for name in names:
            t = measure_settled(runners[name], device, args.quiet_wait if device.type == "cpu" else 0.0)
            log(f"trial {trial} {name}: {t.wall:.2f}s (others {t.others:.0%})")
            if name not in best or t.wall < best[name].wall:
                best[name] = t

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
    report = Report(
        bench="fool-variants",
        title=f"fool kernel variants (patched in-process), {n} images → class {TARGET_CLASS}",
        env=environment(device),
        settings={"trials": args.trials},
    )
    report.tables.append(
        Table(
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
    for name in names:
        if name != "current":
            report.metric(f"{name} vs current", f"{base.wall / best[name].wall:.2f}×")
    if device.type == "cpu":
        if args.quiet_wait > 0:
            wait_for_quiet(max_wait=args.quiet_wait)
        report.tables.append(pass_table(device, images, args.pass_repeat))
        for mk in (True, False):
            model = _layout(load_model(device), nchw=not mk)
            ok = batch_independent(model, images, mk)
            report.notes.append(
                f"oneDNN {'on' if mk else 'off'}: an unpadded lone image gets bitwise its in-batch logits "
                f"and gradient: {ok}"
            )
    return finish(report, args)


if __name__ == "__main__":
    main()
