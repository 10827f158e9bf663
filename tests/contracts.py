"""The registries' contract checks: what every attack, threat model, detector and defence promises its table.

tests/test_registry.py runs them on every registered entry, tests/test_extending.py on the toy plugins."""

import pytest
import torch

from core.detectors.detect import DetectorContext
from core.engine.data import ImageSet
from core.engine.models import AutoencoderConfig, Classifier, ClassifierConfig, DenoisingAutoencoder
from core.engine.registry import ATTACKS, DEFENCES, DETECTORS, THREATS
from core.engine.storage import config_hash
from core.engine.train import TrainConfig
from core.threats.poison import PoisonConfig, poison_training_set, threat_metrics


def random_set(n=120, seed=0) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
    return ImageSet(images, torch.randint(0, 43, (n,), generator=generator))


class Cache:
    """A ModelCache stand-in that always trains: detectors under test must not depend on what is cached."""

    def get(self, role, key, build, fit, metrics=None):
        config_hash(key)  # the key must be JSON-able, like every real cache key
        return fit().eval(), role


def check_attack(name: str, model) -> None:
    spec = ATTACKS[name]
    data = random_set(16)
    x = data.images.float() / 255
    model.train()
    eps = 4 / 255
    adversarial = spec.run(model, x, data.labels, eps, 1 / 255, 3, generator=torch.Generator().manual_seed(0))
    assert model.training, f"{name} must restore the model's mode"
    assert adversarial.shape == x.shape and adversarial.dtype == x.dtype
    assert float((adversarial - x).abs().max()) <= eps + 1e-6, f"{name} leaves the eps-ball"
    assert 0 <= float(adversarial.min()) and float(adversarial.max()) <= 1
    assert not torch.equal(adversarial, x), f"{name} did not move any pixel"


def check_threat(name: str, model) -> None:
    spec = THREATS[name]
    clean = random_set(200)
    config = PoisonConfig(
        threat=name,
        fraction=0.5,
        eps=4 / 255,
        alpha=1 / 255,
        steps=2,
        source_class=int(clean.labels[0]),
        target_class=(int(clean.labels[0]) + 1) % 43,
    )
    poisoned = poison_training_set(clean, model if spec.needs_surrogate else None, config)
    mask = poisoned.poison_mask
    assert poisoned.data.images.dtype == torch.uint8 and mask.dtype == torch.bool and len(mask) == len(clean)
    assert poisoned.n_poisoned > 0, f"{name} poisoned nothing at fraction 0.5"
    changed = (poisoned.data.images != clean.images).flatten(1).any(dim=1) | (poisoned.data.labels != clean.labels)
    assert not changed[~mask].any(), f"{name} changed samples outside its poison mask"
    assert changed[mask].float().mean() > 0.5, f"{name} left most of its 'poisoned' samples as they were"
    again = poison_training_set(clean, model if spec.needs_surrogate else None, config)
    assert torch.equal(again.poison_mask, mask) and torch.equal(again.data.images, poisoned.data.images), "not seeded"
    metrics = threat_metrics(model, clean, config)
    assert all(0 <= value <= 1 for key, value in metrics.items() if key.endswith("rate"))
    assert 0 < spec.default_fraction <= 1 and set(spec.params) <= set(PoisonConfig.__dataclass_fields__)


def check_detector(name: str, model) -> None:
    spec = DETECTORS[name]
    torch.manual_seed(0)
    autoencoder = DenoisingAutoencoder(AutoencoderConfig(depth=2, width=4, latent_dim=8)).eval()
    from core.detectors.dae import DAEConfig

    trusted = random_set(40, seed=1)
    context = DetectorContext(
        autoencoder,
        model,
        trusted,
        DAEConfig(),
        "defender-test",
        Cache(),
        knobs={"supervised.width": 4, "supervised.epochs": 1},
        poisoned_model=lambda: model,
    )
    detector = spec.build(context)
    reference, data = random_set(60, 2).images, random_set(200, 3).images
    detector.fit({"trusted": trusted.images, "calibration": reference, "training": data}[spec.fit_on])
    scores = detector.score(data)
    assert scores.shape == (200,) and torch.isfinite(scores).all()
    detector.infer_threshold(data, 0.1)
    # alibi-detect: threshold = the 'higher' (1 - fpr) quantile of the scores; outlier iff score > threshold
    assert float(detector.threshold) == pytest.approx(
        float(torch.quantile(scores, 0.9, interpolation="higher")), rel=1e-5
    )
    flagged = detector.predict(data).is_outlier
    assert torch.equal(flagged.bool(), scores > detector.threshold)


def check_defence(name: str) -> None:
    """A defence returns the uint8 training set its classifier learns from: every image with its label, or a subset of
    the images kept as they were with their labels; its test-time module, when it has one, keeps inputs in [0, 1] at
    their shape; its params are settings a DefenceConfig holds (seed, detector, a stored knob)."""
    from core.defences import DefenceConfig, DefenceContext, defence_stored_knobs

    spec = DEFENCES[name]
    torch.manual_seed(0)
    autoencoder = DenoisingAutoencoder(AutoencoderConfig(depth=2, width=4, latent_dim=8)).eval()
    train = random_set(24)
    dropped = torch.zeros(24, dtype=torch.bool)
    dropped[::3] = True
    context = DefenceContext(
        autoencoder,
        lambda detector: dropped,
        trusted=random_set(16, 1),
        new_classifier=lambda: Classifier(ClassifierConfig(width=2, hidden=8)),
        train_config=TrainConfig(epochs=1, batch_size=8),
    )
    result = spec.apply(train, context, DefenceConfig())
    assert result.images.dtype == torch.uint8 and result.images.shape[1:] == train.images.shape[1:], name
    if len(result) == len(train):  # every image, changed or not, with its label
        assert torch.equal(result.labels, train.labels), f"{name} changed the labels"
    elif len(result) == int((~dropped).sum()):  # what the context's filter keeps, possibly changed, with its labels
        assert torch.equal(result.labels, train.labels[~dropped]), f"{name} changed the labels"
    else:  # a subset of the training images, each kept as it was with its own label (a filter of its own)
        assert 0 < len(result) < len(train), f"{name} kept {len(result)} of {len(train)} images"
        flat = train.images.flatten(1)
        for image, label in zip(result.images.flatten(1), result.labels):
            same = (flat == image).all(dim=1)
            assert same.any() and label in train.labels[same], f"{name} kept an image it was not given, or relabelled"
    if spec.test_input is not None:
        x = train.images.float() / 255
        seen = spec.test_input(DefenceConfig())(x).detach()  # a purifier keeps its graph
        assert seen.shape == x.shape and 0 <= float(seen.min()) and float(seen.max()) <= 1, name
    assert set(spec.params) <= {"detector", "seed", *defence_stored_knobs()}, name  # settings a key can hold
    config = DefenceConfig(knobs={"fine_tune.epochs": 1, "abl.unlearn_epochs": 1, "abl.isolation": 0.1})
    if spec.input_transform is not None:  # a purifier: the same module on training images and test inputs
        x = train.images.float() / 255
        seen = spec.input_transform(result, context, config)(x)
        assert seen.shape == x.shape and 0 <= float(seen.min()) and float(seen.max()) <= 1, name
    if spec.after_training is not None:  # a repair: a classifier of the same kind, the given one untouched
        torch.manual_seed(0)
        model = Classifier(ClassifierConfig(width=2, hidden=8)).eval()
        before = {key: value.clone() for key, value in model.state_dict().items()}
        repaired = spec.after_training(model, train, context, config)
        assert repaired(train.images.float() / 255).shape == (24, 43), name
        assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items()), name
