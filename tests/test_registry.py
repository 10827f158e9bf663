"""Contract tests: every registered attack, threat model, detector and defence keeps the promises its table makes
(tests/contracts.py). They iterate the registries, so a new entry is tested here the moment it registers
(tests/test_extending.py runs the same checks on toy entries defined in one file each)."""

import pytest

from core.poison import PoisonConfig
from core.registry import ATTACKS, DEFENCES, DETECTORS, THREATS
from tests.contracts import check_attack, check_defence, check_detector, check_threat


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_stays_in_the_eps_ball_and_restores_the_mode(name, tiny_model):
    check_attack(name, tiny_model)


@pytest.mark.parametrize("name", THREATS.names())
def test_every_threat_poisons_only_its_mask_seeded(name, tiny_model):
    check_threat(name, tiny_model)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_detector_follows_alibi_detect_threshold_semantics(name, tiny_model):
    check_detector(name, tiny_model)


@pytest.mark.parametrize("name", DEFENCES.names())
def test_every_defence_returns_a_uint8_training_set_with_its_labels(name):
    check_defence(name)


def test_unknown_names_and_duplicates_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        PoisonConfig(threat="gradient_matching")
    with pytest.raises(ValueError, match="already registered"):
        ATTACKS.register(type(ATTACKS["fgsm"])("fgsm", "again", lambda *a, **k: None, iterative=False))
