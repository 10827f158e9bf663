import pytest
import torch

from core.attacks.robust import (
    ExpectationOverTransformation,
    RobustEvalConfig,
    attack_suite,
    is_stochastic,
    robust_report,
)
from core.defences import Purifier


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


def _input_gradient(model, x, y):
    x = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    return x.grad


def test_expectation_over_the_noise_follows_the_mean_gradient_one_pass_misses(small_classifier, small_splits):
    """Behind test-time noise one pass's gradient is one draw's: EOT's mean over 16 passes agrees in sign with the
    expected gradient (estimated with 256 passes) far more often than a single pass does."""
    test = small_splits.test.subset(torch.arange(64))
    x, y = test.images.float() / 255, test.labels
    noisy = torch.nn.Sequential(Purifier(torch.nn.Identity(), sigma=0.2, seed=0), small_classifier).eval()
    assert is_stochastic(noisy) and not is_stochastic(small_classifier)
    assert not is_stochastic(Purifier(torch.nn.Identity(), sigma=0.0, seed=0))  # no noise, nothing to average
    expected = _input_gradient(ExpectationOverTransformation(noisy, 256), x, y).sign()
    one_pass = (_input_gradient(noisy, x, y).sign() == expected).float().mean()
    eot = (_input_gradient(ExpectationOverTransformation(noisy, 16), x, y).sign() == expected).float().mean()
    assert eot > one_pass + 0.1, (float(eot), float(one_pass))


def test_attacks_with_eot_fool_a_noisy_model_more(small_classifier, small_splits):
    """The white-box attacks of the suite, averaged over the noise, lower the noisy model's accuracy further than
    the same attacks through one pass each step: the one-pass worst case was an upper bound."""
    test = small_splits.test.subset(torch.arange(300))
    noisy = torch.nn.Sequential(Purifier(torch.nn.Identity(), sigma=0.2, seed=0), small_classifier).eval()
    one_pass = attack_suite(noisy, test, 2 / 255, RobustEvalConfig(steps=5, temperature=1.0))
    eot = attack_suite(noisy, test, 2 / 255, RobustEvalConfig(steps=5, temperature=1.0, eot_samples=8))
    assert eot["ifgsm"] < one_pass["ifgsm"] and eot["pgd_margin"] < one_pass["pgd_margin"], (eot, one_pass)


def test_config_validation():
    with pytest.raises(ValueError):
        RobustEvalConfig(eps=-1)
    with pytest.raises(ValueError):
        RobustEvalConfig(eps_curve=(0.0, -0.1))
    with pytest.raises(ValueError):
        RobustEvalConfig(eot_samples=0)
