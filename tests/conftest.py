"""Shared fixtures. Tests that need GTSRB fail (never skip) when it is missing: set GTSRB_ROOT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from core.engine.data import dataset_available, default_root, load_splits
from core.engine.models import Classifier, ClassifierConfig
from core.engine.train import TrainConfig, hard_label_loss, train

torch.set_num_threads(max(1, os.cpu_count() or 1))
# AppTest runs no JavaScript: the tests read the Threshold page's server-side view (ui/threshold_view.py is the
# browser's; tests/test_threshold_view.py drives it in Chromium with this unset)
os.environ.setdefault("DAE_DISTILL_SERVER_VIEW", "1")

# Markers (pyproject.toml lists them; `make test-fast` deselects slow, browser and cluster):
#   gtsrb    needs the dataset: every test that uses the gtsrb_root fixture, directly or through another fixture
#   browser  drives a real Chromium (tests/test_browser.py)
#   cluster  starts a real Ray instance or PostgreSQL server (tests/test_cluster.py)
#   slow     over about 20 s on 2 cores: the files below, and tests marked one by one
MARKED_FILES = {
    "test_browser.py": ("browser", "slow"),
    "test_browser_jobs.py": ("browser", "slow"),  # a tiny run and its sweep as a background job, a server restart
    "test_cluster.py": ("cluster", "slow"),
    "test_app.py": ("slow",),  # every test opens the shipped run in Streamlit's AppTest
    "test_checkpoints.py": ("slow",),  # verify on the shipped run
    "test_hardening.py": ("slow",),  # a hostile walk through every page
}


def pytest_collection_modifyitems(items):
    for item in items:
        for name in MARKED_FILES.get(item.path.name, ()):
            item.add_marker(name)
        if "gtsrb_root" in getattr(item, "fixturenames", ()):
            item.add_marker("gtsrb")


@pytest.fixture(scope="session")
def gtsrb_root() -> Path:
    root = default_root()
    if not dataset_available(root):
        pytest.fail(
            f"GTSRB not found at '{root}': set GTSRB_ROOT to the folder holding gtsrb/ (CI uses ../shared/data)"
        )
    return root


@pytest.fixture(scope="session")
def small_splits(gtsrb_root):
    """A stratified quarter of the train split and a tenth of the test split."""
    return load_splits(gtsrb_root, trusted_fraction=0.1, seed=0, train_subset=0.25, test_subset=0.1)


@pytest.fixture(scope="session")
def small_classifier(small_splits) -> Classifier:
    """A narrow classifier trained briefly on the small split: good enough to attack."""
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(width=8, hidden=64))
    train(
        model,
        small_splits.train.images,
        small_splits.train.labels,
        hard_label_loss(),
        TrainConfig(epochs=2, learning_rate=0.05, seed=0),
        device=torch.device("cpu"),
    )
    return model.eval()


@pytest.fixture
def tiny_model() -> Classifier:
    """A random narrow classifier: fast, for properties that hold for any model."""
    torch.manual_seed(0)
    return Classifier(ClassifierConfig(num_classes=43, width=4, hidden=16)).eval()


class Saturated(torch.nn.Module):
    """A model whose logits are scaled up: what a student distilled at a high T looks like at T = 1."""

    def __init__(self, base, scale):
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x):
        return self.base(x) * self.scale


@pytest.fixture(scope="session")
def saturated_classifier(small_classifier) -> torch.nn.Module:
    return Saturated(small_classifier, 1e3).eval()


@pytest.fixture(scope="session")
def run_directory(gtsrb_root):
    """The run the app tests open: $DAE_DISTILL_RUN, else the shipped paper run."""
    from core.experiments.run import SHIPPED_RUN

    directory = os.environ.get("DAE_DISTILL_RUN", str(SHIPPED_RUN))
    assert os.path.exists(os.path.join(directory, "results.json")), f"no shipped run at {directory}"
    return directory


@pytest.fixture(scope="module")
def tiny_run(gtsrb_root, tmp_path_factory):
    """A finished run of tests.helpers.tiny_config (seconds to train), once per test module."""
    from core.experiments.run import train_run
    from tests.helpers import tiny_config

    base = tmp_path_factory.mktemp("tiny_run")
    return train_run(tiny_config(), base / "run", base / "cache", gtsrb_root)
