"""The shipped paper run: its models load and reproduce their recorded accuracy; bad files fail clearly."""
import json
import shutil

import pytest

from core import explore
from core.evaluate import accuracy
from core.models import Classifier
from core.pipeline import MODEL_NAMES, SHIPPED_ROLES
from core.storage import CheckpointError, load_weights, save_model

SHIPPED = SHIPPED_RUN


def test_shipped_run_is_complete_and_small():
    results = json.loads((SHIPPED / "results.json").read_text())
    for key in ("config", "poison", "filter", "models", "paper"):
        assert key in results
    for role in SHIPPED_ROLES:
        assert (SHIPPED / f"{role}.safetensors").exists() and (SHIPPED / f"{role}.json").exists(), role
    size = sum(path.stat().st_size for path in SHIPPED.iterdir())
    assert size < 30 * 2**20, f"shipped checkpoints are {size / 2**20:.1f} MB"
    assert results["config"]["train_subset"] == 1.0 and results["data"]["n_test"] == 12_630  # the paper preset, all of GTSRB
    assert results["models"]["clean_reference"]["clean_acc"] >= 0.985


def test_shipped_models_reproduce_their_recorded_clean_accuracy(gtsrb_root):
    run = load_run(SHIPPED)
    from core.data import load_gtsrb

    test = load_gtsrb("test", gtsrb_root)
    for name in MODEL_NAMES:
        model = run.classifier(name)
        recorded = run.results["models"][name]["clean_acc"]
        assert accuracy(model, test.images, test.labels) == pytest.approx(recorded, abs=0.002), name


def test_shipped_scores_match_the_shipped_dae(gtsrb_root):
    run = load_run(SHIPPED)
    assert len(run.train_scores) == run.results["poison"]["n_train"] == len(run.poison_mask)
    assert int(run.poison_mask.sum()) == run.results["poison"]["n_poisoned"]
    # the recorded filter counts follow from the stored scores and threshold
    counts = explore.threshold_counts(run.train_scores.numpy(), run.poison_mask.numpy(), run.threshold)
    for key in ("kept_clean", "kept_poisoned", "dropped_clean", "dropped_poisoned"):
        assert counts[key] == run.results["filter"][key], key


def test_corrupt_or_mismatched_checkpoints_raise_clear_errors(tmp_path):
    model = Classifier()
    save_model(tmp_path, "model", model, {"a": 1})
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(tmp_path, "model", Classifier())
    save_model(tmp_path, "model", Classifier(), {"a": 1})
    from core.models import ClassifierConfig

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
    from core import storage

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
