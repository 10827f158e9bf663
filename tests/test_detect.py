import numpy as np
import pytest
import torch

from core.detectors.detect import (
    DAEDetector,
    ScoreDetector,
    ThresholdConfig,
    reconstruction_error,
    set_detector_threshold,
)
from core.engine.models import AutoencoderConfig, DenoisingAutoencoder
from core.experiments.evaluate import filter_quality


class MeanPixel(ScoreDetector):
    """Known scores: each image's (constant) pixel value, read exactly from its first pixel."""

    def score(self, x):
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        return x.flatten(1)[:, 0].clone()


def _images(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 32, 32).contiguous()


@pytest.mark.parametrize("fpr", [0.05, 0.1, 0.25, 0.5])
def test_infer_threshold_is_alibi_detects_higher_quantile(fpr):
    values = np.random.default_rng(0).random(200)
    detector = MeanPixel().fit(_images(values))
    detector.infer_threshold(_images(values), fpr)
    expected = np.quantile(values.astype(np.float32), 1 - fpr, method="higher")
    assert float(detector.threshold) == pytest.approx(float(expected), abs=1e-7)
    flags = detector.predict(_images(values)).is_outlier.bool()
    assert torch.equal(flags, torch.from_numpy(values.astype(np.float32)) > detector.threshold)
    assert flags.float().mean() <= fpr  # strictly-above semantics never flag more than fpr


def test_fixed_threshold_and_p_values():
    reference = np.linspace(0, 1, 101)
    detector = MeanPixel().fit(_images(reference))
    detector.set_threshold(0.5)
    output = detector.predict_dict(_images([0.2, 0.5, 0.9]))
    assert output["is_outlier"].tolist() == [0, 0, 1]
    assert output["threshold"] == pytest.approx(0.5)
    # alibi-detect's p-value: share of reference scores above the score (plus one, over n)
    assert output["p_value"][2] == pytest.approx((1 + (reference > 0.9).sum()) / 101, abs=1e-6)


def test_threshold_modes_pick_the_right_data():
    calibration, train = _images(np.linspace(0, 0.5, 100)), _images(np.linspace(0, 1, 100))
    detector = MeanPixel().fit(calibration)
    assert set_detector_threshold(
        detector, ThresholdConfig(mode="fixed", value=0.015), calibration, train
    ) == pytest.approx(0.015)
    fpr = set_detector_threshold(detector, ThresholdConfig(mode="fpr", fpr=0.1), calibration, train)
    assert fpr <= 0.5  # from the calibration data
    expected = set_detector_threshold(
        detector, ThresholdConfig(mode="expected_poison", expected_poison=0.1), calibration, train
    )
    assert expected > 0.85  # from the training data: drops its top 10%
    with pytest.raises(ValueError, match="mode"):
        ThresholdConfig(mode="magic")


def test_dae_detector_scores_are_per_image_mse():
    torch.manual_seed(0)
    autoencoder = DenoisingAutoencoder(AutoencoderConfig(depth=2, width=4, latent_dim=8)).eval()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    detector = DAEDetector(autoencoder, device="cpu").fit(images)
    with torch.no_grad():
        x = images.float() / 255
        expected = ((autoencoder(x) - x) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(detector.score(images), expected, atol=1e-6)
    assert torch.allclose(reconstruction_error(autoencoder, images, batch_size=3), expected, atol=1e-6)


def test_filter_counts_add_up():
    scores = torch.tensor([0.1, 0.9, 0.8, 0.2, 0.7, 0.3])
    poisoned = torch.tensor([False, True, True, False, False, True])
    dropped = scores > 0.5
    quality = filter_quality(scores, dropped, poisoned, 0.5)
    assert quality["kept_clean"] + quality["dropped_clean"] == 3
    assert quality["kept_poisoned"] + quality["dropped_poisoned"] == int(poisoned.sum())
    assert quality["dropped_poisoned"] == 2 and quality["dropped_clean"] == 1
    assert quality["precision"] == pytest.approx(2 / 3) and quality["recall"] == pytest.approx(2 / 3)
    assert quality["auroc"] == pytest.approx(8 / 9)


def test_threshold_from_stored_scores_matches_the_detector():
    from core.detectors.detect import infer_threshold_from_scores

    values = np.random.default_rng(1).random(500)
    detector = MeanPixel().fit(_images(values))
    detector.infer_threshold(_images(values), 0.1)
    assert infer_threshold_from_scores(values, 0.1) == pytest.approx(float(detector.threshold), abs=1e-7)


def test_random_and_oracle_controls_drop_what_they_claim():
    from core.detectors.detect import oracle_drop_mask, random_drop_mask

    poisoned = torch.zeros(1000, dtype=torch.bool)
    poisoned[::10] = True
    random = random_drop_mask(1000, 137, seed=4)
    assert int(random.sum()) == 137 and torch.equal(random, random_drop_mask(1000, 137, seed=4))
    assert not torch.equal(random, random_drop_mask(1000, 137, seed=5))
    quality = filter_quality(torch.rand(1000), random, poisoned, 0.5)
    assert abs(quality["precision"] - 0.1) < 0.08  # chance level: the base rate of poisons
    oracle = oracle_drop_mask(poisoned)
    assert torch.equal(oracle, poisoned)
    perfect = filter_quality(poisoned.float(), oracle, poisoned, 0.5)
    assert perfect["precision"] == perfect["recall"] == perfect["auroc"] == 1.0
    with pytest.raises(ValueError):
        random_drop_mask(10, 11, seed=0)


def test_mahalanobis_fits_features_that_are_constant_on_the_reference():
    """Dead ReLU units (constant features) made the covariance singular and alibi-detect's eigh fail on the paper
    run; they are left out, and a point far off in the features that vary still scores far."""
    from core.detectors.detect import FeatureDetector

    generator = torch.Generator().manual_seed(0)
    varying = torch.randn(300, 8, generator=generator)
    features = lambda x: torch.cat([x, torch.zeros(len(x), 24)], dim=1)  # noqa: E731 - 24 dead units
    detector = FeatureDetector("mahalanobis", features).fit(varying)
    assert int(detector.kept_features.sum()) == 8
    scores = detector.score(torch.cat([varying[:5], varying[:5] + 10]))
    assert scores[5:].min() > scores[:5].max()
