"""The four kernels: reference numbers on the assets, batch = one at a time, and argument errors."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest
import torch
from PIL import Image

from ascent.shared.errors import ModelNotFound
from ascent.shared.kernels import class_visualization, fool, quantize, saliency, style_transfer
from ascent.shared.models import load_classifier

STINGRAY = 6


@pytest.fixture(scope="module")
def squeezenet(assets):
    return load_classifier(
        "squeezenet1_1", weights=assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth", device="cpu"
    )


@pytest.fixture(scope="module")
def val25(assets):
    data = np.load(assets / "cs231n" / "datasets" / "imagenet_val_25.npz")
    images = torch.from_numpy(data["X"]).permute(0, 3, 1, 2).float() / 255
    return images, torch.from_numpy(data["y"])


@pytest.fixture(scope="module")
def fooled25(squeezenet, val25):
    return fool(squeezenet, val25[0], STINGRAY, lr=1.0, max_iters=100)


def test_classifier_reproduces_reference_top1_on_val25(squeezenet, val25):
    images, labels = val25
    with torch.no_grad():
        assert int((squeezenet(images).argmax(1) == labels).sum()) == 13
    assert len(squeezenet.class_names) == 1000 and squeezenet.class_names[STINGRAY] == "stingray"
    assert len(squeezenet.features(images[:1])) == 13


def test_fool_reaches_reference_fooling_rate_and_step_counts(fooled25):
    r = fooled25
    assert int(r.fooled.sum()) >= 24  # the reference loop leaves one image unfooled within 100 steps
    done = r.iterations[r.iterations >= 0].float()
    assert float(done.median()) <= 10  # reference: median 8
    assert int(r.iterations.max()) <= 100
    assert ((r.iterations >= 0) | ~r.fooled).all()
    assert (r.pred_after[r.fooled] == STINGRAY).all()


def test_fooled_images_are_8bit_exact_and_saved_pngs_fool_as_reported(squeezenet, fooled25):
    images = fooled25.images
    assert torch.equal(images, torch.round(images * 255) / 255)
    reloaded = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, format="PNG")
        reloaded.append(torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).float() / 255)
    with torch.no_grad():
        preds = squeezenet(torch.stack(reloaded)).argmax(1)
    assert torch.equal(preds, fooled25.pred_after)


def test_fool_perturbation_sizes_are_measured_in_pixel_units(val25, fooled25):
    delta = (fooled25.images - quantize(val25[0])).flatten(1)
    assert torch.allclose(fooled25.l2, delta.norm(dim=1))
    assert torch.allclose(fooled25.linf, delta.abs().amax(1))
    assert (fooled25.linf <= 1).all() and (fooled25.l2 > 0).all()


def test_fool_batched_equals_one_at_a_time(squeezenet, val25, fooled25):
    images = val25[0]
    # every image whose batched run took longest plus a few short ones: the expensive part of the loop
    picks = [0, 3, 11, 24, int(fooled25.iterations.argmax())]
    for i in picks:
        single = fool(squeezenet, images[i : i + 1], STINGRAY)
        assert int(single.iterations[0]) == int(fooled25.iterations[i]), f"image {i}"
        assert int(single.pred_after[0]) == int(fooled25.pred_after[i]), f"image {i}"
        assert torch.equal(single.images[0], fooled25.images[i])


def test_fool_untargeted_moves_away_from_the_prediction(squeezenet, val25):
    r = fool(squeezenet, val25[0][:4], None, max_iters=30)
    assert r.fooled.all()
    assert (r.pred_after != r.pred_before).all()


def test_class_visualization_reaches_top1_for_its_classes(squeezenet):
    classes = [76, 366]  # tarantula, gorilla
    images = class_visualization(squeezenet, classes, iters=100)
    assert images.shape == (2, 3, 224, 224) and images.min() >= 0 and images.max() <= 1
    with torch.no_grad():
        assert squeezenet(images).argmax(1).tolist() == classes


def test_saliency_is_larger_on_the_object_than_on_the_background(squeezenet, val25):
    images, labels = val25
    maps = saliency(squeezenet, images, labels)
    assert maps.shape == (25, 224, 224) and (maps >= 0).all()
    centre = maps[:, 56:168, 56:168].mean((1, 2))
    border = maps.sum((1, 2)) - maps[:, 56:168, 56:168].sum((1, 2))
    border = border / (224 * 224 - 112 * 112)
    # ImageNet objects sit mostly in the middle: most maps concentrate there, some strongly
    ratio = centre / border
    assert int((ratio > 1).sum()) >= 20
    assert float(ratio.median()) > 1.3 and float(ratio.max()) > 3
    score_maps = saliency(squeezenet, images[:2], labels[:2], loss="score")
    assert score_maps.shape == (2, 224, 224) and not torch.equal(score_maps, maps[:2])


def test_style_transfer_lowers_the_style_loss_well_below_the_content_images(squeezenet, assets):
    import torchvision.transforms.functional as TF

    def load(name, size):
        img = Image.open(assets / "cs231n" / "styles" / name).convert("RGB")
        return TF.to_tensor(TF.resize(img, size)).unsqueeze(0)

    content = torch.cat([load("tubingen.jpg", 96)[..., :96, :128], load("tubingen.jpg", 96)[..., :96, -128:]])
    style = load("composition_vii.jpg", 128)
    before = style_transfer(squeezenet, content, style, iters=1, lr=1e-12, decayed_lr=1e-12)
    after = style_transfer(squeezenet, content, style, iters=60, decay_at=50)
    assert after.images.shape == content.shape
    assert (after.style < 0.3 * before.style).all()
    assert torch.equal(after.images, quantize(after.images))
    assert torch.allclose(after.loss, after.content + after.style + after.tv)
    blended = style_transfer(
        squeezenet, content[:1], [style, load("the_scream.jpg", 128)], style_blend=[0.5, 0.5], iters=5
    )
    assert blended.images.shape == (1, 3, 96, 128)


# ----------------------------------------------------------------------------- model zoo errors


def test_unknown_model_names_the_flag_and_how_to_list_the_known_ones():
    with pytest.raises(ModelNotFound, match=r"^--model no_such_net: not a torchvision .*list_models"):
        load_classifier("no_such_net")


def test_unloadable_checkpoint_says_why(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelNotFound, match=r"bad\.pth: not a checkpoint ascent can read \(unreadable"):
        load_classifier("squeezenet1_1", weights=bad, device="cpu")
    pickled = tmp_path / "pickled.pth"
    torch.save({"conv.weight": torch.zeros(1), "hook": argparse.Namespace(code="x")}, pickled)
    with pytest.raises(ModelNotFound, match=r"pickled\.pth: .*Python objects besides tensors"):
        load_classifier("squeezenet1_1", weights=pickled, device="cpu")
    with pytest.raises(ModelNotFound, match=r"missing\.pth: no such file"):
        load_classifier("squeezenet1_1", weights=tmp_path / "missing.pth", device="cpu")


def test_wrong_architecture_checkpoint_is_refused(assets):
    with pytest.raises(ModelNotFound, match="resnet18"):
        load_classifier("resnet18", weights=assets / "weights" / "squeezenet1_1_fp16_from_ncnn.pth", device="cpu")


def test_fool_on_log_probabilities_fools_all_25_in_fewer_steps(squeezenet, val25, fooled25):
    r = fool(squeezenet, val25[0], STINGRAY, loss="log_softmax")
    assert int(r.fooled.sum()) == 25
    assert int(r.iterations.max()) <= 20
    assert r.passes < fooled25.passes
    assert torch.equal(r.images, quantize(r.images))


def test_fool_in_bf16_fools_as_many_and_its_saved_images_fool_in_float32(squeezenet, val25, fooled25):
    r = fool(squeezenet, val25[0][:10], STINGRAY, precision="bf16")
    assert int(r.fooled.sum()) == int(fooled25.fooled[:10].sum())
    assert torch.equal(r.images, quantize(r.images))
    with torch.no_grad():  # what a user reloads and classifies in float32 is what was reported
        assert torch.equal(squeezenet(r.images).argmax(1), r.pred_after)
    assert (r.pred_after[r.fooled] == STINGRAY).all()
