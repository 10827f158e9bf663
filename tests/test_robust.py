import pytest
import torch

from core.robust import RobustEvalConfig, attack_suite, robust_report


def test_the_per_input_worst_case_catches_inputs_no_single_attack_does(small_classifier, small_splits):
    """At a small eps each attack fools a different part of the test set: the per-input worst case must then be
    below the strongest single attack (a per-attack minimum would hide that)."""
    test = small_splits.test.subset(torch.arange(300))
    result = attack_suite(
        small_classifier, test, 1 / 255, RobustEvalConfig(steps=3, temperature=1.0), transfer_from=small_classifier
    )
    singles = [value for key, value in result.items() if key not in ("clean", "worst_case")]
    assert result["worst_case"] < min(singles) < result["clean"]


def test_adaptive_attacks_expose_a_masked_model(saturated_classifier, small_splits):
    test = small_splits.test.subset(torch.arange(150))
    masked = saturated_classifier  # what a high-T student looks like at T = 1
    report = robust_report(
        masked, test, RobustEvalConfig(eps=0.03, steps=5, temperature=1e3, eps_curve=(0.0, 1 / 255, 0.03))
    )
    attacks = report["attacks"]
    assert report["zero_grad_fraction"] > 0.5
    assert attacks["ifgsm_margin"] < attacks["ifgsm"]  # the plain attack is masked, the margin attack is not
    assert attacks["ifgsm_logits_t"] < attacks["ifgsm"]
    curve = [point["robust_acc"] for point in report["eps_curve"]]
    assert curve[0] > curve[1] > curve[2]  # a larger budget buys the attacker more, through the masking


def test_config_validation():
    with pytest.raises(ValueError):
        RobustEvalConfig(eps=-1)
    with pytest.raises(ValueError):
        RobustEvalConfig(eps_curve=(0.0, -0.1))
