import math

import pytest
import torch

from core.detectors.abstain import (
    AbstainConfig,
    MCDropoutDetector,
    abstention_report,
    expected_kl,
    mc_dropout_probabilities,
)
from core.engine.data import ImageSet


def random_images(n: int, seed: int) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    return ImageSet(
        torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8),
        torch.randint(0, 43, (n,), generator=generator),
    )


def test_expected_kl_is_zero_when_passes_agree_and_positive_when_they_do_not():
    agree = torch.softmax(torch.randn(1, 5, 4), dim=2).expand(6, 5, 4)
    assert torch.allclose(expected_kl(agree), torch.zeros(5), atol=1e-6)
    disagree = torch.softmax(torch.randn(6, 5, 4) * 3, dim=2)
    assert (expected_kl(disagree) > 1e-3).all()


def test_mc_dropout_varies_across_passes_is_seeded_and_restores_the_mode(tiny_model):
    images = random_images(8, 0).images
    first = mc_dropout_probabilities(tiny_model, images, passes=4, seed=1)
    assert first.shape == (4, 8, 43)
    assert not torch.allclose(first[0], first[1])  # dropout is on
    assert torch.equal(first, mc_dropout_probabilities(tiny_model, images, passes=4, seed=1))
    assert not tiny_model.training  # eval mode restored, batch norm never switched to batch statistics


def test_abstention_calibration_hits_its_false_positive_rate_on_held_out_clean_data(tiny_model):
    # Calibrate on one half of i.i.d. "clean" inputs; the other half must be rejected at the chosen rate,
    # within sampling error (4 standard errors of the difference of two binomial proportions).
    fpr, n = 0.1, 1500
    config = AbstainConfig(passes=8, fpr=fpr, seed=0)
    calibration, held_out = random_images(n, 1), random_images(n, 2)
    detector = MCDropoutDetector(tiny_model, config)
    detector.fit(calibration.images)
    detector.infer_threshold(calibration.images, fpr)
    rejected = float(detector.predict(held_out.images).is_outlier.float().mean())
    tolerance = 4 * math.sqrt(2 * fpr * (1 - fpr) / n)
    assert abs(rejected - fpr) < tolerance, (rejected, tolerance)


def test_abstention_report_coverage_falls_with_the_cutoff(tiny_model):
    report = abstention_report(
        tiny_model,
        random_images(200, 3),
        {"clean": random_images(100, 4)},
        AbstainConfig(passes=4, fpr=0.2, curve_points=6),
    )
    clean = report["sets"]["clean"]
    coverages = [point["coverage"] for point in clean["curve"]]
    assert coverages == sorted(coverages) and coverages[-1] == 1.0
    assert 0 < clean["at_cutoff"]["coverage"] < 1


def test_abstention_config_rejects_nonsense():
    with pytest.raises(ValueError, match="at least 2 passes"):
        AbstainConfig(passes=1)
    with pytest.raises(ValueError, match="fpr"):
        AbstainConfig(fpr=0)
