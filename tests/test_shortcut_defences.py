"""The cheap defences against shortcut poisons (issue 38), each against what its paper claims, on toy sets."""

import torch
from torch import nn

from core.defences import DefenceConfig, DefenceContext, grayscale, jpeg
from core.defences.grayscale_noise import grayscale_and_noise
from core.defences.orthogonal_projection import linear_weights
from core.defences.sharpen_lowpass import SharpenLowpass
from core.engine.data import ImageSet
from core.engine.train import to_float_images
from core.experiments.defence_grid import defended_training


def smooth_images(n: int, seed: int) -> torch.Tensor:
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 200 + 20
    return nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False).round().to(torch.uint8)


def with_class_pixels(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """OPS-like shortcut: each class sets its own pixel to white."""
    poisoned = images.clone()
    for index, label in enumerate(labels.tolist()):
        poisoned[index, :, 3 + 5 * label, 7 + 3 * label] = 255
    return poisoned


def linear_train_accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    weights = linear_weights(ImageSet(images, labels), epochs=10, seed=1)
    x = to_float_images(images).flatten(1)
    return float(((x - x.mean(0)) @ weights.T).argmax(1).eq(labels).float().mean())


def cached_once(fits: list):
    def cached(role, key, build, fit):
        fits.append(role)
        return fit()

    return cached


def test_orthogonal_projection_removes_a_class_wise_shortcut_and_is_the_same_at_test_time():
    labels = torch.arange(2000) % 5
    poisoned = with_class_pixels(smooth_images(2000, 0), labels)
    assert linear_train_accuracy(poisoned, labels) > 0.95  # the shortcut is linear: the model finds it
    assert linear_train_accuracy(smooth_images(2000, 0), labels) < 0.35  # and without it the images are not
    fits = []
    context = DefenceContext(None, None, cached=cached_once(fits))
    config = DefenceConfig(knobs=(("orthogonal_projection.linear_epochs", 10), ("orthogonal_projection.rounds", 2)))
    projected, projection = defended_training("orthogonal_projection", ImageSet(poisoned, labels), context, config)
    assert fits == ["projection"]
    assert linear_train_accuracy(projected.images, labels) < 0.3  # the shortcut is gone
    one_round = DefenceConfig(knobs=(("orthogonal_projection.linear_epochs", 10), ("orthogonal_projection.rounds", 1)))
    partly, _ = defended_training(
        "orthogonal_projection", ImageSet(poisoned, labels), DefenceContext(None, None), one_round
    )
    assert linear_train_accuracy(partly.images, labels) > 0.35  # why a second round: one leaves part of it
    at_test = projection(to_float_images(poisoned)) * 255
    assert (at_test - projected.images.float()).abs().max() <= 0.5 + 1e-3  # one operation on both sides
    # what is left of a clean image stays close to it (43 of 3,072 directions removed)
    clean = smooth_images(50, 3)
    change = (projection(to_float_images(clean)) - to_float_images(clean)).abs().mean()
    assert change < 0.1, float(change)


def test_sharpen_lowpass_keeps_a_smooth_image_and_removes_a_high_frequency_pattern():
    smooth = to_float_images(smooth_images(8, 2))
    identity = SharpenLowpass(amount=0.0, cutoff=23)
    assert (identity(smooth) - smooth).abs().max() < 1e-4
    checkerboard = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1) * 0.05  # highest frequency
    noisy = (smooth + checkerboard).clamp(0, 1)
    filtered = SharpenLowpass(amount=0.0, cutoff=12)(noisy)
    assert (filtered - smooth).abs().mean() < 0.3 * (noisy - smooth).abs().mean()
    # sharpening raises the contrast of an edge
    edge = torch.zeros(1, 3, 32, 32)
    edge[..., 16:] = 0.5
    sharpened = SharpenLowpass(amount=1.0, cutoff=23)(edge)
    assert sharpened[0, 0, 0, 16] > 0.5 and sharpened[0, 0, 0, 15] < 1e-4
    # it is differentiable, so adaptive attacks see through it
    x = smooth.clone().requires_grad_()
    SharpenLowpass(amount=1.0, cutoff=8)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_grayscale_noise_turns_about_its_share_grey_and_adds_noise_of_its_sigma_reproducibly():
    x = to_float_images(smooth_images(400, 4)) * 0.5 + 0.25  # away from 0 and 1, so the clamp cuts no noise
    out = grayscale_and_noise(x, 0.5, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(out, grayscale_and_noise(x, 0.5, 0.1, torch.Generator().manual_seed(0)))
    without_noise = grayscale_and_noise(x, 0.5, 0.0, torch.Generator().manual_seed(0))  # the same images made grey
    grey = (without_noise[:, 0] == without_noise[:, 1]).flatten(1).all(1)
    assert 0.4 < float(grey.float().mean()) < 0.6
    assert not bool((x[:, 0] == x[:, 1]).flatten(1).all(1).any())  # none was grey before
    assert abs(float((out - without_noise).std()) - 0.1) < 0.01
    assert torch.equal(grayscale_and_noise(x, 0.0, 0.0, torch.Generator()), x)


def test_grayscale_jpeg_is_jpeg_of_the_grey_image_and_tests_on_grey_inputs():
    images = smooth_images(6, 5)
    train_set = ImageSet(images, torch.arange(6) % 3)
    config = DefenceConfig(knobs=(("grayscale_jpeg.quality", 20),))
    trained_on, test_input = defended_training("grayscale_jpeg", train_set, DefenceContext(None, None), config)
    assert torch.equal(trained_on.images, jpeg(grayscale(images), 20))
    x = to_float_images(images)
    assert torch.allclose(test_input(x) * 255, grayscale(images).float(), atol=1)
