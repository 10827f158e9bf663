"""README's "Extending" is true: a toy attack, threat model, detector and defence, each one file in tests/plugins/,
are found in the CLI's choices and the app's selectors, pass the registries' contract tests, and work end to end;
a module dropped into core/plugins/ is found by the registries' own discovery."""

import importlib
import sys

import pytest
import torch

from core.cli import build_parser
from core.registry import ATTACKS, DEFENCES, DETECTORS, STUDIES, THREATS
from tests import contracts
from tests.helpers import on_page

TOYS = {
    "toy_random_sign": ATTACKS,
    "toy_darken": THREATS,
    "toy_darkness": DETECTORS,
    "toy_mirror": DEFENCES,
    "toy_histogram": STUDIES,
}


@pytest.fixture
def toys():
    """Import the five plugin files (each registers itself), unregister them afterwards."""
    for module in ("toy_attack", "toy_threat", "toy_detector", "toy_defence", "toy_study"):
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
    assert "toy_mirror" in choices("defences", option="--defences")
    assert "toy_mirror" in choices("budget", option="--defences")
    from core.cli import parse
    from core.studies.run import experiment_of

    _, options, _ = parse(["run", "--threat", "toy_darken", "--attack", "toy_random_sign"])
    poison = experiment_of(options).poison
    assert poison.threat == "toy_darken" and poison.fraction == 0.2  # the spec's default fraction


def test_the_toy_study_is_a_command_with_a_flag_per_option(toys, capsys):
    """One file (tests/plugins/toy_study.py) makes a command: its subcommand, flags, help, choices, validation and
    output come from the study's options dataclass and main, and nothing else names it."""
    from core.cli import main

    assert "toy_histogram" in build_parser()._subparsers._group_actions[0].choices
    assert choices("toy_histogram", option="--shape") == ("counts", "shares")
    assert main(["toy_histogram", "--values", "0.1", "0.6", "0.7", "--bins", "2"]) == 0
    assert capsys.readouterr().out.strip() == "1 2"
    assert main(["toy_histogram", "--values", "0.1", "0.6", "--shape", "shares"]) == 0
    assert capsys.readouterr().out.strip() == "0.50 0.00 0.50 0.00"
    with pytest.raises(SystemExit) as missing:  # a required option
        main(["toy_histogram"])
    assert missing.value.code == 2 and "--values" in capsys.readouterr().err
    assert main(["toy_histogram", "--values", "0.5", "--bins", "0"]) == 2  # the options' own validation
    assert capsys.readouterr().err.strip() == "error: --bins must be >= 1, got 0"
    with pytest.raises(SystemExit):
        main(["toy_histogram", "--help"])
    assert "equal-width bins over [0, 1]" in capsys.readouterr().out


def test_every_study_is_a_command_with_one_flag_per_option():
    """The CLI is generated: each registered study is a subcommand whose flags are exactly its options' fields, and
    its defaults parse back to the options' defaults."""
    from dataclasses import fields

    from core.cli import parse

    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == set(STUDIES.names()) and len(commands) >= 13
    for study in STUDIES.specs():
        flags = {action.dest for action in commands[study.name]._actions if action.option_strings}
        assert flags - {"help", "data_root", "download"} == {each.name for each in fields(study.options)}, study.name
    _, options, data = parse(["sweep", "--run-dir", "somewhere", "--drop-shares", "0", "0.5"])
    assert options.drop_shares == (0.0, 0.5) and options.filters == ("detector", "random", "oracle")
    assert options.cpus_per_cell is None and data.download is False


def test_toys_pass_the_contract_tests(toys, tiny_model):
    contracts.check_attack("toy_random_sign", tiny_model)
    contracts.check_threat("toy_darken", tiny_model)
    contracts.check_detector("toy_darkness", tiny_model)
    contracts.check_defence("toy_mirror")


def test_the_toy_detector_finds_the_toy_threat(toys):
    from sklearn.metrics import roc_auc_score

    from core.poison import PoisonConfig, poison_training_set

    clean = contracts.random_set(300)
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
    assert "Toy: mirror the images" in at.selectbox(key="defence").options
    assert "Toy: darkness (not scored on this run)" in at.selectbox(key="score").options
    at.selectbox(key="score").set_value("toy_darkness").run()
    assert not at.exception and any("not been scored" in message.value for message in at.info)


def test_the_toy_defence_trains_and_tests_through_the_same_operation(toys):
    """Its training set is the mirrored images with their labels, and its test-time module mirrors inputs the same
    way: a model behind it sees at test time what it saw in training."""
    from core.defences import DefenceConfig, DefenceContext

    clean = contracts.random_set(12)
    spec = DEFENCES["toy_mirror"]
    trained_on = spec.apply(clean, DefenceContext(None, lambda detector: None), DefenceConfig())
    assert trained_on.images.dtype == torch.uint8 and torch.equal(trained_on.labels, clean.labels)
    test_view = spec.test_input(DefenceConfig())(clean.images.float() / 255)
    assert torch.equal((test_view * 255).round().to(torch.uint8), trained_on.images)
    assert not torch.equal(trained_on.images, clean.images)


def test_a_module_in_core_plugins_is_discovered(tmp_path, monkeypatch):
    """core.registry.load_builtins imports every module on core.plugins' path: a plugin dropped there registers itself
    without any other file naming it."""
    import core.plugins
    import core.registry

    (tmp_path / "dropped_in_toy.py").write_text(
        (__import__("pathlib").Path(__file__).parent / "plugins" / "toy_threat.py")
        .read_text()
        .replace('"toy_darken"', '"toy_dropped_in"')
    )
    monkeypatch.setattr(core.plugins, "__path__", [*core.plugins.__path__, str(tmp_path)])
    monkeypatch.setattr(core.registry, "_loaded", False)
    try:
        assert "toy_dropped_in" not in THREATS._specs
        assert "toy_dropped_in" in THREATS.names()  # names() loads the built-ins and the plugins
        assert THREATS["toy_dropped_in"].label == "Toy: darkened images"
    finally:
        THREATS.unregister("toy_dropped_in")
        sys.modules.pop("core.plugins.dropped_in_toy", None)
