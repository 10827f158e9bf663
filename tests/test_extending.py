"""README's "Extending" is true: a toy attack, threat model and detector, each one file in tests/plugins/, are
found in the CLI's choices and the app's selectors, pass the registries' contract tests, and work end to end."""

import importlib
import sys

import pytest
import torch

from core.cli import build_parser
from core.registry import ATTACKS, DETECTORS, THREATS
from tests import test_registry
from tests.test_app import on_page

TOYS = {"toy_random_sign": ATTACKS, "toy_darken": THREATS, "toy_darkness": DETECTORS}


@pytest.fixture
def toys():
    """Import the three plugin files (each registers itself), unregister them afterwards."""
    for module in ("toy_attack", "toy_threat", "toy_detector"):
        name = f"tests.plugins.{module}"
        importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    yield
    for name, registry in TOYS.items():
        registry.unregister(name)


def choices(*argv_prefix, option):
    parser = build_parser()
    subparser = parser._subparsers._group_actions[0].choices[argv_prefix[0]]
    return next(action.choices for action in subparser._actions if option in action.option_strings)


def test_toys_are_in_the_cli_choices(toys):
    assert "toy_random_sign" in choices("run", option="--attack")
    assert "toy_darken" in choices("run", option="--threat")
    assert "toy_darken" in choices("compare", option="--threats")
    assert "toy_darkness" in choices("compare", option="--detectors")
    args = build_parser().parse_args(["run", "--threat", "toy_darken", "--attack", "toy_random_sign"])
    from core.cli import experiment_from_args

    poison = experiment_from_args(args).poison
    assert poison.threat == "toy_darken" and poison.fraction == 0.2  # the spec's default fraction


def test_toys_pass_the_contract_tests(toys, tiny_model):
    test_registry.check_attack("toy_random_sign", tiny_model)
    test_registry.check_threat("toy_darken", tiny_model)
    test_registry.check_detector("toy_darkness", tiny_model)


def test_the_toy_detector_finds_the_toy_threat(toys):
    from sklearn.metrics import roc_auc_score

    from core.poison import PoisonConfig, poison_training_set

    clean = test_registry.random_set(300)
    poisoned = poison_training_set(clean, None, PoisonConfig(threat="toy_darken", fraction=0.2))
    detector = DETECTORS["toy_darkness"].build(None)
    detector.fit(clean.images[:50])
    scores = detector.score(poisoned.data.images)
    assert roc_auc_score(poisoned.poison_mask.numpy(), scores.numpy()) > 0.95
    assert torch.isfinite(scores).all()


def test_toys_are_in_the_app_selectors(toys, run_directory):
    at = on_page(run_directory, "pages/poison.py")
    assert "Toy: darkened images" in at.radio(key="threat").options  # options are shown by label
    at.sidebar.radio(key="preset").set_value("Custom").run()
    assert "Toy: random signs" in at.selectbox(key="attack").options
    at.radio(key="threat").set_value("toy_darken").run()
    assert not at.exception
    assert any("training samples poisoned" in message.value for message in at.success)
    at = on_page(run_directory, "pages/your_images.py")
    assert "Toy: random signs" in at.selectbox(key="upload_attack").options
    at = on_page(run_directory, "pages/threshold.py")
    assert "Toy: darkness (not scored on this run)" in at.selectbox(key="score").options
    at.selectbox(key="score").set_value("toy_darkness").run()
    assert not at.exception and any("not been scored" in message.value for message in at.info)
