"""`python -m core verify` and `report` on a tiny finished run: they pass on it and catch each kind of tampering."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.cli import main
from core.experiments.evaluate import AttackEvalConfig
from core.experiments.run import Run, train_run
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def tiny_run(gtsrb_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("verify")
    # The attacks on a stratified half of the test set, as the paper preset does on a share of it.
    config = tiny_config(eval_attack=AttackEvalConfig(test_subset=0.5))
    return train_run(config, base / "run", base / "cache", gtsrb_root)


def _copy(run: Run, tmp_path):
    shutil.copytree(run.directory, tmp_path / "copy")
    return tmp_path / "copy"


def test_verify_passes_on_an_untouched_run(tiny_run, gtsrb_root, capsys):
    assert (
        main(["verify", "--run-dir", str(tiny_run.directory), "--sample", "0.5", "--data-root", str(gtsrb_root)]) == 0
    )
    out = capsys.readouterr().out
    assert "verified: all" in out and "NO" not in out.split("\n", 1)[1]


def test_the_attacks_ran_on_the_stated_share_and_their_records_are_verified(tiny_run, gtsrb_root, tmp_path, capsys):
    records = load_file(str(tiny_run.directory / "evaluation.safetensors"))
    data = tiny_run.results["data"]
    assert len(records["undefended/clean_acc"]) == data["n_test"]
    assert len(records["undefended/ifgsm_acc"]) == data["n_attack_test"]
    assert abs(data["n_attack_test"] - data["n_test"] / 2) <= 43  # stratified over 43 classes
    folder = _copy(tiny_run, tmp_path)
    records["undefended/ifgsm_acc"] = 1 - records["undefended/ifgsm_acc"]
    records["undefended/fgsm_acc"] = 1 - records["undefended/fgsm_acc"]
    save_file(records, str(folder / "evaluation.safetensors"))
    assert main(["verify", "--run-dir", str(folder), "--sample", "0.5", "--data-root", str(gtsrb_root)]) == 1
    err = capsys.readouterr().err
    assert "undefended ifgsm_acc" in err and "undefended clean_acc" not in err


def test_verify_catches_an_edited_accuracy(tiny_run, gtsrb_root, tmp_path, capsys):
    folder = _copy(tiny_run, tmp_path)
    results = json.loads((folder / "results.json").read_text())
    results["models"]["undefended"]["ifgsm_acc"] += 0.01
    (folder / "results.json").write_text(json.dumps(results))
    assert main(["--data-root", str(gtsrb_root), "verify", "--run-dir", str(folder), "--sample", "0.5"]) == 1
    assert "undefended ifgsm_acc: record vs results.json" in capsys.readouterr().err


def test_verify_catches_records_that_the_model_does_not_reproduce(tiny_run, gtsrb_root, tmp_path, capsys):
    folder = _copy(tiny_run, tmp_path)
    records = load_file(str(folder / "evaluation.safetensors"))
    records["filter_only/clean_acc"] = 1 - records["filter_only/clean_acc"]  # every image flipped
    save_file(records, str(folder / "evaluation.safetensors"))
    assert main(["verify", "--run-dir", str(folder), "--sample", "0.5", "--data-root", str(gtsrb_root)]) == 1
    assert "filter_only clean_acc" in capsys.readouterr().err


def test_verify_catches_poisons_outside_the_eps_ball_and_other_scores(tiny_run, gtsrb_root, tmp_path, capsys):
    folder = _copy(tiny_run, tmp_path)
    poisons = load_file(str(folder / "poisons.safetensors"))
    poisons["images"][0] = 255 - poisons["images"][0]
    save_file(poisons, str(folder / "poisons.safetensors"))
    assert main(["verify", "--run-dir", str(folder), "--sample", "1.0", "--data-root", str(gtsrb_root)]) == 1
    err = capsys.readouterr().err
    assert "eps-ball" in err and "DAE scores" in err


def test_report_gives_paired_standard_errors(tiny_run, gtsrb_root, capsys):
    assert main(["report", "--run-dir", str(tiny_run.directory), "--data-root", str(gtsrb_root)]) == 0
    out = capsys.readouterr().out
    assert "undefended - clean_reference" in out and "noise" in out
    from core.reporting.report import paired_gap

    gap = paired_gap(torch.tensor([1, 1, 0, 1]), torch.tensor([1, 0, 0, 0]))
    assert gap["gap"] == pytest.approx(0.5) and gap["se"] == pytest.approx((1 / 3) ** 0.5 / 2)


def test_verify_checks_the_shipped_comparison_and_catches_an_edit(tmp_path, capsys):
    import json

    from core.experiments.compare import SHIPPED_COMPARISON

    assert main(["verify", "--comparison", str(SHIPPED_COMPARISON)]) == 0
    comparison = json.loads(SHIPPED_COMPARISON.read_text())
    comparison["summary"]["backdoor"]["reference"]["undefended"]["clean_acc"]["mean"] += 0.001
    (tmp_path / "compare.json").write_text(json.dumps(comparison))
    capsys.readouterr()
    assert main(["verify", "--comparison", str(tmp_path / "compare.json")]) == 1
    assert "summary = mean / std" in capsys.readouterr().err
