"""One contract over the whole registry of jobs, on a tiny seeded network (fast, no assets)."""

from __future__ import annotations

import pytest
import torch

from ascent.shared.errors import InvalidInput
from ascent.shared.jobs import JOBS
from ascent.shared.kernels import AdamStep, class_visualization, fool, saliency, style_transfer
from ascent.shared.models import Classifier, load_classifier


@pytest.fixture(scope="module")
def tiny():
    return load_classifier("tiny", device="cpu")


def images(n=3, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def run_job(name, model, batch):
    """Run a job from the registry on ``batch`` with small settings; return its output images."""
    n = batch.shape[0]
    if name == "saliency":
        return saliency(model, batch, list(range(n)))[:, None].expand(-1, 3, -1, -1)
    if name == "fool":
        return fool(model, batch, [7] * n, max_iters=10).images
    if name == "classviz":
        return class_visualization(model, list(range(n)), iters=3, size=batch.shape[-1], seed=1)
    if name == "style":
        return style_transfer(model, batch, images(1, 40, seed=9), iters=4, decay_at=2, seed=1).images
    raise AssertionError(name)


ASCENDING = [name for name, job in JOBS.items() if job.ascends]


def test_registry_lists_the_four_ascent_jobs_and_verify():
    assert sorted(ASCENDING) == ["classviz", "fool", "saliency", "style"]
    assert sorted(JOBS) == [*sorted(ASCENDING), "verify"]  # verify re-reads outputs: no kernel, no ascent


@pytest.mark.parametrize("name", ASCENDING)
def test_job_keeps_shape_range_and_finiteness(name, tiny):
    out = run_job(name, tiny, images())
    assert out.shape == (3, 3, 32, 32)
    assert torch.isfinite(out).all()
    if name != "saliency":
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", ASCENDING)
def test_job_is_deterministic_with_its_seed(name, tiny):
    assert torch.equal(run_job(name, tiny, images()), run_job(name, tiny, images()))


@pytest.mark.parametrize("name", ASCENDING)
def test_job_batched_equals_one_at_a_time(name, tiny):
    batch = images()
    together = run_job(name, tiny, batch)
    if name == "classviz":  # classes are the batch; same seed, same start for each
        alone = torch.cat([class_visualization(tiny, [i], iters=3, size=32, seed=1) for i in range(3)])
    elif name == "saliency":
        alone = torch.cat([saliency(tiny, batch[i : i + 1], [i]) for i in range(3)])[:, None].expand(-1, 3, -1, -1)
    else:
        alone = torch.cat([run_job(name, tiny, batch[i : i + 1]) for i in range(3)])
    if name == "fool":  # discrete outcomes (iterations, predictions, the 8-bit image): exactly equal
        assert torch.equal(together, alone)
    else:  # continuous maps: equal up to float summation order in the backward pass
        assert torch.allclose(together, alone, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ASCENDING)
def test_job_leaves_no_gradient_on_model_weights(name, tiny):
    run_job(name, tiny, images())
    assert all(p.grad is None and not p.requires_grad for p in tiny.parameters())


def test_fool_shrinks_the_batch_as_images_finish(tiny):
    batch = images(6)
    r = fool(tiny, batch, 7, max_iters=40, extra_iters=0)
    steps = r.iterations.clamp_min(0) + 1  # each image: its steps plus the pass that saw success
    assert r.passes == int(torch.where(r.iterations >= 0, steps, torch.full_like(steps, 41)).sum())


class ScarceGpuMemory(Classifier):
    """The tiny network on a "device" where at most ``fits`` images fit with their gradients: a real
    network that raises what a CUDA device raises when a batch does not fit."""

    fits = 3

    def forward_normalized(self, inputs):
        if torch.is_grad_enabled() and inputs.shape[0] > self.fits:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (at most {self.fits} images fit)")
        return super().forward_normalized(inputs)


def scarce(tiny, fits):
    model = ScarceGpuMemory(tiny.name, tiny.stack, tiny.head, tiny.class_names).eval()
    model.fits = fits
    return model


def test_a_batch_that_runs_out_of_gpu_memory_is_split_and_gives_the_same_result(tiny):
    batch = images(8)
    expected = fool(tiny, batch, [7] * 8, max_iters=10, max_batch=8)
    got = fool(scarce(tiny, 3), batch, [7] * 8, max_iters=10, max_batch=8)
    assert torch.equal(got.images, expected.images)
    assert torch.equal(got.iterations, expected.iterations)
    assert got.passes == expected.passes  # a chunk that failed is not counted
    with pytest.raises(torch.cuda.OutOfMemoryError):  # not even one image fits: the error surfaces
        fool(scarce(tiny, 0), batch[:2], [7, 7], max_iters=3)


def test_adam_step_matches_torch_adam():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    grads = [torch.randn_like(x) for _ in range(5)]
    param = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=0.3)
    mine = AdamStep(x, lambda t: 0.3)
    y, rows = x.clone(), torch.arange(4)
    for t, g in enumerate(grads):
        param.grad = -g  # torch.optim descends; AdamStep ascends
        opt.step()
        y = mine(t, y, g, rows)
    assert torch.allclose(param.detach(), y, atol=1e-6)


# ----------------------------------------------------------------------------- bad arguments

BAD_IMAGES = [
    (torch.rand(3, 32, 32), "N×3×H×W"),
    (torch.rand(2, 1, 32, 32), "N×3×H×W"),
    (torch.rand(0, 3, 32, 32), "empty batch"),
    (torch.rand(2, 3, 32, 32) * 255, r"\[0, 1\]"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating point"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_IMAGES)
def test_kernels_reject_bad_images_saying_what_is_wrong(tiny, bad, message):
    n = max(bad.shape[0], 1) if bad.dim() == 4 else 1
    with pytest.raises(InvalidInput, match=message):
        fool(tiny, bad, [1] * n)
    with pytest.raises(InvalidInput, match=message):
        saliency(tiny, bad, [1] * n)


def test_class_ids_out_of_range_and_length_mismatch_are_named(tiny):
    with pytest.raises(InvalidInput, match=r"targets\[1\] = 1000 is out of range"):
        fool(tiny, images(2), [3, 1000])
    with pytest.raises(InvalidInput, match="one class id per image"):
        fool(tiny, images(3), [3, 4])
    with pytest.raises(InvalidInput, match="labels"):
        saliency(tiny, images(2), [1, -1])
    with pytest.raises(InvalidInput, match="classes is empty"):
        class_visualization(tiny, [])
    with pytest.raises(InvalidInput, match="out of range"):
        class_visualization(tiny, [5000])


@pytest.mark.parametrize("name", ["fool", "classviz", "style"])
def test_bf16_precision_runs_each_stepping_job_and_stays_close_to_fp32(name, tiny):
    batch = images()
    if name == "fool":
        fp32 = fool(tiny, batch, [7, 7, 7], max_iters=10)
        bf16 = fool(tiny, batch, [7, 7, 7], max_iters=10, precision="bf16")
        assert bf16.images.dtype == torch.float32
        assert torch.equal(bf16.images, torch.round(bf16.images * 255) / 255)
        with torch.no_grad():  # the success check is float32 on the 8-bit image
            assert torch.equal(tiny(bf16.images).argmax(1), bf16.pred_after)
        assert torch.equal(bf16.pred_before, fp32.pred_before)
        return
    if name == "classviz":
        fp32 = class_visualization(tiny, [0, 1], iters=3, size=32, seed=1)
        bf16 = class_visualization(tiny, [0, 1], iters=3, size=32, seed=1, precision="bf16")
    else:
        style = images(1, 40, seed=9)
        fp32 = style_transfer(tiny, batch, style, iters=4, decay_at=2, seed=1).images
        result = style_transfer(tiny, batch, style, iters=4, decay_at=2, seed=1, precision="bf16")
        assert result.loss.dtype == torch.float32 and torch.isfinite(result.loss).all()
        bf16 = result.images
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert not torch.equal(bf16, fp32)  # it did run in another precision ...
    assert float((bf16 - fp32).abs().mean()) < 0.05  # ... and lands close to the float32 result


def test_bad_parameters_are_named(tiny):
    with pytest.raises(InvalidInput, match="precision"):
        fool(tiny, images(1), 3, precision="fp16")
    with pytest.raises(InvalidInput, match="precision"):
        style_transfer(tiny, images(1), images(1), precision="half")
    with pytest.raises(InvalidInput, match="precision"):
        class_visualization(tiny, [1], precision=None)
    with pytest.raises(InvalidInput, match="lr"):
        fool(tiny, images(1), 3, lr=0)
    with pytest.raises(InvalidInput, match="init"):
        style_transfer(tiny, images(1), images(1), init="zeros")
    with pytest.raises(InvalidInput, match="feature layer 40"):
        style_transfer(tiny, images(1), images(1), content_layer=40)
    with pytest.raises(InvalidInput, match="style_blend"):
        style_transfer(tiny, images(1), [images(1), images(1)], style_blend=[1.0])
