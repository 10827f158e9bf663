"""Blind settings (issue 38): chosen on clean data before any poison, recorded, then frozen for a grid."""

import json

from core.cli import main
from core.experiments.blind import BLIND_FILE, choose
from core.studies.defences import DefencesOptions


def test_the_strongest_setting_within_the_budget_is_chosen_and_the_least_costly_when_none_is():
    assert choose(0.98, [0.975, 0.97, 0.962, 0.955]) == 2  # 0.962 is within 2 points, 0.955 is not
    assert choose(0.98, [0.95, 0.985, 0.90]) == 1  # a weaker value that fails does not stop a stronger one
    assert choose(0.98, [0.90, 0.80]) == 0
    assert choose(0.98, [0.71, 0.83, 0.92, 0.90]) == 2  # none within: the least costly, not the weakest (I-BAU)


def test_blind_writes_every_value_it_tried_and_a_grid_freezes_its_choice(gtsrb_root, tmp_path, capsys):
    out = tmp_path / "blind"
    command = ["blind", "--data-root", str(gtsrb_root), "--preset", "tiny", "--out", str(out)]
    command += ["--defences", "grayscale_jpeg", "sharpen_lowpass", "--cache-dir", str(tmp_path / "cache")]
    assert main(command) == 0
    settings = BLIND_FILE.read(out / "settings.json", missing_ok=False)
    assert set(settings["defences"]) == {"grayscale_jpeg", "sharpen_lowpass"}
    for name, result in settings["defences"].items():
        accuracies = [point["clean_acc"] for point in result["values"]]
        assert len(accuracies) == 5 and all(0 <= acc <= 1 for acc in accuracies)
        index = choose(settings["reference_acc"], accuracies)
        assert result["chosen"] == result["values"][index]["value"]
        assert settings["knobs"][f"{name}.{result['knob']}"] == result["chosen"]
    assert settings["validation"]["n"] > 0
    printed = capsys.readouterr().out
    assert "grayscale_jpeg" in printed and "--blind" in printed

    frozen = DefencesOptions(blind=out / "settings.json").grid_config().defence
    for name, result in settings["defences"].items():  # (a value equal to the knob's default is stored as unset)
        assert frozen.knob(name, result["knob"]) == result["chosen"]
    # a flag given beside the file wins over the file's choice
    flagged = DefencesOptions(blind=out / "settings.json", knobs=(("sharpen_lowpass.cutoff", 23),))
    assert flagged.grid_config().defence.knob("sharpen_lowpass", "cutoff") == 23


def test_defences_with_a_missing_or_foreign_blind_file_is_one_error_line(tmp_path, capsys):
    (tmp_path / "settings.json").write_text(json.dumps({"something": "else"}))
    for path in (tmp_path / "missing" / "settings.json", tmp_path / "settings.json"):
        assert main(["defences", "--blind", str(path), "--out", str(tmp_path / "grid")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
