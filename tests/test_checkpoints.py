"""The shipped paper run: its models load and reproduce their recorded accuracy; bad files fail clearly."""

import json
import shutil

import pytest

from core.cli import main
from core.engine.models import Classifier
from core.engine.storage import CheckpointError, load_weights, save_model
from core.experiments.pipeline import SHIPPED_ROLES
from core.experiments.run import SHIPPED_RUN, Run, load_run

SHIPPED = SHIPPED_RUN


def test_shipped_run_is_complete_and_small():
    results = json.loads((SHIPPED / "results.json").read_text())
    for key in ("config", "poison", "filter", "models", "paper", "recipe_versions"):
        assert key in results
    for role in SHIPPED_ROLES:
        assert (SHIPPED / f"{role}.safetensors").exists() and (SHIPPED / f"{role}.json").exists(), role
    for name in (
        "poisons.safetensors",
        "evaluation.safetensors",
        "scores.safetensors",
        "robustness.json",
        "detectors.json",
        "abstention.json",
    ):
        assert (SHIPPED / name).exists(), name
    size = sum(path.stat().st_size for path in SHIPPED.iterdir())
    assert size < 40 * 2**20, f"shipped checkpoints are {size / 2**20:.1f} MB"
    assert (
        results["config"]["train_subset"] == 1.0 and results["data"]["n_test"] == 12_630
    )  # the paper preset, all of GTSRB
    assert load_run(SHIPPED).outdated == []  # made with the current recipe of every stage


def test_verify_reproduces_the_shipped_run(gtsrb_root, capsys):
    """CI's check that every shipped number still follows from the shipped models and poisons (a 4% sample)."""
    assert main(["verify", "--run-dir", str(SHIPPED), "--sample", "0.04", "--data-root", str(gtsrb_root)]) == 0
    assert "verified: all" in capsys.readouterr().out


def test_a_run_of_an_older_recipe_loads_and_says_so(tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(SHIPPED, old)
    results = json.loads((old / "results.json").read_text())
    results["recipe_versions"]["classifier"] = 1
    results["config"]["classifier_train"]["drop_last"] = False  # what runs before classifier recipe 2 stored
    (old / "results.json").write_text(json.dumps(results))
    run = load_run(old)
    assert run.outdated == ["classifier"] and "older recipe of classifier" in run.outdated_note()
    # anything trained from it uses the current recipe: the stored drop_last is not carried over
    assert "drop_last" not in json.dumps(run.config.to_dict())
    from core.experiments.run import warn_if_outdated

    warn_if_outdated(run)
    assert capsys.readouterr().err.startswith("note: run")


def test_corrupt_or_mismatched_checkpoints_raise_clear_errors(tmp_path):
    model = Classifier()
    save_model(tmp_path, "model", model, {"a": 1})
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(tmp_path, "model", Classifier())
    save_model(tmp_path, "model", Classifier(), {"a": 1})
    from core.engine.models import ClassifierConfig

    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(tmp_path, "model", Classifier(ClassifierConfig(width=8)))
    with pytest.raises(CheckpointError, match="missing"):
        load_weights(tmp_path, "absent", Classifier())


def test_a_corrupt_run_folder_is_reported_not_crashed(tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(SHIPPED, broken)
    (broken / "results.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(broken)
    (broken / "results.json").unlink()
    with pytest.raises(CheckpointError, match="no results.json"):
        load_run(broken)


def test_writes_are_atomic(tmp_path, monkeypatch):
    from core.engine import storage

    save_model(tmp_path, "m", Classifier(), {"v": 1})
    before = (tmp_path / "m.safetensors").read_bytes()

    def failing_save(state, path):
        open(path, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(storage, "save_file", failing_save)
    with pytest.raises(OSError):
        save_model(tmp_path, "m", Classifier(), {"v": 2})
    assert (tmp_path / "m.safetensors").read_bytes() == before  # the old file is intact
    assert not list(tmp_path.glob("*.tmp"))  # and no temp file is left behind


def test_a_corrupt_cache_entry_is_moved_aside_and_rebuilt(tmp_path, capsys):
    from core.engine.models import ClassifierConfig
    from core.experiments.pipeline import ModelCache

    cache, fits = ModelCache(tmp_path), []

    def fit():
        fits.append(1)
        return Classifier(ClassifierConfig(width=4, hidden=8))

    def build():
        return Classifier(ClassifierConfig(width=4, hidden=8))

    _, name = cache.get("toy", {"a": 1}, build, fit)
    cache.get("toy", {"a": 1}, build, fit)
    assert len(fits) == 1  # an intact entry is reused
    weights = tmp_path / f"{name}.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # what a crash mid-write leaves
    cache.get("toy", {"a": 1}, build, fit)
    assert len(fits) == 2 and list(tmp_path.glob(f"{name}.corrupt-*.safetensors"))
    assert "moved aside" in capsys.readouterr().err
    load_weights(tmp_path, name, build())  # the rebuilt entry loads


@pytest.mark.parametrize("name", ["paper", "sweep_paper", "sweep_tap"])
def test_the_current_code_computes_every_shipped_models_cache_key(name, gtsrb_root, tmp_path, monkeypatch):
    """Issue 37: a refactor must not change what a shipped model is keyed by. The run's pipeline is replayed on a model
    cache that holds only the run's own models under the cache names results.json recorded (and its poisons under the
    name the surrogate's recorded name gives), with training forbidden: a key the code computes differently finds no
    model and asks to train, which fails here. The teacher of distillation_only is not shipped, only its name: a
    stand-in of the same architecture sits under that name, so for it the check is on the name alone. Keys are computed
    under the recipe versions the run recorded (the sweep runs predate the last bumps, which they say they do)."""
    import core.engine.recipe
    from core.engine.train import TrainingCancelled
    from core.experiments.pipeline import poisons_cache_name, poisons_key, run_experiment

    run = Run.load(SHIPPED_RUN.parent / name)
    monkeypatch.setattr(core.engine.recipe, "RECIPE_VERSIONS", run.results["recipe_versions"])
    artifacts = run.results["artifacts"]
    cache = tmp_path / "cache"
    cache.mkdir()
    for role, cache_name in artifacts.items():
        shipped = role if (run.directory / f"{role}.safetensors").exists() else "filter_distillation_teacher"
        for suffix in (".safetensors", ".json"):
            (cache / f"{cache_name}{suffix}").symlink_to(run.directory / f"{shipped}{suffix}")
    poisons = poisons_cache_name(poisons_key(artifacts["surrogate"], run.config.poison))
    (cache / f"{poisons}.safetensors").symlink_to(run.directory / "poisons.safetensors")
    try:
        _, state = run_experiment(run.config, cache, gtsrb_root, should_stop=lambda: True, evaluate=False)
    except TrainingCancelled as error:
        pytest.fail(f"a shipped model of {name} is not found under the key the current code computes: {error}")
    assert state.artifacts == artifacts
