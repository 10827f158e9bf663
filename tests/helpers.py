"""What several test files share: driving the app through AppTest, and the tiny experiment config.

Test files import from here (and fixtures come from conftest.py), never from one another."""

from dataclasses import replace
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.experiments.pipeline import ExperimentConfig, preset

APP = str(Path(__file__).resolve().parents[1] / "app.py")

PAGES = [
    "pages/overview.py",
    "pages/poison.py",
    "pages/autoencoder.py",
    "pages/threshold.py",
    "pages/distillation.py",
    "pages/detectors.py",
    "pages/your_images.py",
]


def app(run_directory) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["run_dir"] = run_directory
    return at


def on_page(run_directory, page: str) -> AppTest:
    """The app, run once, then switched to page."""
    at = app(run_directory)
    at.run()
    at.switch_page(page).run()
    return at


def assert_clean(at: AppTest) -> None:
    """No exception and no error box anywhere (page or sidebar)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]


def metric(at: AppTest, label: str) -> str:
    """The value of the metric card with this label."""
    return next(m.value for m in at.metric if m.label == label)


def tiny_config(**overrides) -> ExperimentConfig:
    """The tiny preset (core.experiments.pipeline.preset): 6% of train, 2% of test, width-8 classifiers, one epoch."""
    return replace(preset("tiny"), preset="quick", **overrides)
