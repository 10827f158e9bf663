"""The detector comparison: controls drop what they claim, every detector follows alibi-detect's
threshold semantics, and a tiny comparison over two seeds has mean +- std for every number."""

import json
from dataclasses import replace

import pytest
import torch

from core.cli import main
from core.detectors.detect import (
    SupervisedConfig,
    SupervisedDetector,
    jensen_shannon,
    oracle_drop_mask,
    random_drop_mask,
    train_supervised_detector,
)
from core.engine.stats import summarise
from core.experiments.compare import CompareConfig, compare
from tests.helpers import tiny_config


def random_uint8(n, seed):
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_random_control_drops_exactly_n_and_oracle_exactly_the_poisons():
    dropped = random_drop_mask(1000, 137, seed=4)
    assert int(dropped.sum()) == 137
    assert not torch.equal(dropped, random_drop_mask(1000, 137, seed=5))  # seeded, not fixed
    poison_mask = torch.rand(1000, generator=torch.Generator().manual_seed(0)) < 0.1
    assert torch.equal(oracle_drop_mask(poison_mask), poison_mask)
    with pytest.raises(ValueError):
        random_drop_mask(10, 11, seed=0)


def test_jensen_shannon_bounds():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert torch.allclose(jensen_shannon(p, p), torch.zeros(2))
    assert torch.allclose(jensen_shannon(p[:1], torch.tensor([[0.0, 1.0]])), torch.tensor([0.6931]), atol=1e-4)


def test_summary_gives_mean_and_sample_std_over_seeds():
    runs = {"0": {"backdoor": {"a": {"x": 0.2, "none": None}}}, "1": {"backdoor": {"a": {"x": 0.4, "none": None}}}}
    summary = summarise(runs)["backdoor"]["a"]
    assert summary["x"]["mean"] == pytest.approx(0.3) and summary["x"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert summary["x"]["n"] == 2 and summary["none"] is None


def test_tiny_comparison_over_two_seeds(gtsrb_root, tmp_path):
    config = CompareConfig(
        tiny_config(),
        threats=("backdoor", "label_flip"),
        detectors=("dae", "knn_latent", "supervised"),
        distil=("none", "random", "oracle", "dae"),
        seeds=(0, 1),
        robust_test_subset=0.5,
        robust_steps=2,
        knobs={"supervised.width": 4, "supervised.epochs": 1},
    )
    # seed 0 first, saved after every cell; then both seeds resumed from that result: seed 0 is kept, not recomputed
    partials = []
    first = compare(replace(config, seeds=(0,)), tmp_path / "cache", gtsrb_root, on_cell=partials.append)
    assert [list(partial["summary"]) for partial in partials] == [["backdoor"], ["backdoor", "label_flip"]]
    assert partials[0]["runs"]["0"].keys() == {"backdoor"} and partials[-1]["runs"] == first["runs"]
    saved = json.loads(json.dumps(first))
    partials.clear()
    result = compare(config, tmp_path / "cache", gtsrb_root, previous=saved, on_cell=partials.append)
    assert result["runs"]["0"] == saved["runs"]["0"] and len(partials) == 2  # only seed 1's two cells ran
    assert result["seconds"] >= saved["seconds"]
    for seed in ("0", "1"):
        backdoor = result["runs"][seed]["backdoor"]
        poison, filters = backdoor["poison"], backdoor["filters"]
        assert filters["oracle"]["recall"] == 1.0 and filters["oracle"]["precision"] == 1.0
        assert filters["oracle"]["n_kept"] == poison["n_train"] - poison["n_poisoned"]
        assert filters["random"]["n_kept"] == poison["n_train"] - poison["n_drop"]
        assert filters["none"]["n_kept"] == poison["n_train"]
        for name in ("dae", "knn_latent", "supervised"):
            assert 0 <= filters[name]["auroc"] <= 1
        for name in config.distil:
            student = filters[name]["student"]
            assert 0 <= student["attack_success_rate"] <= 1 and 0 <= student["adaptive_acc"] <= 1
    summary = result["summary"]["backdoor"]
    assert summary["filters"]["oracle"]["recall"] == {"mean": 1.0, "std": 0.0, "n": 2}
    assert summary["reference"]["undefended"]["attack_success_rate"]["n"] == 2


def test_a_comparison_keeps_finished_cells_only_under_the_same_settings():
    from core.experiments.compare import finished_comparisons

    config = CompareConfig(tiny_config(), threats=("backdoor", "label_flip"), detectors=("dae",), seeds=(0, 1))
    saved = json.loads(json.dumps({"config": config.to_dict(), "runs": {"0": {"backdoor": {"n_test": 1}}}}))
    assert finished_comparisons(config, saved) == {"0": {"backdoor": {"n_test": 1}}}
    assert finished_comparisons(replace(config, seeds=(1, 2)), saved) == {}  # seed 0 not asked for
    assert finished_comparisons(replace(config, threats=("label_flip",)), saved) == {"0": {}}
    # the threat's poisoned share, a detector, the robust evaluation or the experiment changed: nothing is kept
    assert finished_comparisons(replace(config, fractions={"backdoor": 0.2}), saved) == {"0": {}}
    assert finished_comparisons(replace(config, detectors=("dae", "knn_latent")), saved) == {}
    assert finished_comparisons(replace(config, robust_steps=3), saved) == {}
    assert finished_comparisons(replace(config, experiment=tiny_config(temperature=2.0)), saved) == {}
    assert finished_comparisons(config, None) == {}


def test_compare_cli_rejects_unknown_names_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["compare", "--threats", "gradient_matching"])
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "gradient_matching" in error and "\n" not in error


def test_noise_residual_detector_learns_a_two_level_noise_floor():
    """Smooth images vs the same images with +-2 grey levels of sign noise: invisible to the eye, plain
    in the high-pass residual. A few epochs must separate held-out pairs."""
    from sklearn.metrics import roc_auc_score

    generator = torch.Generator().manual_seed(0)

    def smooth(n):
        coarse = torch.rand(n, 3, 4, 4, generator=generator) * 200 + 20
        return (
            torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
            .round()
            .to(torch.uint8)
        )

    def noisy(images):
        signs = torch.randint(0, 2, images.shape, generator=generator) * 2 - 1
        return (images.int() + 2 * signs).clamp(0, 255).to(torch.uint8)

    train_clean, test_clean = smooth(256), smooth(128)
    model = train_supervised_detector(train_clean, noisy(train_clean), SupervisedConfig(width=8, epochs=3))
    detector = SupervisedDetector(model)
    scores = torch.cat([detector.score(test_clean), detector.score(noisy(test_clean))])
    labels = torch.cat([torch.zeros(128), torch.ones(128)])
    assert roc_auc_score(labels.numpy(), scores.numpy()) > 0.95
