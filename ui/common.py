"""Streamlit glue shared by the pages: cached loaders keyed by small values, the sidebar, error guard.

All computing lives in `core`; this module only caches it for the app and draws shared widgets.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.engine.data import DatasetNotFoundError, cache_dir, dataset_available, default_root, load_splits
from core.engine.storage import PROJECT_ROOT, CheckpointError
from core.engine.train import TrainingCancelled, device_description
from core.experiments.budget import SHIPPED_BUDGET, load_budget
from core.experiments.compare import SHIPPED_COMPARISON, load_comparison
from core.experiments.defence_grid import SHIPPED_DEFENCE_GRIDS, load_shipped_grids
from core.experiments.pipeline import ExperimentConfig, preset
from core.experiments.run import SHIPPED_RUN, Run, run_choices, weak_students_note
from core.reporting import explore
from core.reporting.images import UploadError
from core.threats.poison import PoisonConfig, poison_training_set

if TYPE_CHECKING:
    pass

torch.set_num_threads(max(1, os.cpu_count() or 1))

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


# ---- shared links: every knob that determines a view is a widget bound to the URL (bind="query-params") --------
# Opening a link reproduces the view; a value the page cannot use is dropped by Streamlit, and said here.

# Session state that is not a widget a link may set (a link's ?threshold=-1 or ?run_picker=/etc stayed in the address)
NOT_LINKABLE = {
    "threshold",
    "threshold_run",
    "threshold_score",
    "run_dir",
    "run_picker",
    "link",
    "link_pending",
    "kept_uploads",
}
CUSTOM_KNOBS = ("attack", "eps", "alpha", "steps", "fraction", "poison_seed", "craft_augment", "noise_scope")
CUSTOM_KNOB_PAGE = "poison"  # the page whose widgets these are
# The Poison page's ranges of its numeric Custom knobs (its widgets read them here): a link value outside one is
# refused, and does not switch the preset to Custom (fraction=2 and steps=1e9 did).
CUSTOM_KNOB_RANGES = {
    "eps": (0.0, 0.1),
    "alpha": (0.0, 0.05),
    "steps": (1, 100),
    "fraction": (0.0, 1.0),
    "poison_seed": (0, 10_000),
}


def _knob_value_ok(knob: str, raw: str) -> bool:
    """Whether a link's value for a Custom-only knob is one its widget can take (eps=lots is not)."""
    from core.engine.registry import ATTACKS
    from core.threats.poison import NOISE_SCOPES

    if knob == "attack":
        return raw in ATTACKS.names() or raw in {ATTACKS.label(name) for name in ATTACKS.names()}
    if knob == "noise_scope":
        return raw in NOISE_SCOPES
    if knob == "craft_augment":
        return raw.lower() in ("true", "false")
    try:
        value = float(raw)
    except ValueError:
        return False
    if not math.isfinite(value):  # inf, nan, 1e400: int(inf) raised OverflowError here (issue 34)
        return False
    low, high = CUSTOM_KNOB_RANGES[knob]
    return low <= value <= high and (knob not in ("steps", "poison_seed") or value == int(value))


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def not_finite(raw: str) -> bool:
    """A link value that reads as a number but not a finite one (inf, -inf, nan, 1e400): no widget can take it."""
    try:
        return not math.isfinite(float(raw))
    except ValueError:
        return False


def open_link(page: str = "") -> None:
    """On a session's first run, keep the link it was opened with (to report what it could not use) and let a valid
    Custom-only knob in a link to the Poison page (poison?eps=0.05) switch the preset to Custom: Paper and Quick would
    show it but not use it. A value the knob cannot take, or the knob on another page's link, changes nothing."""
    if "link" in st.session_state:
        return
    link = st.query_params.to_dict()
    # Non-finite numbers leave the address before any widget reads them (Streamlit's own parsing of inf raised
    # OverflowError, and deleting a parameter bound to a widget raised StreamlitAPIException): said in a toast.
    refused = {key: raw for key, raw in link.items() if not_finite(raw)}
    for key in refused:
        st.query_params.pop(key, None)
        forget_initial_link_value(key)
    st.session_state["link_refused"] = refused
    link = {key: raw for key, raw in link.items() if key not in refused}
    if "run" in link:
        open_run_link(link["run"])
    st.session_state["link"] = link
    st.session_state["link_pending"] = True
    if page != CUSTOM_KNOB_PAGE:
        return
    linked = {
        key: knob for key in link for knob in CUSTOM_KNOBS if key == knob or key.startswith(f"{knob}_")
    }  # steps_tap is TAP's steps
    custom = [key for key, knob in linked.items() if _knob_value_ok(knob, link[key])]
    preset_named = link.get("preset")
    if preset_named is None and custom:
        st.session_state["preset"] = "Custom"
        st.toast(f"The link sets {', '.join(custom)}: preset Custom, so the page uses them.")
        return
    if preset_named == "Custom":
        return  # each widget takes its value or corrects it, and says so (report_link)
    # Under a fixed preset the page uses the preset's values: a disabled slider showing the link's eps 0.05 while the
    # page used 0.01, or fraction=2 switching the preset to Custom, misled (issue 34). Refused, said why.
    for key, knob in linked.items():
        if key in custom:
            why = f"the preset {preset_named} fixes it; pick Custom to set it"
        elif knob in CUSTOM_KNOB_RANGES and not _is_number(link[key]):
            why = "not a number"
        elif knob in CUSTOM_KNOB_RANGES:
            low, high = CUSTOM_KNOB_RANGES[knob]
            why = f"outside {knob}'s range {low:g} to {high:g}" + (" in whole steps" if isinstance(low, int) else "")
        else:
            why = f"not a value {knob} can take"
        st.query_params.pop(key, None)
        forget_initial_link_value(key)
        st.session_state["link_refused"][key] = (link[key], why)


def link_names(key: str, options, format_func) -> None:
    """Let a link name a choice by its registry name (?score=magnet, ?threat=tap, ?upload_attack=ifgsm) as well as by
    the label the widget shows: called before the widget, it turns the name into the label Streamlit's binding reads
    (the binding writes labels, so the app's own links keep them)."""
    if key in st.session_state or key not in st.query_params:
        return
    raw = st.query_params[key]
    option = next((option for option in options if str(option).lower() == raw.lower()), None)
    if option is None or format_func(option) == raw:
        return
    label = format_func(option)
    from streamlit.runtime.state.session_state_proxy import get_session_state

    with get_session_state().query_params() as params:
        if key in getattr(params, "_initial_query_params", {}):
            params._initial_query_params[key] = [label]
        if key in getattr(params, "_query_params", {}):
            params._query_params[key] = label
    st.session_state.setdefault("link", {})[key] = label  # what the widget now shows: nothing to report


def forget_initial_link_value(key: str) -> None:
    """Streamlit seeds a bound widget from the query string the session opened with, not from st.query_params: the
    refused value is removed there too (Streamlit 1.67's QueryParams._initial_query_params; nothing public does it)."""
    from streamlit.runtime.state.session_state_proxy import get_session_state

    with get_session_state().query_params() as params:
        getattr(params, "_initial_query_params", {}).pop(key, None)


def _shown_value(value) -> str:
    """A value as a toast shows it: floats to 4 significant digits (not 0.050000000000000003)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}" if "." in str(value) or "e" in str(value).lower() else str(value)


def _same(state, raw: str) -> bool:
    """Whether a widget's value is what the URL said (Streamlit drops values equal to the default from the URL)."""
    if isinstance(state, bool):
        return raw.lower() == str(state).lower()
    if isinstance(state, (int, float)):
        try:
            return abs(float(raw) - float(state)) <= 1e-9 * max(1.0, abs(float(state)))
        except ValueError:
            return False
    return str(state) == raw


def report_link() -> None:
    """After the first run of a session: one toast per link value the page did not use, and why."""
    if not st.session_state.pop("link_pending", False):
        return
    ignored = {
        key: refused if isinstance(refused, tuple) else (refused, "not a finite number")
        for key, refused in st.session_state.pop("link_refused", {}).items()
    }
    for key, raw in st.session_state.get("link", {}).items():
        if key == "run" or key in ignored:  # the run: the sidebar's, said by open_run_link
            continue
        if key in NOT_LINKABLE:  # the session's own state, not a widget: a link cannot set it
            ignored[key] = (raw, "not a setting a link can change")
            st.query_params.pop(key, None)
            continue
        # Streamlit keeps a valid value (a choice as its label), corrects or drops the others
        now = st.query_params.get(key)
        if key not in st.session_state:  # no widget of this page took it (the address may still hold it)
            ignored[key] = (raw, "not a setting of this page")
            st.query_params.pop(key, None)  # said once, then gone from the address bar
        elif now == raw or _same(st.session_state[key], raw):
            continue
        elif now is not None:
            ignored[key] = (raw, f"corrected to {_shown_value(now)}")
        else:
            ignored[key] = (raw, f"not a valid value here; showing {_shown_value(st.session_state[key])}")
    for key, (raw, why) in ignored.items():
        # a toast renders Markdown: the link's own text is escaped, shown as typed
        st.toast(f"Ignored the link's {as_text(key)}={as_text(raw[:40])}: {why}.", icon=":material/link_off:")


MARKDOWN_SPECIALS = set("\\`*_[]$<>~|!")  # what renders inline: emphasis, code, links, images, KaTeX, HTML, tables


def as_text(text) -> str:
    """User text (a file name, a link value) for a Markdown element, every Markdown, KaTeX and HTML character escaped:
    shown as typed, never rendered (issue 34: a file name made bold text, a link and KaTeX)."""
    return "".join("\\" + char if char in MARKDOWN_SPECIALS else char for char in str(text))


def run_dir() -> str:
    """The run the pages show: the session's choice (a link's ?run=), else $DAE_DISTILL_RUN, else the demo run."""
    return st.session_state.setdefault("run_dir", os.environ.get("DAE_DISTILL_RUN", str(SHIPPED_RUN)))


def run_link_value(directory: str) -> str:
    """How a run is written in a link: its shown name (checkpoints/paper, app/runs/quick-ifgsm-eps0.01-seed0-1a2b3c)."""
    return shown(directory)


def open_run_link(value: str) -> None:
    """A link's ?run=: one of the runs the picker lists, by its shown name; anything else is said and ignored."""
    choices = run_choices(app_dir() / "runs", Path("runs"))
    found = next((path for path in choices if run_link_value(path) == value), None)
    if found is None:
        st.toast(f"Ignored the link's run={as_text(value[:60])}: no such run here.", icon=":material/link_off:")
        return
    st.session_state["run_dir"] = found


def app_dir() -> Path:
    """Everything the app writes (its runs, their model cache, its jobs, the Optuna study) lives here:
    $DAE_DISTILL_APP_DIR, else the data cache's folder $DAE_DISTILL_CACHE (default ~/.cache/dae-distill) / app; never
    the working directory."""
    return Path(os.environ.get("DAE_DISTILL_APP_DIR") or cache_dir() / "app")


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


PROJECT = Path(__file__).resolve().parents[1]


def shown(path) -> str:
    """A path as the pages print it: relative to the project (checkpoints/paper, ../shared/data), or to the app's own
    folder (app/runs/quick-ifgsm-eps0.01-seed0-1a2b3c), not the machine's absolute path; absolute only when it is on
    another drive."""
    try:
        return "app/" + Path(path).resolve().relative_to(app_dir().resolve()).as_posix()
    except ValueError:
        pass
    try:
        return os.path.relpath(Path(path).resolve(), PROJECT)
    except ValueError:
        return str(path)


def data_root() -> str:
    return str(default_root())


def cached_run(directory: str) -> Run:
    """The run, reloaded when one of its JSON files changed (a sweep or detectors added while the app runs)."""
    stamp = tuple((path.name, path.stat().st_mtime_ns) for path in sorted(Path(directory).glob("*.json")))
    return _loaded_run(directory, stamp)


@st.cache_resource(max_entries=4, show_spinner="Loading the run...")
def _loaded_run(directory: str, stamp: tuple) -> Run:
    return Run.load(directory)


@st.cache_resource(max_entries=16, show_spinner="Loading a model...")
def cached_classifier(directory: str, role: str) -> torch.nn.Module:
    return cached_run(directory).classifier(role)


@st.cache_resource(max_entries=4, show_spinner="Loading the autoencoder...")
def cached_autoencoder(directory: str) -> torch.nn.Module:
    return cached_run(directory).autoencoder()


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_supervised_detector(directory: str):
    return cached_run(directory).supervised_detector()


@st.cache_resource(max_entries=2, show_spinner="Loading GTSRB...")
def cached_splits(root: str, trusted_fraction: float, seed: int, train_subset: float, test_subset: float):
    return load_splits(root, trusted_fraction, seed, train_subset, test_subset)


@st.cache_data(max_entries=2, show_spinner="Reading GTSRB...")
def dataset_counts(root: str) -> tuple[int, int]:
    from core.engine.data import load_gtsrb

    return len(load_gtsrb("train", root)), len(load_gtsrb("test", root))


def run_splits(run: Run):
    c = run.config
    return cached_splits(data_root(), c.trusted_fraction, c.seed, c.train_subset, c.test_subset)


@st.cache_data(max_entries=4, show_spinner="Timing a training step and the attacks on this device...")
def point_seconds_here(
    width: int, hidden: int, batch_size: int, steps: int, images: tuple, attack_steps: int, robust_steps: int
) -> float:
    """Estimated seconds of one threshold point on this device (core.experiments.live.point_seconds); images: (name,
    count)."""
    from core.engine.models import Classifier, ClassifierConfig
    from core.experiments.live import point_seconds

    return point_seconds(
        lambda: Classifier(ClassifierConfig(width=width, hidden=hidden)),
        batch_size,
        steps,
        dict(images),
        attack_steps,
        robust_steps,
    )


@st.cache_data(max_entries=8, show_spinner="Timing this machine for the estimate (a few seconds)...")
def experiment_seconds_here(config: ExperimentConfig, threads: int, shares: tuple[float, ...], points: int) -> dict:
    """core.experiments.live.experiment_seconds of an experiment and its one-seed threshold curve (`points` points at
    sweep settings over `shares`) on this machine, timed with the job's thread count."""
    from core.experiments.live import experiment_seconds
    from core.experiments.sweep import SweepConfig

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return experiment_seconds(
            config, dataset_counts(data_root()), SweepConfig(drop_shares=shares, seeds=(0,)), points
        )
    finally:
        torch.set_num_threads(previous)


def file_stamp(path: str) -> int | None:
    """The file's modification time: a cache key that reloads a grid or curve file its command is still writing."""
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return None


def cached_defence_grid() -> dict | None:
    """The threat x defence grid: the shipped grids as one (core.experiments.defence_grid.merge_grids) unless
    session_state["defence_grid_path"] names another file; None when there is none."""
    paths = (st.session_state["defence_grid_path"],) if "defence_grid_path" in st.session_state else None
    paths = tuple(str(path) for path in (paths or SHIPPED_DEFENCE_GRIDS))
    return _defence_grid(paths, tuple(file_stamp(path) for path in paths))


def cached_defence_costs() -> dict | None:
    """bench/defence_cost.py's shipped result (each defence's cost in plain trainings), None when not measured."""
    from core.reporting.report import DEFENCE_COST_FILE

    path = PROJECT_ROOT / DEFENCE_COST_FILE
    return _json_file(str(path), file_stamp(str(path)))


@st.cache_data(max_entries=4)
def _json_file(path: str, stamp) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@st.cache_data(max_entries=4, show_spinner="Reading the shipped studies...")
def _defence_grid(paths: tuple[str, ...], stamps: tuple) -> dict | None:
    return load_shipped_grids(paths)


def cached_budget() -> dict | None:
    """The budget curves (shipped unless session_state["budget_path"] names others), or None when there are none."""
    path = st.session_state.get("budget_path", str(SHIPPED_BUDGET))
    return _budget(path, file_stamp(path))


@st.cache_data(max_entries=4, show_spinner="Reading the shipped studies...")
def _budget(path: str, stamp: int | None) -> dict | None:
    return load_budget(path)


def cached_comparison(path: str = str(SHIPPED_COMPARISON)) -> dict:
    """A comparison file (compare.json), reloaded when its command rewrites it (it does after every cell)."""
    return _comparison(path, file_stamp(path))


@st.cache_data(max_entries=4, show_spinner="Reading the shipped studies...")
def _comparison(path: str, stamp: int | None) -> dict:
    return load_comparison(path)


@st.cache_data(max_entries=16, show_spinner="Reading the run's poison scores...")
def cached_scores(directory: str, score: str = "dae") -> tuple[np.ndarray, np.ndarray]:
    """A detector's training-set scores ('dae': reconstruction error) and the ground-truth mask."""
    run = cached_run(directory)
    return run.scores_of(score).numpy().astype(np.float64), run.poison_mask.numpy().astype(bool)


@st.cache_data(max_entries=16, show_spinner="Binning the scores...")
def score_histogram(directory: str, score: str, bins: int = 80) -> dict:
    """Clean and poisoned counts of a score in `bins` bins from its minimum to its 99.9th percentile."""
    scores, mask = cached_scores(directory, score)
    top = float(np.quantile(scores, 0.999))
    edges = np.linspace(float(scores.min()), top, bins + 1)
    return {
        "edges": edges,
        "clean": np.histogram(scores[~mask], edges)[0],
        "poisoned": np.histogram(scores[mask], edges)[0],
    }


def slider_range(directory: str, score: str) -> tuple[float, float]:
    """The Threshold slider's range for a score: its minimum to its 99.9th percentile, widened to the paper's initial
    0.015 for the DAE (else to the run's own threshold)."""
    from core.detectors.detect import PAPER_INITIAL_THRESHOLD

    scores, _ = cached_scores(directory, score)
    run = cached_run(directory)
    reach = PAPER_INITIAL_THRESHOLD if score == "dae" else run.threshold_of(score)
    return float(scores.min()), float(max(np.quantile(scores, 0.999), reach))


@st.cache_data(max_entries=16, show_spinner="Computing the ROC and precision-recall curves...")
def cached_curves(directory: str, score: str = "dae") -> dict:
    scores, mask = cached_scores(directory, score)
    return explore.curves(scores, mask)


@st.cache_resource(max_entries=2, show_spinner="Loading the example images...")
def cached_example_pool(directory: str, pool_size: int = 48) -> dict:
    """A fixed, seeded pool of poisoned and clean training images for the sample grids: "index", "is_poisoned", and
    "clean" / "delivered" as (N, H, W, 3) uint8 pixels."""
    run = cached_run(directory)
    pool = explore.example_pool(run, run_splits(run).train, pool_size)
    return {
        "index": pool["index"],
        "is_poisoned": pool["is_poisoned"],
        "labels": pool["labels"].numpy(),
        "clean": pool["clean"].permute(0, 2, 3, 1).numpy(),
        "delivered": pool["delivered"].permute(0, 2, 3, 1).numpy(),
    }


def as_images(pixels: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 pixels -> the engine's (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)


def purify_preview(directory: str, sigma: float, count: int = 8) -> dict:
    """The first `count` delivered images of the example pool through the run's DAE purifier at noise sigma:
    "images", "purified" and "amplified" (the change around grey) as HWC uint8 pixels, and the mean change in grey
    levels."""
    shown = explore.purify_preview(
        cached_autoencoder(directory), as_images(cached_example_pool(directory)["delivered"][:count]), sigma
    )
    return {
        "images": [explore.as_pixels(image) for image in shown["images"]],
        "purified": [explore.as_pixels(image) for image in shown["purified"]],
        "amplified": [explore.as_pixels(image) for image in shown["amplified"]],
        "mean_change_levels": shown["mean_change_levels"],
    }


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
        from ui.jobs import job_settings  # ui.jobs imports this module

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
    from ui.jobs import follow_experiment  # ui.jobs imports this module

    follow_experiment()  # outside the sidebar: a fragment draws only where it is called


def set_custom_poison(config: PoisonConfig) -> None:
    """The Poison page's current settings: what *Run the experiment* uses with the Custom preset."""
    st.session_state["custom_poison"] = config.to_dict()


def custom_poison() -> PoisonConfig | None:
    stored = st.session_state.get("custom_poison")
    return PoisonConfig(**stored) if stored else None


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


def percentages(table: pd.DataFrame) -> pd.DataFrame:
    """A table of shares as text ("98.27%", and "—" where there is no value): a Styler's na_rep is not applied by
    st.dataframe, which showed a raw "None"."""
    return table.map(lambda value: "—" if value is None or value != value else f"{value:.2%}")


def enlarged(image, scale: int = 4) -> np.ndarray:
    """An image (HWC uint8 pixels, or a tensor: uint8 or [0, 1]) as HWC uint8 pixels, each a scale x scale block."""
    pixels = image if isinstance(image, np.ndarray) else explore.as_pixels(image)
    return np.kron(pixels, np.ones((scale, scale, 1), dtype=np.uint8))


# ---- Your images: plain pixels and verdicts in, the models stay here ----------------------------------------------


def uploaded_image(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes as the models see it: 32x32 HWC uint8 pixels (core.reporting.images.read_upload: an
    UploadError says what was wrong with the file)."""
    from core.reporting.images import read_upload

    return explore.as_pixels(read_upload(data, name))


def test_image(directory: str, index: int) -> tuple[np.ndarray, int] | None:
    """GTSRB test image `index` of the run's test split as HWC uint8 pixels and its label (None past the end)."""
    test = run_splits(cached_run(directory)).test
    return (explore.as_pixels(test.images[index]), int(test.labels[index])) if 0 <= index < len(test) else None


def image_models(directory: str) -> dict:
    """The models Your images reads (loading them says which file failed): student, undefended, DAE, and the
    noise-residual detector's model where the run ships one."""
    return {
        "student": cached_classifier(directory, "filter_distillation"),
        "undefended": cached_classifier(directory, "undefended"),
        "autoencoder": cached_autoencoder(directory),
        "residual": cached_supervised_detector(directory),
    }


def image_analysis(directory: str, pixels: np.ndarray, threshold: float, attack: dict | None = None) -> list[dict]:
    """What Your images shows for one image: a row for the image as given and, when attack is set ({"name", "eps",
    "alpha", "steps", "target": "student" or "undefended"}), one for it attacked. Each row holds plain data: "image",
    "reconstruction" and "error_map" as HWC uint8 pixels, numbers, top-5 lists
    (core.reporting.images.image_verdicts)."""
    from core.reporting.images import image_verdicts

    models, run = image_models(directory), cached_run(directory)
    images = [torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)]
    if attack is not None:
        settings = (attack["name"], attack["eps"], attack["alpha"], attack["steps"])
        images.append(explore.attack_images(models[attack["target"]], images[0].unsqueeze(0), *settings)[0])
    rows = []
    for x in images:
        view = image_verdicts(
            x, run, models["autoencoder"], models["student"], models["undefended"], models["residual"], threshold
        )
        view.update(
            image=explore.as_pixels(x),
            reconstruction=explore.as_pixels(view["reconstruction"]),
            error_map=explore.as_pixels(view["error_map"]),
        )
        rows.append(view)
    return rows


def ringed(image, correct: bool, scale: int = 4) -> np.ndarray:
    """The image enlarged with a green (right decision) or red (wrong decision) ring, as in the paper's figures."""
    pixels = enlarged(image, scale)
    colour = np.array([0, 170, 0] if correct else [220, 0, 0], dtype=np.uint8)
    border = 3
    pixels[:border], pixels[-border:], pixels[:, :border], pixels[:, -border:] = colour, colour, colour, colour
    return pixels


def ensure_navigation() -> None:
    """Make a deep link (/threshold) on a fresh server go through app.py's st.navigation.

    Streamlit runs a pages/ file directly (its legacy multipage mode) until some session has called
    st.navigation; the first visitor of a deep link would then miss the shared sidebar. Switching the
    flag and rerunning sends that run through app.py, which picks the same page from the URL.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def kept(key: str, default: int | float | str) -> int | float | str:
    """A widget's value kept for the session: Streamlit drops a widget's state when a page does not draw it, so a
    visit to another page reset it (the Autoencoder's epochs went back to 20). Pass as the widget's value, with
    on_change=keep, args=(key,)."""
    return st.session_state.get(f"kept_{key}", default)


def keep(key: str) -> None:
    st.session_state[f"kept_{key}"] = st.session_state[key]


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
    for its
    config. Choices: a select box; a bool: a checkbox; a number: a number box within the knob's range."""
    if not spec.knobs:
        return ()
    settings = []
    columns = st.columns(2)
    for index, knob in enumerate(spec.knobs):
        key = f"{key_prefix}_{spec.name}_{knob.name}"
        label = f"{knob.name.replace('_', ' ')} ({spec.label.split(':')[0]})"
        with columns[index % 2]:
            if knob.choices is not None:
                value = st.selectbox(
                    label, knob.choices, knob.choices.index(knob.default), key=key, disabled=disabled, help=knob.help
                )
            elif knob.kind is bool:
                value = st.checkbox(label, knob.default, key=key, disabled=disabled, help=knob.help)
            else:
                step = 1 if knob.kind is int else 0.01
                value = st.number_input(
                    label,
                    knob.kind(knob.low) if knob.low is not None else None,
                    knob.kind(knob.high) if knob.high is not None else None,
                    knob.default,
                    step,
                    key=key,
                    disabled=disabled,
                    help=knob.help,
                )
        settings.append((f"{spec.name}.{knob.name}", value))
    return tuple(settings)


# ---- Distillation ------------------------------------------------------------------------------------------------


def test_set_size(directory: str) -> int:
    return len(run_splits(cached_run(directory)).test)


def teacher_probabilities(directory: str, index: int, temperature: float, k: int = 5) -> dict:
    """The run's teacher on GTSRB test image `index`: the image (HWC uint8 pixels), its label, and the top-k classes
    as (name, probability) at `temperature` and at 1."""
    from core.reporting.images import top_classes

    teacher = cached_classifier(directory, "filter_distillation_teacher")
    test = run_splits(cached_run(directory)).test
    image = test.images[index : index + 1]
    return {
        "image": explore.as_pixels(image[0]),
        "label": int(test.labels[index]),
        "at_t": top_classes(teacher, image, k=k, temperature=temperature)[0],
        "at_1": top_classes(teacher, image, k=k, temperature=1.0)[0],
    }


# ---- Autoencoder: the DAE trained in this session stays here; the page gets numbers, bytes and pixels ------------


def dae_folder(directory: str, flags: list[str]) -> Path:
    """Where the app keeps a DAE trained on a run's pairs with these flags (one folder per run and settings)."""
    import hashlib

    digest = hashlib.sha256(repr((str(Path(directory).resolve()), flags)).encode()).hexdigest()[:10]
    return app_dir() / "daes" / digest


def trained_daes(directory: str) -> list[dict]:
    """The DAEs trained on this run's pairs by the Autoencoder page's jobs: dae.json's config and metrics, and the
    folder, newest first."""
    import json

    found = []
    for path in sorted((app_dir() / "daes").glob("*/dae.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if entry.get("metrics", {}).get("run_dir") == str(directory) and (path.parent / "dae.safetensors").exists():
            found.append({**entry, "folder": str(path.parent)})
    return found


@st.cache_resource(max_entries=4, show_spinner="Loading the autoencoder...")
def _trained_dae(folder: str, stamp: int | None):
    import json

    from core.detectors.dae import DAEConfig
    from core.engine.models import DenoisingAutoencoder
    from core.engine.storage import load_weights

    config = DAEConfig.from_dict(json.loads((Path(folder) / "dae.json").read_text())["config"])
    return load_weights(folder, "dae", DenoisingAutoencoder(config.model)).eval()


def dae_gallery(directory: str, trained_folder: str | None = None, count: int = 8) -> dict:
    """A DAE trained here (its folder, when it is one of this run's), else the run's, on the first `count` delivered
    images of the example pool: "trained_here", "input" / "reconstruction" / "error_map" as lists of HWC uint8
    pixels, "mse" per image, "error_scale", "is_poisoned"."""
    from core.reporting.images import error_colour_bar, reconstruction_view

    trained_here = trained_folder in {entry["folder"] for entry in trained_daes(directory)}
    stamp = file_stamp(str(Path(trained_folder) / "dae.safetensors")) if trained_here else None
    autoencoder = _trained_dae(trained_folder, stamp) if trained_here else cached_autoencoder(directory)
    pool = cached_example_pool(directory)
    view = reconstruction_view(autoencoder, as_images(pool["delivered"][:count]))
    return {
        "trained_here": trained_here,
        **{
            name: [explore.as_pixels(image) for image in view[name]]
            for name in ("input", "reconstruction", "error_map")
        },
        "mse": view["mse"].tolist(),
        "error_scale": view["error_scale"],
        "is_poisoned": pool["is_poisoned"][:count].tolist(),
        "colour_bar": explore.as_pixels(error_colour_bar()),  # the maps' scale, low error on the left
    }


# ---- Poison: settings in, plain previews and summaries out; the surrogate and the splits stay here ---------------


def threat_preview(directory: str, config: PoisonConfig) -> dict:
    """A threat that needs no surrogate applied to the run's train split (milliseconds): counts, and a seeded few
    poisons as HWC uint8 "images" with their "old_labels" and "new_labels"."""
    preview = explore.threat_preview(run_splits(cached_run(directory)).train, config)
    return {**preview, "images": [explore.as_pixels(image) for image in preview["images"]]}


def load_surrogate(directory: str) -> None:
    """Load the run's surrogate (the attacker's model) and its GTSRB splits now, so that a damaged file or a missing
    dataset is reported once, before the preview."""
    cached_classifier(directory, "surrogate")
    run_splits(cached_run(directory))


@st.cache_data(max_entries=16, show_spinner="Crafting preview poisons (TAP and unlearnable: a few seconds)...")
def poison_preview(directory: str, classes: tuple, per_class: int, config: PoisonConfig) -> dict:
    """A few training images of the chosen classes poisoned with config (core.reporting.explore.poison_preview):
    "clean",
    "poisoned" and "amplified" as lists of HWC uint8 pixels, "labels", "stats", the surrogate's accuracy before and
    after."""
    run = cached_run(directory)
    shown = explore.poison_preview(
        run_splits(run).train, cached_classifier(directory, "surrogate"), list(classes), per_class, config
    )
    return {
        **shown,
        **{name: [explore.as_pixels(image) for image in shown[name]] for name in ("clean", "poisoned", "amplified")},
        "labels": shown["labels"].tolist(),
    }


@st.cache_resource(max_entries=3, show_spinner=False)
def _applied_poison(directory: str, config: PoisonConfig):
    run = cached_run(directory)
    bar = st.progress(0.0, text="Crafting poisons")
    result = poison_training_set(
        run_splits(run).train,
        cached_classifier(directory, "surrogate"),
        config,
        progress=lambda stage, done, total: bar.progress(done / max(total, 1), text=f"{stage} {done}/{total}"),
    )
    bar.empty()
    return result


def applied_poison_summary(directory: str, config: PoisonConfig) -> dict:
    """Poison the run's whole train split with config (crafted once per config, with a bar) and say what changed
    (core.reporting.explore.applied_summary: counts and the perturbation's size)."""
    return explore.applied_summary(run_splits(cached_run(directory)).train, _applied_poison(directory, config))
