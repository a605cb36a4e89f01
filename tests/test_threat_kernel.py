"""fool's ε-bounded threat models (PGD L∞/L2, FGSM, MI-FGSM): the ball and the 8-bit lattice checked in
integers, projections against float64 references, determinism, batched = one at a time."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ascent.shared.errors import InvalidInput
from ascent.shared.kernels import fool
from ascent.shared.kernels.attacks import (
    lattice_l2,
    lattice_linf,
    levels,
    objective_of,
    project_l2,
    project_linf,
)
from ascent.shared.models import load_classifier

TARGET = 7


@pytest.fixture(scope="module")
def tiny():
    return load_classifier("tiny", device="cpu")


def images(n=3, size=32, seed=0):
    """Random 8-bit images (as floats in [0, 1]) and their integer values."""
    ints = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed))
    return ints.float() / 255, ints


def levels_of(x: torch.Tensor) -> torch.Tensor:
    """The image's 8-bit values as integers; asserts it is exactly on the lattice."""
    q = torch.round(x * 255)
    assert torch.equal(x, q / 255), "not on the 8-bit lattice"
    return q.long()


def assert_in_ball(adv, original_ints, norm, eps):
    delta = levels_of(adv) - original_ints  # integers
    if norm == "linf":
        budget = int(np.floor(eps * 255 + 1e-6))
        assert int(delta.abs().max()) <= budget
    else:
        squares = delta.flatten(1).pow(2).sum(1)  # exact int64
        assert (squares.double() <= (255 * eps) ** 2).all(), (squares.max(), (255 * eps) ** 2)


CASES = [
    ("linf", 8 / 255, {}),
    ("linf", 3 / 255, {"random_start": True}),
    ("linf", 8 / 255, {"momentum": 1.0}),
    ("l2", 0.5, {}),
    ("l2", 1.5, {"random_start": True, "loss": "margin"}),
]


@pytest.mark.parametrize(("norm", "eps", "options"), CASES)
def test_outputs_are_8bit_exact_and_inside_the_ball_in_integers(tiny, norm, eps, options):
    x, ints = images(4)
    r = fool(tiny, x, TARGET, norm=norm, eps=eps, max_iters=8, loss=options.pop("loss", "ce"), **options)
    assert_in_ball(r.images, ints, norm, eps)
    assert torch.equal(r.eps, torch.full((4,), eps, dtype=torch.float32))


@pytest.mark.parametrize(("norm", "eps", "options"), CASES[:4])
def test_success_flags_equal_a_recheck_of_the_saved_pngs(tiny, norm, eps, options):
    x, _ = images(4, seed=1)
    r = fool(tiny, x, TARGET, norm=norm, eps=eps, max_iters=8, loss="ce", **options)
    reloaded = []
    for image in r.images:
        buf = io.BytesIO()
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, format="PNG")
        reloaded.append(torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).float() / 255)
    with torch.no_grad():
        preds = tiny(torch.stack(reloaded)).argmax(1)
    assert torch.equal(preds, r.pred_after)
    assert torch.equal(preds == TARGET, r.fooled)


@pytest.mark.parametrize(("norm", "eps", "options"), CASES)
def test_a_batch_equals_its_images_one_at_a_time(tiny, norm, eps, options):
    x, _ = images(3, seed=2)
    seeds = [11, 12, 13]  # per-image seeds: a random start that does not depend on the batch
    kw = {"norm": norm, "eps": eps, "max_iters": 6, "loss": options.get("loss", "ce"), **options}
    together = fool(tiny, x, TARGET, seed=seeds, **kw)
    for i in range(3):
        alone = fool(tiny, x[i : i + 1], TARGET, seed=[seeds[i]], **kw)
        assert torch.equal(alone.images[0], together.images[i]), i
        assert int(alone.iterations[0]) == int(together.iterations[i])
        assert int(alone.pred_after[0]) == int(together.pred_after[i])


def test_an_eps_per_image_is_a_sweep_in_one_batch(tiny):
    x, ints = images(2, seed=3)
    sweep = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
    pairs = x.repeat_interleave(len(sweep), 0)
    r = fool(tiny, pairs, TARGET, norm="linf", eps=sweep * 2, max_iters=6, loss="ce")
    for k, eps in enumerate(sweep * 2):
        assert_in_ball(r.images[k : k + 1], ints.repeat_interleave(len(sweep), 0)[k : k + 1], "linf", eps)
    alone = fool(tiny, x[1:], TARGET, norm="linf", eps=2 / 255, max_iters=6, loss="ce")
    assert torch.equal(alone.images[0], r.images[5])


def test_fgsm_is_one_signed_step_from_the_clean_image(tiny):
    x, ints = images(3, seed=4)
    eps = 4 / 255
    kw = {"step_size": eps, "max_iters": 1, "extra_iters": 0, "early_stop": False, "loss": "ce"}
    r = fool(tiny, x, TARGET, norm="linf", eps=eps, **kw)
    xa = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(tiny(xa).log_softmax(1)[:, TARGET].sum(), xa)
    expected = (ints + 4 * grad.sign().long()).clamp(0, 255)  # one step of ε = 4 levels, in integers
    assert torch.equal(levels_of(r.images), expected)
    assert r.passes == 3 * 2  # the step's pass and the pass that judged the result


def test_random_start_is_deterministic_for_a_seed_and_differs_between_seeds(tiny):
    x, ints = images(2, seed=5)
    kw = {"norm": "linf", "eps": 8 / 255, "max_iters": 0, "random_start": True}
    a, b, c = (fool(tiny, x, TARGET, seed=s, **kw) for s in (3, 3, 4))
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images[0] - x[0], a.images[1] - x[1])  # each row draws its own start
    assert_in_ball(a.images, ints, "linf", 8 / 255)
    assert (a.linf > 0).all()


def test_restarts_keep_the_first_success(tiny):
    x, _ = images(4, seed=6)
    once = fool(tiny, x, TARGET, norm="linf", eps=2 / 255, max_iters=2, random_start=True, seed=1)
    more = fool(tiny, x, TARGET, norm="linf", eps=2 / 255, max_iters=2, random_start=True, seed=1, restarts=3)
    assert int(more.fooled.sum()) >= int(once.fooled.sum())
    kept = once.fooled  # fooled in the first restart: kept as they were
    assert torch.equal(more.images[kept], once.images[kept]) and (more.restart[kept] == 0).all()
    assert ((more.restart > 0) <= ~once.fooled).all()


def test_without_early_stopping_every_image_runs_the_whole_budget(tiny):
    x, _ = images(3, seed=7)
    r = fool(tiny, x, TARGET, norm="l2", eps=1.0, max_iters=5, early_stop=False)
    assert r.passes == 3 * 6  # steps 0..4 and the pass that judges the end


def test_untargeted_moves_away_from_the_true_label_when_given(tiny):
    x, _ = images(3, seed=8)
    with torch.no_grad():
        clean = tiny(x).argmax(1)
    labels = [int(clean[0]), (int(clean[1]) + 1) % 1000, None]  # right, wrong, unknown
    r = fool(tiny, x, None, norm="linf", eps=8 / 255, max_iters=10, labels=labels)
    assert r.targets.tolist() == [labels[0], labels[1], int(clean[2])]
    assert int(r.iterations[1]) == 0 and bool(r.fooled[1])  # misclassified already: no robustness to break
    assert torch.equal(r.fooled, r.pred_after != r.targets)


def test_losses_on_known_logits():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.0, -1.0]])
    goal = torch.tensor([2, 0])
    assert torch.equal(objective_of("score", logits, goal, False), torch.tensor([2.0, 0.5]))
    ce = torch.nn.functional.cross_entropy(logits, goal, reduction="none")
    assert torch.allclose(objective_of("ce", logits, goal, False), -ce)
    assert torch.allclose(objective_of("ce", logits, goal, True), ce)
    assert torch.equal(objective_of("margin", logits, goal, False), torch.tensor([-1.0, 0.5]))
    assert torch.equal(objective_of("margin", logits, goal, True), torch.tensor([1.0, -0.5]))


# ----------------------------------------------------------------------------- projections


def test_float_projections_agree_with_a_float64_reference():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=gen)
    x = (x0 + torch.randn(4, 3, 8, 8, generator=gen) * 0.2).clamp(0, 1)
    eps = torch.tensor([0.01, 0.05, 0.2, 1.0], dtype=torch.float64)
    a, a0 = x.double().numpy(), x0.double().numpy()
    e = eps.numpy()[:, None, None, None]
    linf_ref = np.clip(a0 + np.clip(a - a0, -e, e), 0, 1)
    assert np.allclose(project_linf(x, x0, eps).numpy(), linf_ref, atol=1e-7)
    d = (a - a0).reshape(4, -1)
    norms = np.linalg.norm(d, axis=1)
    scale = np.minimum(1, eps.numpy() * (1 - 1e-5) / norms)[:, None]
    l2_ref = np.clip(a0 + (d * scale).reshape(a.shape), 0, 1)
    got = project_l2(x, x0, eps)
    assert np.allclose(got.numpy(), l2_ref, atol=1e-6)
    assert ((got - x0).flatten(1).double().norm(dim=1) <= eps).all()


def test_the_linf_lattice_rounds_to_nearest_inside_and_towards_the_original_at_the_edge():
    x0 = torch.tensor([100.0, 100.0, 100.0, 0.0, 255.0]).view(1, 1, 1, 5)
    x = (x0 + torch.tensor([1.4, 2.6, -3.7, -2.0, 3.0]).view(1, 1, 1, 5)) / 255
    q = lattice_linf(x, x0, levels(torch.tensor([3 / 255], dtype=torch.float64)))
    assert torch.equal(torch.round(q * 255).flatten(), torch.tensor([101.0, 103.0, 97.0, 0.0, 255.0]))


def test_the_l2_lattice_stays_inside_the_ball_in_integers_and_rounds_to_nearest_when_it_can():
    gen = torch.Generator().manual_seed(1)
    x0_255 = torch.randint(0, 256, (6, 3, 16, 16), generator=gen).float()
    x0 = x0_255 / 255
    eps = torch.tensor([0.02, 0.05, 0.1, 0.3, 1.0, 5.0], dtype=torch.float64)
    x = project_l2((x0 + torch.randn(x0.shape, generator=gen) * 0.05).clamp(0, 1), x0, eps)
    q = lattice_l2(x, x0_255, eps)
    delta = levels_of(q) - x0_255.long()
    assert (delta.flatten(1).pow(2).sum(1).double() <= (255 * eps) ** 2).all()
    nearest = torch.round(x * 255).clamp(0, 255) - x0_255
    inside = nearest.flatten(1).double().pow(2).sum(1) <= (255 * eps) ** 2
    assert torch.equal(delta[inside].float(), nearest[inside])  # untouched where nearest rounding fits
    moved = (delta.float() != nearest) & ~inside.view(-1, 1, 1, 1)
    assert (delta.float().abs() <= nearest.abs())[moved].all()  # the others round towards the original


def test_bad_threat_arguments_are_named(tiny):
    x, _ = images(1)
    for kwargs, message in [
        ({"norm": "l1"}, "norm"),
        ({"norm": "linf"}, "eps is required"),
        ({"eps": 0.1}, "need norm"),
        ({"norm": "l2", "eps": -1.0}, "eps"),
        ({"norm": "l2", "eps": [0.1, 0.2]}, "one value per image"),
        ({"norm": "linf", "eps": 0.1, "restarts": 2}, "random_start"),
        ({"norm": "linf", "eps": 0.1, "step_size": 0}, "step_size"),
        ({"norm": "linf", "eps": 0.1, "momentum": -1}, "momentum"),
        ({"loss": "hinge"}, "loss"),
        ({"labels": [3, 4]}, "labels"),
        ({"seed": [1, 2]}, "seed"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            fool(tiny, x, 3, **kwargs)


def test_the_progress_estimate_spans_the_restarts(tiny, tmp_path):
    from ascent.shared.kernels.loop import iteration_hook
    from ascent.shared.store import FileStore
    from ascent.worker.watch import ShardWatch

    x, _ = images(2, seed=6)
    watch = ShardWatch(FileStore(tmp_path / "store"), "run-1", "shard-00000", 2)
    seen: list[tuple[int, float]] = []

    def hook(t: int, *rest: int) -> None:
        watch(t, *rest)
        seen.append((t, watch.finished))

    with iteration_hook(hook):  # a ball too small for any 8-bit change: no image is fooled, both restarts run
        r = fool(tiny, x, TARGET, norm="linf", eps=0.5 / 255, max_iters=2, random_start=True, restarts=2)
    assert not r.fooled.any()
    assert seen == [(0, 0.0), (1, 0.5), (2, 1.0), (0, 1.0), (1, 1.5), (2, 2.0)]  # half the shard per restart
