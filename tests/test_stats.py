"""The one significance rule (core/engine/stats.py) and the words the generator chooses from it
(core/reporting/findings.py)."""

import math

import pytest

from core.engine.stats import auroc_se, beyond_noise, critical, floored_gap, interval, seed_gap, verdict
from core.reporting.findings import sweep_against_random


def test_the_rule_is_a_t_interval_on_seeds_minus_one_degrees_of_freedom():
    assert critical(2) == pytest.approx(4.303, abs=1e-3)
    assert critical(math.inf) == pytest.approx(1.960, abs=1e-3)
    # z = -2.3 on 3 seeds (README once called it significant): within noise under the rule
    three_seeds = {"gap": -0.0061, "se": 0.0026, "df": 2}
    assert not beyond_noise(three_seeds)
    assert "within noise" in verdict({**three_seeds, "z": -2.3, "n": 3})
    # the same z over thousands of paired images is beyond noise
    assert beyond_noise({"gap": -0.0061, "se": 0.0026, "df": 12629})
    low, high = interval(three_seeds)
    assert low < 0 < high


def test_gaps_over_seeds_carry_their_degrees_of_freedom_and_the_floor():
    gap = seed_gap([0.90, 0.91, 0.92], [0.80, 0.81, 0.82])
    assert gap["df"] == 2 and gap["se"] == pytest.approx(0.0, abs=1e-12)
    floored = floored_gap([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], n_images=1263)
    assert floored["se"] > 0.005  # seeds that agree exactly do not make a gap exact: the test noise is the floor
    assert floored["df"] == 2


def test_auroc_standard_error_shrinks_with_the_classes():
    assert auroc_se(0.5, 3529, 31759) < auroc_se(0.5, 100, 900)
    assert abs(0.495 - 0.5) <= 1.96 * auroc_se(0.495, 3529, 31759)  # the paper run's DAE: at chance


def sweep(detector: list[float], random: list[float]) -> dict:
    measurements = []
    for seed, (d, r) in enumerate(zip(detector, random)):
        for name, value in (("detector", d), ("random", r)):
            measurements.append({"filter": name, "target_share": 0.5, "seed": seed, "clean_acc": value})
    return {
        "config": {"seeds": list(range(len(detector))), "n_test": 1263, "n_robust_test": 383},
        "measurements": measurements,
    }


@pytest.mark.parametrize(
    ("detector", "random", "word"),
    [
        ([0.80, 0.82, 0.81], [0.60, 0.61, 0.62], "beats dropping the same share at random"),
        ([0.60, 0.62, 0.61], [0.61, 0.60, 0.62], "is no better than dropping the same share at random"),
        ([0.40, 0.41, 0.42], [0.60, 0.61, 0.62], "does worse than dropping at random"),
    ],
)
def test_the_sentence_chooses_its_word_from_the_numbers(detector, random, word):
    assert word in sweep_against_random(sweep(detector, random))
