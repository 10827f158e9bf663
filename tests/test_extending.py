"""README's "Extending" is true: a toy attack, threat model, detector and defence, each one file in tests/plugins/,
are found in the CLI's choices and the app's selectors, pass the registries' contract tests, and work end to end;
a module dropped into core/plugins/ is found by the registries' own discovery."""

import importlib
import sys

import pytest
import torch

from core.cli import build_parser
from core.engine.registry import ATTACKS, DEFENCES, DETECTORS, STUDIES, THREATS
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
    # a threat reaches the defence grid as a case of its own name, with no row written anywhere else (issue 37)
    assert "toy_darken" in choices("defences", option="--cases")
    from core.experiments.defence_grid import DefenceGridConfig, grid_cases
    from core.experiments.pipeline import preset

    assert grid_cases()["toy_darken"] == {"threat": "toy_darken"}
    grid = DefenceGridConfig(preset("tiny"), cases=("toy_darken",), defences=("toy_mirror",))
    assert grid.poison_for("toy_darken", 1).threat == "toy_darken" and grid.poison_for("toy_darken", 1).seed == 1
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
        knob_fields = {each.name for each in fields(study.options) if "knobs_of" in each.metadata}
        plain = {flag for flag in flags if not flag.startswith("knob:")}
        globals_ = {"help", "data_root", "download", "threads"}  # every command's (core/cli.py)
        assert plain - globals_ == {each.name for each in fields(study.options)} - knob_fields
        if knob_fields:  # an entry's knob is a flag of every study whose options hold that table's knobs
            assert {flag for flag in flags if flag.startswith("knob:")}, study.name
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

    from core.threats.poison import PoisonConfig, poison_training_set

    clean = contracts.random_set(300)
    poisoned = poison_training_set(clean, None, PoisonConfig(threat="toy_darken", fraction=0.2))
    from core.detectors.detect import DetectorContext

    detector = DETECTORS["toy_darkness"].build(DetectorContext(None, None, None, None, "toy"))
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
    """core.engine.registry.load_builtins imports every module on core.plugins' path: a plugin dropped there registers
    itself without any other file naming it."""
    import core.engine.registry
    import core.plugins

    (tmp_path / "dropped_in_toy.py").write_text(
        (__import__("pathlib").Path(__file__).parent / "plugins" / "toy_threat.py")
        .read_text()
        .replace('"toy_darken"', '"toy_dropped_in"')
    )
    monkeypatch.setattr(core.plugins, "__path__", [*core.plugins.__path__, str(tmp_path)])
    monkeypatch.setattr(core.engine.registry, "_loaded", False)
    try:
        assert "toy_dropped_in" not in THREATS._specs
        assert "toy_dropped_in" in THREATS.names()  # names() loads the built-ins and the plugins
        assert THREATS["toy_dropped_in"].label == "Toy: darkened images"
    finally:
        THREATS.unregister("toy_dropped_in")
        sys.modules.pop("core.plugins.dropped_in_toy", None)


def test_a_knob_declared_in_a_spec_is_a_config_value_a_flag_and_a_widget(toys, capsys, run_directory):
    """Issue 23: an entry's own parameter is one declaration in its file (core.engine.registry.Knob). The toys' knobs
    become flags of the studies that read their tables, reach the configs the entries read, change what the entry does
    and what keys its models, are refused with one error line when out of range, and are widgets on the Poison page."""
    from core.cli import main, parse
    from core.defences import DefenceConfig, DefenceContext
    from core.studies.run import experiment_of
    from core.threats.poison import PoisonConfig, poison_training_set

    _, options, _ = parse(
        ["run", "--threat", "toy_darken", "--toy-darken-factor", "4", "--toy-random-sign-share", "0.5"]
    )
    poison = experiment_of(options).poison
    assert poison.knob("toy_darken", "factor") == 4 and poison.knob("toy_random_sign", "share") == 0.5
    assert poison.to_dict()["knobs"] == {"toy_darken.factor": 4}  # the file and cache key: this threat's own
    _, options, _ = parse(["defences", "--toy-mirror-axis", "height", "--cuda-blur", "0.5"])
    grid = options.grid_config()
    assert grid.defence.knob("toy_mirror", "axis") == "height"
    assert grid.poison_for("cuda", 0).to_dict()["knobs"] == {"cuda.blur": 0.5}  # a built-in threat's knob
    assert "knobs" not in grid.poison_for("ops", 0).to_dict()  # another case's file and key are untouched
    assert "toy_mirror.axis" in grid.defence.key("toy_mirror")  # a model behind the defence is keyed by its knob
    _, options, _ = parse(["compare", "--toy-darkness-power", "2"])
    assert options.compare_config().knobs == (("toy_darkness.power", 2.0),)

    assert main(["run", "--toy-darken-factor", "9"]) == 2  # out of the knob's range: one error line
    assert capsys.readouterr().err.strip() == "error: toy_darken.factor must be in [2, 8], got 9"
    with pytest.raises(SystemExit):  # not one of its choices: argparse's one line
        main(["defences", "--toy-mirror-axis", "diagonal"])
    assert "invalid choice: 'diagonal'" in capsys.readouterr().err

    clean = contracts.random_set(40)
    halved, quartered = (
        poison_training_set(clean, None, PoisonConfig(threat="toy_darken", fraction=1.0, knobs=knobs)).data.images
        for knobs in ((), {"toy_darken.factor": 4})
    )
    assert torch.equal(halved, clean.images // 2) and torch.equal(quartered, clean.images // 4)
    upside_down = DefenceConfig(knobs={"toy_mirror.axis": "height"})
    trained_on = DEFENCES["toy_mirror"].apply(clean, DefenceContext(None, lambda detector: None), upside_down)
    assert torch.equal(trained_on.images, clean.images.flip(-2))

    at = on_page(run_directory, "pages/poison.py")
    at.radio(key="threat").set_value("toy_darken").run()
    factor = at.number_input(key="threat_toy_darken_factor")
    assert factor.value == 2 and factor.min == 2 and factor.max == 8
    factor.set_value(4).run()
    assert not at.exception
    assert at.session_state["custom_poison"]["knobs"] == {"toy_darken.factor": 4}
