"""Shared widgets: the sidebar (run, preset, device), error guards, tables, figures' downloads, image helpers, the
knob widgets an entry's spec declares, and the threshold every page reads."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.engine.data import DatasetNotFoundError, dataset_available
from core.engine.storage import CheckpointError
from core.engine.train import TrainingCancelled, device_description
from core.experiments.pipeline import ExperimentConfig, preset
from core.experiments.run import Run, run_choices, weak_students_note
from core.reporting import explore
from core.reporting.images import UploadError
from core.threats.poison import PoisonConfig
from ui.data import app_dir, cached_run, data_root, dataset_counts, run_dir, shown
from ui.jobs import follow_experiment, job_settings
from ui.links import run_link_value

PRESETS = ("Paper", "Quick", "Tiny", "Custom")


EXPECTED_ERRORS = (
    ValueError,
    TypeError,
    CheckpointError,
    DatasetNotFoundError,
    UploadError,
    TrainingCancelled,
    FileNotFoundError,
    RuntimeError,
)


@contextlib.contextmanager
def guard(what: str = "this step") -> Iterator[None]:
    """Show any failure as a clear message instead of a traceback; the rest of the page keeps working."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - the app never shows a traceback
        if type(error).__name__ in ("StopException", "RerunException", "RerunData"):
            raise  # Streamlit's own control flow
        if isinstance(error, EXPECTED_ERRORS):
            st.error(f"Could not complete {what}: {error}")
        else:
            st.error(f"Could not complete {what}: unexpected {type(error).__name__}: {error}")


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    """Append the block's wall time in ms to the file $DAE_DISTILL_TIMINGS (bench/slider.py reads the server side
    of a slider move from it); does nothing when it is unset."""
    path = os.environ.get("DAE_DISTILL_TIMINGS")
    if not path:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        with open(path, "a") as timings:
            timings.write(f"{name}\t{(time.perf_counter() - started) * 1000:.2f}\n")


def pick_run() -> None:
    """The sidebar's run picker: the shipped runs and every run made here or by the command line, each with one line
    on what it is for."""
    choices = run_choices(app_dir() / "runs", Path("runs"))
    current = run_dir()
    if current not in choices:
        choices = {current: "The run this session opened.", **choices}
    st.session_state["run_picker"] = current  # the run every page shows, however it was chosen (a job may open one)
    st.query_params["run"] = run_link_value(current)  # a copied link opens the same run
    st.selectbox(
        "Run",
        list(choices),
        key="run_picker",
        format_func=lambda path: shown(path),
        on_change=lambda: st.session_state.update(run_dir=st.session_state["run_picker"]),
        help="Which run every page shows. The shipped runs, then the runs made here (newest first).",
    )
    st.caption(choices[st.session_state["run_picker"]])


def sidebar() -> None:
    """Dataset, device and current experiment, with the preset picker; shared by every page."""
    with st.sidebar:
        st.subheader("Dataset")
        root = data_root()
        if dataset_available(root):
            counts = dataset_counts(root)
            st.success(
                f"GTSRB found at `{shown(root)}`: {counts[0]:,} training and {counts[1]:,} test images, 43 classes"
            )
        else:
            st.error(f"GTSRB not found at `{shown(root)}`.")
            st.caption(
                "Set `GTSRB_ROOT` to the folder holding `gtsrb/GTSRB/Training` and restart, "
                "or run `python -m core --download data` on a machine with internet."
            )
        st.caption(f"Device: **{device_description()}**")
        st.subheader("Run shown")
        pick_run()
        st.subheader("Background jobs")

        job_settings()
        st.subheader("New experiment")
        st.radio(
            "Preset",
            PRESETS,
            key="preset",
            bind="query-params",
            horizontal=True,
            help="What *Run the experiment* (Overview) and the Poison page's preview use. Paper: all of GTSRB, the "
            "paper's settings. Quick: a quarter of it, a narrower classifier (minutes). Tiny: seconds, a smoke test of "
            "the whole flow (models too small to read numbers from). Custom: your own values on the Poison page.",
        )
        try:
            run = cached_run(run_dir())
        except (CheckpointError, OSError) as error:
            st.warning(
                f"No run loaded from `{shown(run_dir())}`: {error}. On the Overview page, *Load the shipped demo run* "
                "or *Run the experiment*; or `python -m core run --preset paper --out checkpoints/paper`."
            )
        else:
            st.caption(f"Loaded run: preset `{run.config.preset}`, {run.config.summary()}")
            if note := weak_students_note(run):
                st.warning(note)
            if run.outdated:
                st.warning(run.outdated_note())

    follow_experiment()  # outside the sidebar: a fragment draws only where it is called


def set_custom_poison(config: PoisonConfig) -> None:
    """The Poison page's current settings: what *Run the experiment* uses with the Custom preset."""
    st.session_state["custom_poison"] = config.to_dict()


def custom_poison() -> PoisonConfig | None:
    stored = st.session_state.get("custom_poison")
    return PoisonConfig.from_dict(stored) if stored else None


def preset_config() -> ExperimentConfig:
    """The config the sidebar's preset stands for (Custom starts from Paper)."""
    choice = st.session_state.get("preset", "Paper")
    return preset({"Quick": "quick", "Tiny": "tiny"}.get(choice, "paper"))


def figure_download(figure, name: str) -> None:
    """A download button for a plotly figure, as standalone HTML, built only when clicked (cheap on every rerun)."""
    st.download_button(
        f"Download {name} (HTML)",
        lambda: figure.to_html(include_plotlyjs="cdn"),
        file_name=f"{name}.html",
        mime="text/html",
        key=f"download-{name}",
    )


def full_table(frame, wide: tuple[str, ...] = ()) -> None:
    """A table tall enough for every row (no scroll hiding the last ones: the controls sat below one) and the named
    columns wide enough for their labels."""
    config = {name: st.column_config.TextColumn(width="large") for name in wide if name in frame.columns}
    st.dataframe(frame, width="stretch", hide_index=True, height=36 * (len(frame) + 1) + 3, column_config=config)


def wrapped_table(frame) -> None:
    """A table whose cells wrap to the page's width: for wide text columns (the defence ranking's nine) that a
    dataframe hid behind a sideways scroll at 1400 px. Its values are the engine's labels, never user text."""
    st.table(frame, hide_index=True)


def percentages(table: pd.DataFrame) -> pd.DataFrame:
    """A table of shares as text ("98.27%", and "—" where there is no value): a Styler's na_rep is not applied by
    st.dataframe, which showed a raw "None"."""
    return table.map(lambda value: "—" if value is None or value != value else f"{value:.2%}")


def enlarged(image, scale: int = 4) -> np.ndarray:
    """An image (HWC uint8 pixels, or a tensor: uint8 or [0, 1]) as HWC uint8 pixels, each a scale x scale block."""
    pixels = image if isinstance(image, np.ndarray) else explore.as_pixels(image)
    return np.kron(pixels, np.ones((scale, scale, 1), dtype=np.uint8))


def ringed(image, correct: bool, scale: int = 4) -> np.ndarray:
    """The image enlarged with a green (right decision) or red (wrong decision) ring, as in the paper's figures."""
    pixels = enlarged(image, scale)
    colour = np.array([0, 170, 0] if correct else [220, 0, 0], dtype=np.uint8)
    border = 3
    pixels[:border], pixels[-border:], pixels[:, :border], pixels[:, -border:] = colour, colour, colour, colour
    return pixels


def session_threshold(run: Run, score: str = "dae") -> float:
    """The Threshold page's current threshold when it was set on this run, else the run's own for the score: every
    page reads the same value, and a value set on another run or score never carries over (issue 34)."""
    same_run = st.session_state.get("threshold_run") == str(run.directory)
    if same_run and st.session_state.get("threshold_score") == score and "threshold" in st.session_state:
        return float(st.session_state["threshold"])
    return run.threshold_of(score)


def require_run() -> Run:
    """The current run, or a clear message and the end of this page's run."""
    with guard("loading the run"):
        return cached_run(run_dir())
    st.stop()


def knob_widgets(spec, key_prefix: str, disabled: bool = False) -> tuple:
    """A widget per knob an entry's spec owns (core.engine.registry.Knob), in two columns: ("entry.knob", value) pairs
    for its config. Choices: a select box; a bool: a checkbox; a number: a number box within the knob's range. A
    stored knob (Knob.stored_as) keys its widget by that name and keeps it in the link (?trigger_size=5), as the
    widget it replaced did."""
    if not spec.knobs:
        return ()
    settings = []
    columns = st.columns(2)
    for index, knob in enumerate(spec.knobs):
        common = {"disabled": disabled, "help": knob.help}
        if knob.stored_as:
            common.update(key=knob.stored_as, bind="query-params")
        else:
            common.update(key=f"{key_prefix}_{spec.name}_{knob.name}")
        label = f"{knob.name.replace('_', ' ')} ({spec.label.split(':')[0]})"
        with columns[index % 2]:
            if knob.choices is not None:
                value = st.selectbox(label, knob.choices, knob.choices.index(knob.default), **common)
            elif knob.kind is bool:
                value = st.checkbox(label, knob.default, **common)
            else:
                step = 1 if knob.kind is int else 0.01
                value = st.number_input(
                    label,
                    knob.kind(knob.low) if knob.low is not None else None,
                    knob.kind(knob.high) if knob.high is not None else None,
                    knob.default,
                    step,
                    **common,
                )
        settings.append((f"{spec.name}.{knob.name}", value))
    return tuple(settings)
