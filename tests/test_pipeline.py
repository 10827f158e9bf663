"""A tiny end-to-end run, the Optuna study, and the command line's error handling."""

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from core.detectors.dae import DAEConfig, TuneConfig, load_study_if_any, tune
from core.engine.models import AutoencoderConfig
from core.experiments.pipeline import MODEL_NAMES, export_run, preset, run_experiment
from core.threats.poison import PoisonConfig
from tests.helpers import tiny_config


def test_tiny_end_to_end_run_has_every_field_in_range(gtsrb_root, tmp_path):
    stages = []
    results, state = run_experiment(
        tiny_config(), tmp_path / "cache", gtsrb_root, progress=lambda stage, done, total: stages.append(stage)
    )
    export_run(results, state, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["poison"]["eps"] == 0.01
    assert saved["poison"]["n_poisoned"] == round(0.1 * saved["poison"]["n_train"])
    assert saved["poison"]["linf_levels"] <= 2
    f = saved["filter"]
    for key in (
        "threshold",
        "auroc",
        "precision",
        "recall",
        "kept_clean",
        "kept_poisoned",
        "dropped_clean",
        "dropped_poisoned",
    ):
        assert key in f
    assert (
        f["kept_clean"] + f["kept_poisoned"] + f["dropped_clean"] + f["dropped_poisoned"] == saved["poison"]["n_train"]
    )
    assert f["kept_poisoned"] + f["dropped_poisoned"] == saved["poison"]["n_poisoned"]
    assert 0 <= f["auroc"] <= 1 and 0 <= f["precision"] <= 1 and 0 <= f["recall"] <= 1 and f["threshold"] > 0
    for name in MODEL_NAMES:
        for metric in ("clean_acc", "fgsm_acc", "ifgsm_acc"):
            value = saved["models"][name][metric]
            assert 0 <= value <= 1 and not math.isnan(value)
    assert saved["paper"]["student_adversarial_acc"] == pytest.approx(0.7609)
    # the file records where it was computed: README quotes wall times with the threads and machine behind them
    assert saved["machine"]["threads"] == torch.get_num_threads() and saved["machine"]["cores"] >= 1
    assert saved["machine"]["device"] in ("CPU",) or saved["machine"]["device"].startswith("GPU")
    assert {"training surrogate", "crafting poisons", "training DAE"} <= set(stages)
    for role in ("surrogate", "dae", *MODEL_NAMES):
        assert (tmp_path / "out" / f"{role}.safetensors").exists() and (tmp_path / "out" / f"{role}.json").exists()

    # the follow-up commands on the finished run: adaptive robustness, every detector, abstention
    from core.cli import main

    out = str(tmp_path / "out")
    assert (
        main(["--data-root", str(gtsrb_root), "robustness", "--run-dir", out, "--test-subset", "0.005", "--steps", "1"])
        == 0
    )
    robust = json.loads((tmp_path / "out" / "results.json").read_text())["models"]["filter_distillation"]
    assert 0 <= robust["adaptive_acc"] <= 1 and 0 <= robust["zero_grad_fraction"] <= 1 and len(robust["eps_curve"]) >= 5
    # the same evaluation with a cell per model on a local Ray instance: the same robustness.json
    import ray

    local = (tmp_path / "out" / "robustness.json").read_text()
    robustness = ["--data-root", str(gtsrb_root), "robustness", "--run-dir", out, "--test-subset", "0.005"]
    assert main(robustness + ["--steps", "1", "--executor", "ray"]) == 0
    ray.shutdown()
    assert (tmp_path / "out" / "robustness.json").read_text() == local
    assert (
        main(
            [
                "--data-root",
                str(gtsrb_root),
                "detectors",
                "--run-dir",
                out,
                "--supervised-epochs",
                "1",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    detectors = json.loads((tmp_path / "out" / "detectors.json").read_text())["detectors"]
    assert set(detectors) == {
        "dae",
        "magnet",
        "mahalanobis_latent",
        "mahalanobis_features",
        "knn_latent",
        "knn_features",
        "supervised",
        "spectral_signatures",  # on the run's own undefended model, fitted on its training set
        "activation_clustering",
        "activation_clustering_rule",  # its authors' decision rule: flags 0 or 1
    }
    assert all(0 <= quality["auroc"] <= 1 for quality in detectors.values())
    # scored on the run's stored poisons, the DAE gives exactly the run's own scores (nothing re-crafted)
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "out" / "scores.safetensors"))["train_scores"]
    assert torch.equal(load_file(str(tmp_path / "out" / "detector_scores.safetensors"))["dae"], stored)
    assert detectors["dae"]["auroc"] == saved["filter"]["auroc"]
    assert (tmp_path / "out" / "supervised_detector.safetensors").exists()
    assert (
        main(["--data-root", str(gtsrb_root), "abstain", "--run-dir", out, "--passes", "3", "--test-subset", "0.02"])
        == 0
    )
    abstention = json.loads((tmp_path / "out" / "abstention.json").read_text())
    assert set(abstention["sets"]) == {"clean", "ifgsm", "pgd_margin"}
    assert 0 <= abstention["sets"]["clean"]["at_cutoff"]["coverage"] <= 1

    # an identical rerun reuses every cached model: same numbers, no training stage
    stages.clear()
    again, _ = run_experiment(
        tiny_config(), tmp_path / "cache", gtsrb_root, progress=lambda stage, done, total: stages.append(stage)
    )
    assert not any(stage.startswith("training") for stage in stages)
    assert again["models"] == results["models"] and again["filter"] == results["filter"]


def test_tiny_backdoor_run_reports_attack_success_and_caches_the_relabelled_set(gtsrb_root, tmp_path):
    from core.threats.poison import PoisonConfig

    config = tiny_config(poison=PoisonConfig(threat="backdoor", fraction=0.2, target_class=3))
    results, state = run_experiment(config, tmp_path / "cache", gtsrb_root)
    assert results["poison"]["threat"] == "backdoor"
    assert results["poison"]["n_relabelled"] == results["poison"]["n_poisoned"] > 0
    for name in MODEL_NAMES:
        assert 0 <= results["models"][name]["attack_success_rate"] <= 1
    # the cached poisoned set comes back with its changed labels, not the clean ones
    again, state_again = run_experiment(config, tmp_path / "cache", gtsrb_root, evaluate=False)
    assert torch.equal(state_again.poisoned.data.labels, state.poisoned.data.labels)
    assert torch.equal(state_again.poisoned.data.images, state.poisoned.data.images)


def test_cli_threat_defaults_follow_the_threat():
    from core.cli import parse
    from core.studies.run import experiment_of

    def poison(*args):
        return experiment_of(parse(["run", *args])[1]).poison

    assert poison("--threat", "label_flip").fraction == 0.4
    assert poison("--threat", "backdoor").fraction == 0.05
    assert poison("--threat", "backdoor", "--poison-fraction", "0.2").fraction == 0.2
    assert poison().fraction == 0.1 and poison().threat == "perturbation"


def test_the_command_a_job_runs_makes_the_config_it_was_made_from():
    """core.studies.run.run_arguments (what the app's *Run the experiment* job runs) inverts experiment_of, stored knobs
    (--trigger-size, --craft-augment: parameters older than knobs) and an entry's own knobs alike; --craft-augment
    alone means true, as before it was a knob."""
    from core.cli import parse
    from core.studies.run import experiment_of, run_arguments

    knobs = {"tap.craft_augment": True, "tap.smooth_scale": 4, "backdoor.trigger_size": 5, "cuda.blur": 0.5}
    config = replace(preset("quick"), poison=PoisonConfig(threat="tap", eps=8 / 255, knobs=knobs))
    assert experiment_of(parse(["run", *run_arguments(config)])[1]) == config
    alone = experiment_of(parse(["run", "--threat", "tap", "--craft-augment"])[1]).poison
    assert alone.knob("tap", "craft_augment") is True
    assert experiment_of(parse(["run", "--craft-augment", "false"])[1]).poison.knob("tap", "craft_augment") is False


def test_a_stored_knob_stays_at_the_top_of_every_poison_config_file():
    """Every poison config's dict holds trigger_size, craft_augment, noise_scope and smooth_scale at the top level,
    whatever its threat, as files and cache keys did when they were config fields (Knob.stored_as), and a file of that
    form reads back into the knobs. Two entries cannot claim one stored name."""
    from core.engine.registry import THREATS, Knob, ThreatSpec

    data = PoisonConfig(threat="label_flip", source_class=1).to_dict()
    assert {name: data[name] for name in ("trigger_size", "craft_augment", "noise_scope", "smooth_scale")} == {
        "trigger_size": 3,
        "craft_augment": False,
        "noise_scope": "samplewise",
        "smooth_scale": 1,
    }
    assert "knobs" not in data  # a label flip owns no knob of its own
    old_file = {**data, "threat": "unlearnable", "noise_scope": "classwise"}
    config = PoisonConfig.from_dict(old_file)
    assert config.knob("unlearnable", "noise_scope") == "classwise" and config.to_dict() == old_file
    thief = ThreatSpec(
        name="thief",
        label="t",
        description="d",
        apply=None,
        default_fraction=0.1,
        fraction_of="t",
        params=(),
        knobs=(Knob("size", 3, "a trigger", 1, 16, stored_as="trigger_size"),),
    )
    with pytest.raises(ValueError, match="backdoor"):
        THREATS.register(thief)
    assert "thief" not in THREATS.names()


def test_run_over_seeds_reports_mean_and_std(gtsrb_root, tmp_path):
    from core.experiments.run import seed_config, seed_dir, summarise_seeds, train_run

    out = tmp_path / "seeds"
    runs = {
        str(seed): train_run(
            seed_config(tiny_config(), seed), seed_dir(out, "quick", seed, 2), tmp_path / "cache", gtsrb_root
        )
        for seed in (0, 1)
    }
    summary = summarise_seeds(tiny_config(), runs, out)
    stored = json.loads((tmp_path / "seeds" / "seeds.json").read_text())
    assert stored["seeds"] == [0, 1] and stored["summary"] == summary
    per_seed = [json.loads((tmp_path / "seeds" / f"seed{seed}" / "results.json").read_text()) for seed in (0, 1)]
    values = [run["models"]["undefended"]["clean_acc"] for run in per_seed]
    assert summary["models"]["undefended"]["clean_acc"]["mean"] == pytest.approx(sum(values) / 2)
    assert summary["models"]["undefended"]["clean_acc"]["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert per_seed[0]["config"]["seed"] == 0 and per_seed[1]["config"]["poison"]["seed"] == 1


def test_optuna_study_persists_and_resumes(tmp_path):
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    base = DAEConfig(model=AutoencoderConfig(depth=2, width=4, latent_dim=8))
    config = TuneConfig(trials=2, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="t", epochs_per_trial=1)
    first = tune(images, images, base, config)
    assert len(first.trials) == 2 and (tmp_path / "optuna.db").exists()
    second = tune(images, images, base, replace(config, trials=1))
    assert len(second.trials) == 3  # the same study, resumed from disk
    assert second.best_value <= min(t.value for t in first.trials if t.value is not None)
    assert "config" in second.best_trial.user_attrs


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--eps", "-0.1"], "eps"),
        (["run", "--alpha", "1e9"], "alpha"),
        (["run", "--attack", "cw"], "invalid choice"),
        (["run", "--poison-fraction", "1.5"], "fraction"),
        (["run", "--temperature", "0"], "temperature"),
        (["run", "--preset", "huge"], "preset"),
        (["run", "--steps", "0"], "steps"),
        (["run", "--fpr", "2"], "fpr"),
        (["--data-root", "/nonexistent", "run"], "GTSRB_ROOT"),
        (["run", "--eps", "abc"], "invalid float"),
        (["run", "--threat", "label_flip", "--source-class", "3", "--target-class", "3"], "different from the target"),
        (["run", "--threat", "backdoor", "--trigger-size", "40"], "trigger_size"),
        (["compare", "--seeds", "0"], "--seeds"),
        (["run", "--seeds", "0"], "--seeds"),
        (["compare", "--detectors", "dae", "--distil", "magnet"], "not scored"),
        (["abstain", "--run-dir", "/nonexistent"], "results.json"),
        (["detectors", "--run-dir", "/nonexistent"], "results.json"),
    ],
)
def test_cli_bad_parameters_exit_with_one_clear_line(args, message):
    result = _cli(*args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and message in lines[0] and "Traceback" not in result.stderr


def test_cli_tune_then_run_with_the_best_trial_in_a_fresh_folder(gtsrb_root, tmp_path, capsys):
    from core.cli import main, parse
    from core.studies.run import experiment_of

    storage = f"sqlite:///{tmp_path / 'nested' / 'optuna.db'}"  # the folder does not exist yet
    missing = _cli("run", "--use-best-trial", "--storage", storage, "--study", "none")
    assert missing.returncode != 0 and "no finished trial" in missing.stderr
    assert main(["tune", "--trials", "2", "--epochs", "1", "--storage", storage, "--study", "s"]) == 0
    assert "best trial" in capsys.readouterr().out and (tmp_path / "nested" / "optuna.db").exists()
    config = experiment_of(parse(["run", "--use-best-trial", "--storage", storage, "--study", "s"])[1])
    study = load_study_if_any(TuneConfig(storage=storage, study_name="s"))
    assert config.dae.model.latent_dim == study.best_params["latent_dim"]
    assert config.dae.train.learning_rate == study.best_params["learning_rate"]


def test_the_compare_preset_is_the_one_the_shipped_grids_were_made_with():
    """Recipe 3 changed the paper and quick presets only: the compare preset (classifier recipe 2's settings) is
    still exactly the experiment the shipped defence grid, backdoor comparison and budget curves record."""
    import json
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "checkpoints"
    recorded = [
        json.loads((shipped / "defences" / "defences.json").read_text())["config"]["experiment"],
        json.loads((shipped / "compare_backdoor" / "compare.json").read_text())["config"]["experiment"],
        json.loads((shipped / "budget" / "budget.json").read_text())["tap"]["config"]["experiment"],
    ]
    for experiment in recorded:
        assert json.loads(json.dumps(preset("compare", seed=experiment["seed"]).to_dict())) == experiment
    assert preset("paper").classifier_train != preset("compare").classifier_train
