"""Contract tests: every registered attack, threat model, detector and defence keeps the promises its table makes
(tests/contracts.py). They iterate the registries, so a new entry is tested here the moment it registers
(tests/test_extending.py runs the same checks on toy entries defined in one file each)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.engine.registry import ATTACKS, DEFENCES, DETECTORS, THREATS
from core.threats.poison import PoisonConfig
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


def test_a_knob_checks_its_values_and_a_default_value_is_unset():
    from core.engine.registry import Knob, checked_knobs

    size = Knob("kernel_size", 3, "side", choices=(3, 5, 7))
    blur = Knob("blur", 0.3, "taps", low=0, high=1)
    spec = type("Spec", (), {"name": "blurry", "knobs": (size, blur)})()
    entries = {"blurry": spec}
    assert checked_knobs({"blurry.blur": 1, "blurry.kernel_size": 5}, entries) == (
        ("blurry.blur", 1.0),
        ("blurry.kernel_size", 5),
    )
    assert checked_knobs([("blurry.blur", 0.3)], entries) == ()  # the default: one config, one key
    for bad, says in (
        ({"blurry.blur": 1.5}, "blurry.blur must be in [0, 1]"),
        ({"blurry.blur": "much"}, "blurry.blur is a number"),
        ({"blurry.blur": True}, "blurry.blur is a number"),
        ({"blurry.kernel_size": 4}, "must be one of 3, 5, 7"),
        ({"blurry.kernel_size": 3.5}, "is a whole number"),
        ({"blurry.sharpness": 1}, "unknown knob 'blurry.sharpness': knobs here are blurry.kernel_size, blurry.blur"),
        ({"other.blur": 1}, "unknown knob 'other.blur'"),
        (["blurry.blur"], "a knob setting is ('entry.knob', value)"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            checked_knobs(bad, entries)
    with pytest.raises(ValueError, match="lower-case"):
        Knob("Blur", 0.3, "taps")
    with pytest.raises(ValueError, match="must be in"):
        Knob("blur", 2.0, "taps", low=0, high=1)  # a default outside its own range


@given(
    settings=st.dictionaries(
        st.sampled_from(["cuda.blur", "cuda.kernel_size", "cuda.nothing", "ops.blur", "", "."]),
        st.one_of(st.floats(allow_nan=True), st.integers(-10, 10), st.text(max_size=5), st.booleans(), st.none()),
        max_size=3,
    )
)
@settings(max_examples=150, deadline=None)
def test_any_knob_setting_is_a_config_or_a_value_error(settings):
    """Fuzzed knob settings (the keys a file or a link may hold): PoisonConfig accepts them or says what is wrong in a
    ValueError; an accepted one round-trips through its file."""
    try:
        config = PoisonConfig(threat="cuda", knobs=settings)
    except ValueError as error:
        assert str(error)
        return
    assert PoisonConfig.from_dict(config.to_dict()) == config
    assert 0 <= config.knob("cuda", "blur") <= 1 and config.knob("cuda", "kernel_size") in (3, 5, 7)
