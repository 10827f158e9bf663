"""TAP and error-minimising noise against their definitions, on small models."""

import pytest
import torch
import torch.nn.functional as F

from core.engine.models import Classifier, ClassifierConfig
from core.engine.train import predict
from core.threats.poison import PoisonConfig, poison_training_set
from core.threats.tap import permuted_target, targeted_pgd
from core.threats.unlearnable import error_minimising_noise


def test_tap_moves_predictions_toward_the_next_class(small_classifier, small_splits):
    test = small_splits.test.subset(torch.arange(128))
    x, target = test.images.float() / 255, permuted_target(test.labels)
    before = (predict(small_classifier, x).argmax(1) == target).float().mean()
    adversarial = targeted_pgd(small_classifier, x, target, 8 / 255, 2 / 255, 10)
    after = (predict(small_classifier, adversarial).argmax(1) == target).float().mean()
    assert after > before + 0.5, (before, after)
    assert float((adversarial - x).abs().max()) <= 8 / 255 + 1e-6


def test_tap_with_augmented_views_still_hits_the_target(small_classifier, small_splits):
    test = small_splits.test.subset(torch.arange(128))
    x, target = test.images.float() / 255, permuted_target(test.labels)
    generator = torch.Generator().manual_seed(0)
    adversarial = targeted_pgd(small_classifier, x, target, 8 / 255, 2 / 255, 10, augment=True, generator=generator)
    assert (predict(small_classifier, adversarial).argmax(1) == target).float().mean() > 0.4
    assert float((adversarial - x).abs().max()) <= 8 / 255 + 1e-6


def test_tap_poisons_are_uint8_within_eps_and_keep_labels(small_classifier, small_splits):
    train = small_splits.train.subset(torch.arange(300))
    config = PoisonConfig().with_threat("tap")
    config = PoisonConfig.from_dict({**config.to_dict(), "alpha": 4 / 255, "steps": 3, "fraction": 0.5})
    poisoned = poison_training_set(train, small_classifier, config)
    change = (poisoned.data.images.int() - train.images.int()).abs()
    assert poisoned.data.images.dtype == torch.uint8 and int(change.max()) == int(8 / 255 * 255 + 1e-6)
    assert torch.equal(poisoned.data.labels, train.labels) and poisoned.n_poisoned == 150


def _loss(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x), y))


def test_error_minimising_noise_lowers_the_loss_of_the_model_it_was_made_with(small_splits):
    for scope in ("samplewise", "classwise"):
        data = small_splits.train.subset(torch.arange(0, 2000, 5))
        x, y = data.images.float() / 255, data.labels
        torch.manual_seed(0)
        model = Classifier(ClassifierConfig(width=4, hidden=16))
        config = PoisonConfig(
            threat="unlearnable", eps=8 / 255, alpha=2 / 255, steps=5, knobs={"unlearnable.noise_scope": scope}
        )
        noise = error_minimising_noise(model, x, y, config)
        assert float(noise.abs().max()) <= 8 / 255 + 1e-6
        if scope == "classwise":  # one noise per class: images of a class share it
            same = y == y[0]
            assert torch.equal(noise[same], noise[same][:1].expand_as(noise[same]))
        assert _loss(model, (x + noise).clamp(0, 1), y) < 0.5 * _loss(model, x, y), scope


def test_picking_a_threat_starts_from_its_defaults():
    tap = PoisonConfig(eps=0.01).with_threat("tap")
    assert (tap.threat, tap.eps, tap.fraction) == ("tap", 8 / 255, 1.0)
    assert PoisonConfig().with_threat("label_flip").fraction == 0.4


def test_smooth_tap_spends_the_same_budget_low_pass_and_still_hits_the_target(small_classifier, small_splits):
    test = small_splits.test.subset(torch.arange(128))
    x, target = test.images.float() / 255, permuted_target(test.labels)

    def neighbour_jumps(adversarial):  # how much the perturbation changes from one pixel to the next
        delta = adversarial - x
        return float((delta[..., 1:] - delta[..., :-1]).abs().mean())

    dense = targeted_pgd(small_classifier, x, target, 8 / 255, 2 / 255, 10)
    smooth = targeted_pgd(small_classifier, x, target, 8 / 255, 2 / 255, 10, smooth=4)
    assert float((smooth - x).abs().max()) <= 8 / 255 + 1e-6
    assert neighbour_jumps(smooth) < 0.3 * neighbour_jumps(dense)
    before = (predict(small_classifier, x).argmax(1) == target).float().mean()
    after = (predict(small_classifier, smooth).argmax(1) == target).float().mean()
    assert after > before + 0.3, (before, after)


# ---- issue 24: poisons the anchors found robust to squeezing, and ours crafted through the defence ----------------


def test_ops_changes_one_pixel_per_image_to_its_class_colour(small_splits):
    from core.threats.ops import one_pixel_shortcut, shortcut_pixels

    train = small_splits.train.subset(torch.arange(600))
    poisoned = one_pixel_shortcut(train, PoisonConfig(threat="ops", fraction=1.0))
    changed = (poisoned.data.images != train.images).any(dim=1)  # (n, 32, 32): pixels with any channel changed
    assert int(changed.flatten(1).sum(1).max()) == 1 and int(changed.flatten(1).sum(1).min()) <= 1
    assert torch.equal(poisoned.data.labels, train.labels)
    chosen = shortcut_pixels(train.images, train.labels)  # fraction 1: searched on all of them
    assert set(chosen) == set(train.labels.tolist())
    for label, (row, col, colour) in chosen.items():
        pixels = poisoned.data.images[train.labels == label][:, :, row, col]
        assert torch.equal(pixels, colour.expand_as(pixels)), label  # one position and colour per class
        assert set(colour.tolist()) <= {0, 255}
    pairs = [(row, col, tuple(colour.tolist())) for row, col, colour in chosen.values()]
    assert len(set(pairs)) == len(pairs)  # no two classes share a position and colour


def test_cuda_blurs_each_class_with_its_own_filter(small_splits):
    from core.threats.cuda import class_filters, convolution_poison, convolve

    train = small_splits.train.subset(torch.arange(400))
    config = PoisonConfig(threat="cuda", fraction=1.0, seed=3)
    poisoned = convolution_poison(train, config)
    filters = class_filters(3)
    assert torch.allclose(filters.sum(dim=(-2, -1)), torch.ones(filters.shape[:3]))
    assert not torch.allclose(filters[0], filters[1])  # private to each class
    for label in train.labels.unique().tolist():
        mine = train.labels == label
        assert torch.equal(poisoned.data.images[mine], convolve(train.images[mine], filters[label]))
        # another class's filter gives other images: the filter is what labels the class
        assert not torch.equal(poisoned.data.images[mine], convolve(train.images[mine], filters[(label + 1) % 43]))
    assert torch.equal(poisoned.data.labels, train.labels)


def test_cudas_knobs_set_its_filters_and_leave_the_default_key_alone(small_splits):
    """kernel_size and blur are CUDA's knobs (core/threats/cuda.py): blur 0 leaves every image as it was, a larger
    kernel blurs more; at their defaults the config's file and cache key are the ones made before knobs existed."""
    from core.threats.cuda import convolution_poison

    train = small_splits.train.subset(torch.arange(200))
    default = PoisonConfig(threat="cuda", fraction=1.0, seed=3)
    assert "knobs" not in default.to_dict()
    assert PoisonConfig(threat="cuda", fraction=1.0, seed=3, knobs={"cuda.blur": 0.3}) == default  # set to default
    unchanged = convolution_poison(train, PoisonConfig(threat="cuda", fraction=1.0, seed=3, knobs={"cuda.blur": 0.0}))
    assert torch.equal(unchanged.data.images, train.images)

    def change(config):  # mean absolute change in grey levels
        return (convolution_poison(train, config).data.images.float() - train.images.float()).abs().mean()

    wider = PoisonConfig(threat="cuda", fraction=1.0, seed=3, knobs={"cuda.kernel_size": 7})
    assert change(wider) > 1.2 * change(default) > 0


def test_error_minimising_noise_through_grayscale_lowers_the_loss_of_a_grayscale_model(small_splits):
    from core.defences import GrayscaleInput, grayscale
    from core.threats.adaptive import unlearnable_through_grayscale

    data = small_splits.train.subset(torch.arange(0, 2000, 5))
    x, y = data.images.float() / 255, data.labels
    config = PoisonConfig(threat="unlearnable", eps=8 / 255, alpha=2 / 255, steps=5)
    torch.manual_seed(0)
    seeing_gray = torch.nn.Sequential(GrayscaleInput(), Classifier(ClassifierConfig(width=4, hidden=16)))
    noise = error_minimising_noise(seeing_gray, x, y, config)
    # grayscale leaves the noise one channel in three: a weaker shortcut than in colour, still one (0.76x measured)
    random_noise = 8 / 255 * torch.randint(-1, 2, x.shape, generator=torch.Generator().manual_seed(0))
    crafted = _loss(seeing_gray, (x + noise).clamp(0, 1), y)
    assert crafted < 0.85 * _loss(seeing_gray, x, y)
    assert crafted < 0.85 * _loss(seeing_gray, (x + random_noise).clamp(0, 1), y)
    # the registered threat crafts the same way and delivers uint8 within eps, a change grayscale keeps
    poisoned = unlearnable_through_grayscale(data, Classifier(ClassifierConfig(width=4, hidden=16)), config)
    change = poisoned.data.images.int() - data.images.int()
    assert int(change.abs().max()) <= 8 and torch.equal(poisoned.data.labels, y)
    assert not torch.equal(grayscale(poisoned.data.images), grayscale(data.images))


def test_tap_through_jpeg_still_hits_the_target_after_a_real_jpeg(small_classifier, small_splits):
    from core.defences import DifferentiableJPEG, jpeg

    test = small_splits.test.subset(torch.arange(128))
    x, target = test.images.float() / 255, permuted_target(test.labels)
    hits = {}
    for through in ("none", "jpeg"):
        model = (
            torch.nn.Sequential(DifferentiableJPEG(10), small_classifier).eval()
            if through == "jpeg"
            else small_classifier
        )
        adversarial = targeted_pgd(model, x, target, 8 / 255, 2 / 255, 10)
        delivered = jpeg((adversarial * 255).round().to(torch.uint8), 10)
        hits[through] = float((predict(small_classifier, delivered).argmax(1) == target).float().mean())
    assert hits["jpeg"] > hits["none"] + 0.1, hits


def test_tap_through_the_lowpass_filter_still_hits_the_target_after_the_filter(small_classifier, small_splits):
    """tap_lowpass (issue 38's attacker who knows sharpen_lowpass): crafted through the filter, the poison still moves
    the filtered image toward the next class, where plain TAP's does so less."""
    from core.defences.sharpen_lowpass import SharpenLowpass
    from core.threats.adaptive import LOWPASS_CUTOFF

    test = small_splits.test.subset(torch.arange(128))
    x, target = test.images.float() / 255, permuted_target(test.labels)
    filtered = SharpenLowpass(amount=1.0, cutoff=LOWPASS_CUTOFF)
    defended = torch.nn.Sequential(filtered, small_classifier).eval()
    hits = {}
    for through, model in (("none", small_classifier), ("lowpass", defended)):
        adversarial = targeted_pgd(model, x, target, 8 / 255, 2 / 255, 10)
        hits[through] = float((predict(defended, adversarial).argmax(1) == target).float().mean())
    assert hits["lowpass"] > hits["none"] + 0.1, hits


def test_tap_through_grayscale_jpeg_hits_the_target_after_grey_and_a_real_jpeg(small_classifier, small_splits):
    """tap_grayscale_jpeg (issue 38's attacker who knows grayscale_jpeg): crafted through grey and a differentiable
    JPEG, the poison still moves what the defence trains on (a real JPEG of the grey image) toward the next class,
    where plain TAP's does so less."""
    from core.defences import DifferentiableJPEG, GrayscaleInput, grayscale, jpeg
    from core.threats.adaptive import GRAYSCALE_JPEG_QUALITY as quality

    test = small_splits.test.subset(torch.arange(128))
    x, target = test.images.float() / 255, permuted_target(test.labels)
    grey_model = torch.nn.Sequential(GrayscaleInput(), small_classifier).eval()
    through = torch.nn.Sequential(GrayscaleInput(), DifferentiableJPEG(quality), small_classifier).eval()
    hits = {}
    for name, model in (("none", small_classifier), ("grayscale_jpeg", through)):
        adversarial = targeted_pgd(model, x, target, 8 / 255, 2 / 255, 10)
        delivered = jpeg(grayscale((adversarial * 255).round().to(torch.uint8)), quality)
        hits[name] = float((predict(grey_model, delivered).argmax(1) == target).float().mean())
    assert hits["grayscale_jpeg"] > hits["none"] + 0.1, hits


@pytest.mark.slow
def test_the_grayscale_jpeg_attacker_adapts_a_copy_of_its_surrogate_to_grey_jpeg_images(small_classifier, small_splits):
    """The surrogate tap_grayscale_jpeg crafts on is fine-tuned on the defence's view: it classifies grey JPEG images
    better than the colour surrogate it copies, which is left untouched; its poisons are uint8 within eps, labels
    kept."""
    from core.defences import grayscale, jpeg
    from core.threats.adaptive import GRAYSCALE_JPEG_QUALITY as quality
    from core.threats.adaptive import surrogate_on_the_defences_view

    before = {name: value.clone() for name, value in small_classifier.state_dict().items()}
    adapted = surrogate_on_the_defences_view(small_splits.train, small_classifier, quality, seed=0)
    assert all(torch.equal(value, before[name]) for name, value in small_classifier.state_dict().items())
    test = small_splits.test
    view = jpeg(grayscale(test.images), quality)

    def accuracy(model):
        return float((predict(model, view).argmax(1) == test.labels).float().mean())

    assert accuracy(adapted) > accuracy(small_classifier) + 0.02, (accuracy(adapted), accuracy(small_classifier))
    few = small_splits.train.subset(torch.arange(64))
    config = PoisonConfig(threat="tap_grayscale_jpeg", eps=8 / 255, alpha=2 / 255, steps=2, fraction=0.5, seed=0)
    poisoned = poison_training_set(few, small_classifier, config).data
    change = poisoned.images.int() - few.images.int()
    assert 0 < int(change.abs().max()) <= 8 and torch.equal(poisoned.labels, few.labels)
