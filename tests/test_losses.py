"""The style-transfer losses: exact against a float64 reference, and the CS231n check values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ascent.shared.losses import content_loss, gram_matrix, style_loss, tv_loss


def rel_error(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def reference_gram(f: np.ndarray) -> np.ndarray:
    n, c, h, w = f.shape
    out = np.zeros((n, c, c))
    for i in range(n):
        flat = f[i].reshape(c, h * w)
        for a in range(c):
            for b in range(c):
                out[i, a, b] = np.sum(flat[a] * flat[b]) / (h * w * c)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_content_loss_equals_float64_reference(rng):
    cur, orig = rng.normal(size=(2, 8, 5, 6)), rng.normal(size=(2, 8, 5, 6))
    got = content_loss(0.3, torch.from_numpy(cur), torch.from_numpy(orig))
    assert rel_error(got.item(), 0.3 * np.sum((cur - orig) ** 2)) < 1e-12


def test_gram_matrix_equals_float64_reference_normalised_and_not(rng):
    f = rng.normal(size=(2, 6, 4, 5))
    got = gram_matrix(torch.from_numpy(f))
    assert got.shape == (2, 6, 6)
    assert rel_error(got.numpy(), reference_gram(f)) < 1e-12
    raw = gram_matrix(torch.from_numpy(f), normalize=False)
    assert rel_error(raw.numpy(), reference_gram(f) * 4 * 5 * 6) < 1e-12


def test_style_loss_equals_float64_reference(rng):
    feats = [rng.normal(size=(1, c, 6, 6)) for c in (4, 5, 6)]
    targets = [reference_gram(rng.normal(size=(1, c, 6, 6))) for c in (4, 6)]
    weights = (7.0, 0.5)
    expected = sum(
        w * np.sum((reference_gram(feats[layer]) - t) ** 2)
        for layer, t, w in zip((0, 2), targets, weights, strict=True)
    )
    got = style_loss([torch.from_numpy(f) for f in feats], (0, 2), [torch.from_numpy(t) for t in targets], weights)
    assert rel_error(got.item(), expected) < 1e-12


def test_tv_loss_equals_float64_reference(rng):
    img = rng.normal(size=(2, 3, 7, 9))
    expected = 0.2 * (np.sum((img[:, :, 1:] - img[:, :, :-1]) ** 2) + np.sum((img[..., 1:] - img[..., :-1]) ** 2))
    assert rel_error(tv_loss(torch.from_numpy(img), 0.2).item(), expected) < 1e-12


def test_per_image_losses_sum_to_the_batch_loss(rng):
    img = torch.from_numpy(rng.normal(size=(3, 3, 5, 5)))
    per = tv_loss(img, 1.0, reduction="none")
    assert per.shape == (3,)
    assert rel_error(per.sum().item(), tv_loss(img, 1.0).item()) < 1e-12


# ----------------------------------------------------------------------------- CS231n check values


@pytest.fixture(scope="module")
def checks(assets):
    import torchvision.transforms.functional as TF
    from PIL import Image

    from ascent.shared.models import load_classifier

    model = load_classifier(
        "squeezenet1_1", weights=assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth", device="cpu"
    )

    def preprocess(name: str, size: int) -> torch.Tensor:
        # the notebook's preprocessing: smaller side to `size`, ToTensor (normalisation is the model's)
        img = Image.open(assets / "cs231n" / "styles" / name).convert("RGB")
        return TF.to_tensor(TF.resize(img, size)).unsqueeze(0)

    answers = np.load(assets / "cs231n" / "style-transfer-checks.npz")
    return model, preprocess, answers


def test_content_loss_matches_cs231n_check(checks):
    model, preprocess, answers = checks
    content = preprocess("tubingen.jpg", 192)
    with torch.no_grad():
        original = model.features(content)[3]
        current = model.features_normalized(torch.zeros_like(content))[3]
    assert rel_error(content_loss(6e-2, current, original).item(), answers["cl_out"]) < 1e-2


def test_gram_matrix_gradient_equals_autograd_of_the_plain_product(rng):
    """The hand-written backward (one bmm) is the exact gradient of F Fᵀ, also for channels_last input."""
    f = torch.from_numpy(rng.normal(size=(2, 3, 4, 5))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: gram_matrix(t), (f,))
    upstream = torch.from_numpy(rng.normal(size=(2, 3, 3)))
    (ours,) = torch.autograd.grad((gram_matrix(f) * upstream).sum(), f)
    flat = f.reshape(2, 3, 20)
    (plain,) = torch.autograd.grad(((flat @ flat.transpose(1, 2)) / 60 * upstream).sum(), f)
    assert torch.allclose(ours, plain, rtol=1e-12, atol=1e-12)
    nhwc = f.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    (got,) = torch.autograd.grad((gram_matrix(nhwc) * upstream).sum(), nhwc)
    assert torch.allclose(got, plain, rtol=1e-12, atol=1e-12)


def test_gram_matrix_matches_cs231n_check(checks):
    model, preprocess, answers = checks
    with torch.no_grad():
        gram = gram_matrix(model.features(preprocess("starry_night.jpg", 192))[5])
    assert gram.shape == (1, 128, 128)
    assert rel_error(gram.numpy(), answers["gm_out"]) < 1e-2


def test_style_loss_matches_cs231n_check(checks):
    model, preprocess, answers = checks
    layers, weights = (1, 4, 6, 7), (300000, 1000, 15, 3)
    with torch.no_grad():
        style_feats = model.features(preprocess("starry_night.jpg", 192))
        targets = [gram_matrix(style_feats[i]) for i in layers]
        feats = model.features(preprocess("tubingen.jpg", 192))
    assert rel_error(style_loss(feats, layers, targets, weights).item(), answers["sl_out"]) < 1e-2


def test_tv_loss_matches_cs231n_check(checks):
    model, preprocess, answers = checks
    # the notebook takes TV of the normalised image
    assert rel_error(tv_loss(model.normalize(preprocess("tubingen.jpg", 192)), 2e-2).item(), answers["tv_out"]) < 1e-2
