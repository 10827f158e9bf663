"""Threshold: drag the detector threshold and watch the filter and the student respond; switch the score."""

from ui.navigation import ensure_navigation

ensure_navigation()  # first: a deep link on a fresh server goes through app.py before the engine loads

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.detectors.detect import (
    PAPER_INFERRED_THRESHOLD,
    PAPER_INITIAL_THRESHOLD,
    filter_label,
    infer_threshold_from_scores,
)
from core.engine.registry import DETECTORS
from core.experiments.run import run_choices, weak_students_note
from core.experiments.sweep import FILTERS, accuracy_at, curve_at_share
from core.jobs import minutes
from core.reporting import explore
from ui.data import (
    app_dir,
    cached_curves,
    cached_example_pool,
    cached_run,
    cached_scores,
    file_stamp,
    run_dir,
    score_histogram,
    shown,
    slider_range,
)
from ui.filter_figure import base_figure, figure_png, interactive_figure, sample_strip
from ui.jobs import (
    active_jobs,
    follow_up,
    is_shipped,
    points_path,
    start,
    sweep_commands,
)
from ui.jobs import trained_points as jobs_trained_points
from ui.links import as_text, link_names
from ui.other_defences import draw_other_defences
from ui.point_training import draw_point_training, submit_point
from ui.threshold_view import instant_data, instant_view
from ui.widgets import figure_download, guard, require_run, ringed, session_threshold, timed

st.title("Threshold")
st.caption(
    "Samples scored above the threshold are dropped before the teacher sees them. "
    "The ground-truth poison mask is used here only to score that decision."
)

directory = run_dir()
run = require_run()
scored = run.score_names()
score_names = list(dict.fromkeys([*scored, *DETECTORS.names()]))  # every registered detector; unscored ones say so


def reset_threshold() -> None:
    """A new score has its own scale and its own slider (and URL parameter, threshold_<score>): the exact-value box
    starts again from it."""
    st.session_state.pop("threshold_input", None)


score_label = lambda name: filter_label(name) + ("" if name in scored else " (not scored on this run)")  # noqa: E731
link_names("score", score_names, score_label)
score = st.selectbox(
    "Score",
    score_names,
    key="score",
    bind="query-params",
    on_change=reset_threshold,
    format_func=score_label,
    help="Every detector scored on this run's training set by `python -m core detectors`. "
    "The Detectors page compares them across threat models, with controls.",
)
if score not in scored:
    st.info(
        f"{filter_label(score)} has not been scored on this run: "
        f"`python -m core detectors --run-dir {shown(directory)}` scores every registered detector."
    )
    with guard("the detectors' job"):
        follow_up(directory, "detectors", "score every detector", "detectors")
    st.stop()
scores = None
with guard(f"loading the {filter_label(score)} scores"):
    scores, mask = cached_scores(directory, score)
    curves = cached_curves(directory, score)
    run_threshold = run.threshold_of(score)
if scores is None:
    st.stop()  # the guard named the file; the Score box above still switches back
is_dae = score == "dae"
unit = "per-image MSE" if is_dae else "score"


@st.cache_resource(max_entries=16)
def base_picture(directory: str, score: str):
    """The three panels without the threshold, drawn once per run and score (ui/filter_figure.py)."""
    curves = cached_curves(directory, score)
    titles = (filter_label(score), "ROC: dropping poisons", "Precision-recall")
    return base_figure(score_histogram(directory, score), curves["roc_shown"], curves["pr_shown"], titles, unit)


low, high = slider_range(directory, score)
# One slider per score, bound to the URL as threshold_<score>: a DAE threshold is never read as a MagNet one (one
# shared key carried 0.02314 to MagNet, dropping 78% of train), and a link restores the slider and the exact box.
SLIDER = f"threshold_{score}"
if st.session_state.get("threshold_run") not in (None, directory):
    # another run: it starts at its own threshold, slider and exact box alike (a previous run's value, clipped to
    # this run's range, landed on its minimum: issue 34)
    for key in [key for key in st.session_state if str(key).startswith("threshold_") and key != "threshold_run"]:
        del st.session_state[key]
    st.session_state.pop("threshold", None)
    for key in [key for key in st.query_params if key.startswith("threshold_")]:  # the previous run's, not a link
        del st.query_params[key]
st.session_state["threshold_run"] = directory
if SLIDER not in st.session_state and SLIDER in st.query_params:  # a link's value (the server slider reads it itself)
    try:
        linked = float(st.query_params[SLIDER])
        slack = 1e-6 * (high - low)  # the link's 8 significant digits may round past an end of the range
        if math.isfinite(linked) and low - slack <= linked <= high + slack:
            st.session_state[SLIDER] = float(np.clip(linked, low, high))
    except ValueError:
        pass
# a link's value wins on a first load; back from another page, the session's value (a widget's state is dropped
# when its page is left); else the run's own threshold
st.session_state.setdefault(SLIDER, float(np.clip(session_threshold(run, score), low, high)))


def set_threshold(value: float) -> None:
    value = float(np.clip(value, low, high))
    st.session_state[SLIDER] = value
    st.session_state["threshold_input"] = value


def from_number() -> None:
    set_threshold(st.session_state["threshold_input"])


SHIPPED = is_shipped(directory)  # a read-only demo: no sweep job on it
POINTS_PATH = points_path(directory)


def trained_points() -> list[dict]:
    """Every single point trained at a threshold of this run and score (points.json), after any restart."""
    return jobs_trained_points(directory, score)


def from_slider() -> None:
    st.session_state["threshold_input"] = st.session_state[SLIDER]
    if st.session_state.get("live_training"):
        submit_point(run, directory, score, float(st.session_state[SLIDER]))


# Two rows of two: every label stays whole down to a 1024 px window (four columns cut them there)
buttons = [*st.columns(2), *st.columns(2)]
buttons[0].button(
    f"Paper's initial {PAPER_INITIAL_THRESHOLD}",
    help=f"The threshold the paper starts alibi-detect from; it reports {PAPER_INFERRED_THRESHOLD} after "
    "infer_threshold (the Overview's 'paper' value)."
    if is_dae
    else "a reconstruction-error threshold: DAE score only",
    on_click=set_threshold,
    args=(PAPER_INITIAL_THRESHOLD,),
    disabled=not is_dae,
)
buttons[1].button(
    f"This run's {run_threshold:.4g}",
    on_click=set_threshold,
    args=(run_threshold,),
    help="the threshold the run itself used (its ThresholdConfig applied to this score)",
)
with buttons[2]:
    fpr = st.number_input(
        "False-positive rate on trusted clean data",
        0.001,
        0.999,
        0.05,
        0.01,
        format="%.3f",
        key="fpr",
        bind="query-params",
    )
    st.button(
        "infer_threshold at this FPR",
        disabled=not is_dae,
        on_click=lambda: set_threshold(infer_threshold_from_scores(run.calibration_scores, fpr)),
        help=None if is_dae else "the run stores trusted-set scores for the DAE only",
    )
with buttons[3]:
    expected = st.number_input(
        "Expected poison share of the training set",
        0.001,
        0.999,
        0.10,
        0.01,
        format="%.3f",
        key="expected",
        bind="query-params",
    )
    st.button(
        "infer_threshold at this share", on_click=lambda: set_threshold(infer_threshold_from_scores(scores, expected))
    )

if is_dae and PAPER_INFERRED_THRESHOLD < low:
    st.info(
        f"The paper's inferred threshold {PAPER_INFERRED_THRESHOLD} is below every reconstruction error of this run "
        f"(lowest {low:.4f}): it would drop every training sample."
    )


SWEEP_METRICS = {
    "clean_acc": "clean accuracy",
    "adaptive_acc": "adaptive worst case",
    "ifgsm_acc": "I-FGSM accuracy",
    "fgsm_acc": "FGSM accuracy",
}
FILTER_STYLE = {"detector": ("DAE filter", "#4c78a8"), "random": ("random", "#9d9d9d"), "oracle": ("oracle", "#54a24b")}


def sweep_y_range(values: list[float], least: float = 0.04) -> list[float]:
    """The y range that shows every value with a margin, at least `least` tall, inside [0, 1]."""
    if not values:
        return [0.0, 1.0]
    low, high = min(values), max(values)
    margin = max((least - (high - low)) / 2, 0.1 * (high - low), 0.002)
    low, high = max(0.0, low - margin), min(1.0, high + margin)
    return [low, high]


def sweep_chart(directory: str, metric: str) -> go.Figure:
    """Student accuracy vs share dropped for each filter: measured points as markers, mean line, +-1 std band."""
    figure = go.Figure()
    drawn: list[float] = []  # every band edge, for the y range
    for name in FILTERS:
        points = run.sweep["curves"].get(name)
        if not points:
            continue
        label, colour = FILTER_STYLE[name]
        shares = [p["drop_share"] for p in points]
        mean = np.array([p["mean"][metric] for p in points])
        std = np.array([p["std"][metric] for p in points])
        drawn += [*(mean + std), *(mean - std)]
        figure.add_trace(
            go.Scatter(
                x=shares + shares[::-1],
                y=list(mean + std) + list(mean - std)[::-1],
                fill="toself",
                fillcolor=colour,
                opacity=0.2,
                line_width=0,
                hoverinfo="skip",
                showlegend=False,
            )
        )
        figure.add_trace(
            go.Scatter(x=shares, y=mean, name=label, mode="lines+markers", line_color=colour, marker_size=6)
        )
    figure.update_layout(
        height=340,
        margin=dict(t=30, b=30),
        title=f"Student {SWEEP_METRICS[metric]} vs share dropped (markers: measured; band: ±1 std over seeds)",
        xaxis_title="share of the training set dropped",
        xaxis_tickformat=".0%",
        yaxis_title=f"{SWEEP_METRICS[metric]} (axis zoomed to the curves)",
        yaxis_tickformat=".1%",
        # zoomed to the curves, at least 4 points tall: on [0, 1] a 2-point gap between filters at 98% was a flat line
        yaxis_range=sweep_y_range(drawn),
    )
    return figure


def sweep_job_line() -> str | None:
    """'7 of 18 points measured' from this run's active sweep job, or what it is doing before its sweep."""
    for job in active_jobs(directory):
        if job.kind not in ("experiment", "sweep"):
            continue
        if job.stage.startswith("threshold sweep") and job.total:
            eta = f"; about {minutes(job.eta_seconds)} left" if job.eta_seconds else ""
            step = f"step {job.command} of {job.commands}"
            return f"{job.done} of {job.total} points measured in the background ({step}{eta})"
        return f"the background job is at: {job.describe()}"
    return None


def curve_progress() -> None:
    """No sweep yet: what the background job is doing, or a button that starts one."""
    if line := sweep_job_line():
        st.info(f"This run's threshold curve is not measured yet: {line}. The page draws it as points arrive.")
    elif SHIPPED:
        st.warning(
            "This run has no threshold sweep (or one from an older version): `python -m core sweep --run-dir "
            + shown(directory)
            + "`."
        )
    else:
        st.warning("This run has no threshold curve yet (or one from an older version of the sweep).")
        if st.button("Measure its threshold curve in the background", key="measure_curve", type="primary"):
            start(
                f"threshold curve of {shown(directory)} (DAE, random, oracle; one seed)",
                "sweep",
                sweep_commands(directory),
                run_dir=directory,
            )
            st.rerun()


def student_at_threshold(threshold: float, drop_share: float, tolerance: float) -> None:
    """The student's accuracy at this threshold from the sweep (measured, interpolated or not measured), with its
    seeds and test images, the single points trained here, and random and oracle at the same share."""
    sweep, config = run.sweep, run.sweep["config"]
    accuracy = accuracy_at(sweep, threshold, tolerance=tolerance)
    single = [point for point in trained_points() if abs(point["threshold"] - threshold) <= tolerance]
    n_points = len(sweep["curves"]["detector"])
    images = (
        f"clean on {config['n_test']:,} test images, attacks on {config.get('n_attack_test', config['n_test']):,}, "
        f"worst case on {config['n_robust_test']:,}"
    )
    if accuracy["where"] == "not measured" and single:
        accuracy = {**{key: single[-1][key] for key in SWEEP_METRICS}, "where": "measured", "n_seeds": 1}
        how = "measured at this threshold: a single point trained here (one seed)"
    elif accuracy["where"] == "not measured":
        how = (
            "**not measured** at this threshold: it lies outside the measured thresholds "
            f"({sweep['curves']['detector'][-1]['threshold']:.5f} to {sweep['curves']['detector'][0]['threshold']:.5f}"
            ", where the sweep dropped its most and its least); train it below"
        )
    else:
        how = {"measured": "measured at this threshold", "interpolated": "interpolated between measured points"}[
            accuracy["where"]
        ]
        how += f", mean of {accuracy['n_seeds']} seed{'s' if accuracy['n_seeds'] != 1 else ''}"
    st.markdown(
        f"**Student at this threshold**: {how} (run `{shown(directory)}`, sweep of {n_points} thresholds, "
        f"{config['steps']:,} optimiser steps per model, {images})"
    )
    if line := sweep_job_line():
        st.caption(line)
    if note := weak_students_note(run):
        st.warning(note)
    cols = [*st.columns(2), *st.columns(2)]  # two rows of two: "adaptive worst case" was cut in four columns
    shown_value = lambda key: "-" if accuracy[key] is None else f"{accuracy[key]:.2%}"  # noqa: E731
    cols[0].metric("clean accuracy", shown_value("clean_acc"))
    cols[1].metric("FGSM accuracy", shown_value("fgsm_acc"))
    cols[2].metric("I-FGSM accuracy", shown_value("ifgsm_acc"))
    cols[3].metric(
        "adaptive worst case",
        shown_value("adaptive_acc"),
        help="per-image worst case over core/attacks/robust.py's attacks (logits / T, margin, PGD): what distilled "
        "students cannot mask",
    )
    controls = [name for name in ("random", "oracle") if name in sweep["curves"]]
    if controls:
        st.caption(
            f"Dropping the same share ({drop_share:.1%}) "
            + " / ".join(
                f"{'at random' if name == 'random' else 'poisons first (oracle)'}: clean "
                f"{curve_at_share(sweep, name, drop_share)['clean_acc']:.2%}"
                for name in controls
            )
        )


def draw_live_view() -> None:
    """The server-drawn view: the slider, what it keeps, the student there, the filter's panels, the examples."""
    threshold = threshold_controls()
    counts = explore.threshold_counts(scores, mask, threshold)
    warn_when_little_is_kept(counts["kept"])
    drop_share = (counts["dropped_clean"] + counts["dropped_poisoned"]) / max(len(scores), 1)
    counts_and_student(counts, threshold, drop_share)
    filter_panels(counts, threshold)
    sweep_section(drop_share)  # in the fragment: its line follows the slider in both views
    example_grids(threshold)


def threshold_controls() -> float:
    """The slider and the exact-value box; the value goes to the session (the other pages) and the link."""
    slider_column, number_column = st.columns([4, 1])
    slider_column.slider(
        f"Threshold ({filter_label(score)})",
        low,
        high,
        key=SLIDER,
        step=(high - low) / 1000,
        format="%.5f",
        on_change=from_slider,
    )
    threshold = float(st.session_state[SLIDER])
    st.session_state.setdefault("threshold_input", threshold)  # after the slider: it may come from a link
    st.session_state["threshold"] = threshold  # what the other pages use (Your images, Distillation)
    st.session_state["threshold_score"] = score
    # The link reproduces it, written here rather than by binding the slider: a bound slider drops its default (the
    # minimum) from the address and refused a link to it (issue 34)
    st.query_params[SLIDER] = f"{threshold:.8g}"
    number_column.number_input(
        "exact value", low, high, key="threshold_input", step=1e-4, format="%.5f", on_change=from_number
    )
    return threshold


def warn_when_little_is_kept(kept: int) -> None:
    if kept == 0:
        st.error("This threshold drops every training sample: nothing would be left to train the teacher. Raise it.")
    elif kept < max(run.config.classifier_train.batch_size, 0.01 * len(scores)):
        st.warning(
            f"Only {kept:,} of {len(scores):,} training images are kept ({kept / len(scores):.2%}): a teacher trained "
            "on so few measures almost nothing about the filter. Raise the threshold."
        )


def counts_and_student(counts: dict, threshold: float, drop_share: float) -> None:
    """The filter's metrics, the kept / dropped x clean / poisoned table, and the student read from the sweep."""
    metrics = [*st.columns(3), *st.columns(3)]  # two rows: whole labels and counts at 1024 px
    metrics[0].metric("kept", f"{counts['kept']:,}")
    metrics[1].metric("dropped", f"{counts['dropped_clean'] + counts['dropped_poisoned']:,}")
    metrics[2].metric("precision", f"{counts['precision']:.3f}")
    metrics[3].metric("recall", f"{counts['recall']:.3f}")
    metrics[4].metric("F1", f"{counts['f1']:.3f}")
    metrics[5].metric("ROC AUC of the score", f"{curves['auroc']:.3f}")
    table = pd.DataFrame(
        {
            "clean": [counts["kept_clean"], counts["dropped_clean"]],
            "poisoned": [counts["kept_poisoned"], counts["dropped_poisoned"]],
        },
        index=["kept", "dropped"],
    )
    left, right = st.columns([1, 2])
    left.markdown("**Kept / dropped x clean / poisoned**")
    left.table(table)  # static HTML: a data grid re-draws its canvas on every move
    left.download_button(
        "Download counts (JSON)", json.dumps(counts, indent=2), "threshold_counts.json", "application/json"
    )
    with right:
        if run.sweep and not is_dae:
            st.info(
                "The threshold sweep (student accuracy vs threshold) was run on the DAE score. For this score, "
                "train at the exact threshold below, or see the Detectors page for students behind each detector."
            )
        elif run.sweep:
            student_at_threshold(threshold, drop_share, tolerance=(high - low) / 2000)
        else:
            curve_progress()


def filter_panels(counts: dict, threshold: float) -> None:
    """Histogram, ROC and precision-recall at the threshold: a picture (the default) or interactive Plotly charts."""
    interactive = st.toggle(
        "Interactive charts",
        key="interactive_charts",
        bind="query-params",
        help="Plotly charts with hover, zoom and downloads. Off (the default), the histogram, ROC and precision-recall "
        "panels are a picture on which each move only draws the threshold: a faster slider.",
    )
    operating = explore.operating_point(scores, mask, threshold)
    precision_recall = (counts["recall"], counts["precision"])
    if not interactive:
        # A picture drawn once per score; a move only draws the line and the markers (ui/filter_figure.py).
        picture = figure_png(base_picture(directory, score), threshold, operating, precision_recall)
        st.image(picture, width="stretch", output_format="PNG")
        return
    figure = interactive_figure(
        score_histogram(directory, score), curves, threshold, operating, precision_recall, filter_label(score), unit
    )
    st.plotly_chart(figure, width="stretch", key="chart-filter")
    figure_download(figure, "histogram_roc_precision_recall")


def example_grids(threshold: float) -> None:
    """The example pool's kept and dropped images at the threshold, ringed by whether the decision was right."""
    pool = cached_example_pool(directory)
    dropped = scores[pool["index"]] > threshold
    for title, selected in (("Kept", ~dropped), ("Dropped", dropped)):
        positions = np.flatnonzero(selected)[:12]
        count = int(selected.sum())
        shown_here = f"; the first {len(positions)} shown" if count > len(positions) else ""
        st.markdown(
            f"**{title}**: {count} of the {len(dropped)} example images{shown_here} "
            "(green ring: right decision, red: wrong)"
        )
        if len(positions) == 0:
            st.caption("none")
            continue
        st.image(sample_row(directory, score, title, tuple(int(p) for p in positions)), output_format="PNG")


@st.cache_data(max_entries=256, show_spinner=False)
def sample_row(directory: str, score: str, title: str, positions: tuple[int, ...]) -> bytes:
    """A row of ringed example images with their kind and score, as one picture (ui/filter_figure.py)."""
    pool = cached_example_pool(directory)
    pool_scores = cached_scores(directory, score)[0][pool["index"]]
    tiles, captions = [], []
    for position in positions:
        poisoned = bool(pool["is_poisoned"][position])
        # 3x: twelve tiles stay under Streamlit's 1,460 px content width, above which it resizes and re-encodes
        tiles.append(ringed(pool["delivered"][position], correct=poisoned == (title == "Dropped"), scale=3))
        captions.append(f"{'poison' if poisoned else 'clean'} {pool_scores[position]:.4f}")
    return sample_strip(tiles, captions)


def sweep_section(drop_share: float) -> None:
    """The sweep's chart (DAE score only), with the live trainer's points and the threshold's line."""
    if not (run.sweep and is_dae):
        return
    metric = st.radio(
        "Sweep curve",
        list(SWEEP_METRICS),
        format_func=SWEEP_METRICS.get,
        key="sweep_metric",
        horizontal=True,
        bind="query-params",
    )
    sweep_figure = sweep_chart(directory, metric)
    trained = [point for point in trained_points() if metric in point]
    if trained:
        sweep_figure.add_trace(
            go.Scatter(
                x=[point["drop_share"] for point in trained],
                y=[point[metric] for point in trained],
                name="trained here (one seed)",
                mode="markers",
                marker=dict(symbol="star", size=13, color="#e45756"),
            )
        )
    sweep_figure.add_vline(drop_share, line_color="black", line_dash="dash", annotation_text="this threshold")
    st.plotly_chart(sweep_figure, width="stretch", key="chart-sweep")
    figure_download(sweep_figure, "student_accuracy_vs_share_dropped")


def draw_instant_view() -> None:
    """The slider answered in the browser (ui/threshold_view.py); the server stores the value when a drag ends."""
    threshold = float(st.session_state[SLIDER])
    st.session_state["threshold"] = threshold  # what the other pages use (Your images, Distillation)
    st.session_state["threshold_score"] = score
    st.query_params[SLIDER] = f"{threshold:.8g}"  # the link reproduces it (no bound widget writes it here)

    def release(value: float) -> None:
        value = float(np.clip(value, low, high))
        st.session_state[SLIDER] = st.session_state["threshold"] = st.session_state["threshold_input"] = value
        st.query_params[SLIDER] = f"{value:.8g}"  # the link reproduces it
        if st.session_state.get("live_training"):
            submit_point(run, directory, score, value)
        st.rerun()  # the whole page: the sweep chart's line and *Train at this threshold* read the new value

    choices = compare_choices()
    left, right = st.columns([3, 2])
    partner = left.selectbox(
        "Side by side with",
        list(choices),
        key="compare",
        bind="query-params",
        help="Another run (its DAE score) or another score of this run, drawn below with its own histogram, ROC, "
        "sweep and student; a link reproduces the pair.",
    )
    same_share = (
        right.radio(
            "Second view's position",
            ["same share", "own threshold"],
            key="compare_position",
            bind="query-params",
            horizontal=True,
            help="same share: it follows this slider at the share of the training set this one drops; own threshold: "
            "its own slider, starting at its run's threshold",
        )
        == "same share"
    )
    key = f"instant-{score}-{Path(directory).name}"  # per run and score: a release on one never counts for another
    data = instant_data(directory, score, file_stamp(str(Path(directory) / "sweep.json")))
    instant_view({**data, "leads": partner != "none"}, threshold, key=key, on_release=release)
    counts = explore.threshold_counts(scores, mask, threshold)
    sweep_section((counts["dropped_clean"] + counts["dropped_poisoned"]) / max(len(scores), 1))
    if partner != "none":
        other, other_score, label = choices[partner]
        st.markdown(f"**Side by side: {as_text(label)}**")
        other_data = instant_data(other, other_score, file_stamp(str(Path(other) / "sweep.json")))
        other_key = f"compare-{other_score}-{Path(other).name}"
        start_at = float(np.clip(cached_run(other).threshold_of(other_score), other_data["low"], other_data["high"]))
        instant_view({**other_data, "follows": same_share}, start_at, key=other_key, on_release=lambda value: None)


def compare_choices() -> dict[str, tuple]:
    """What the second view can show: "none", another run's DAE score ("run:<name>") or another score of this run
    ("score:<name>"), each (folder, score, label)."""
    choices = {"none": (None, None, "nothing")}
    for other in run_choices(app_dir() / "runs", Path("runs")):
        if other != directory:
            choices[f"run:{shown(other)}"] = (other, "dae", f"run {shown(other)} (DAE score)")
    for name in scored:
        if name != score:
            choices[f"score:{name}"] = (directory, name, f"this run, {filter_label(name)}")
    return choices


@st.fragment
def live_view() -> None:
    """Only this reruns when the slider moves (timed for bench/slider.py)."""
    with timed("threshold fragment"):
        if st.session_state.get("instant_view", INSTANT_DEFAULT):
            draw_instant_view()
        else:
            draw_live_view()


INSTANT_DEFAULT = os.environ.get("DAE_DISTILL_SERVER_VIEW") != "1"  # the tests' AppTest sets 1: it runs no JavaScript
st.toggle(
    "Instant view (computed in your browser)",
    value=INSTANT_DEFAULT,
    key="instant_view",
    bind="query-params",
    help="On: every move of the slider is answered in the page, within a frame, from data sent once; the server "
    "stores the value when you release it. Off: the server draws each move (slower; for a browser without JavaScript).",
)
with guard("the threshold view"):
    live_view()

st.divider()
draw_point_training(run, directory, score, SLIDER)


@st.fragment(run_every=2.0 if active_jobs(directory) else None)
def follow_files() -> None:
    """While a job writes into this run, rerun the page when one of its files changes (a new point of the curve)."""
    stamp = tuple(
        (path.name, path.stat().st_mtime_ns)
        for path in sorted([*Path(directory).glob("*.json"), POINTS_PATH])
        if path.exists()
    )
    previous = st.session_state.get("run_files_stamp")
    st.session_state["run_files_stamp"] = (directory, stamp)
    if previous is not None and previous[0] == directory and previous[1] != stamp:
        st.rerun()


follow_files()

st.divider()
draw_other_defences(directory)
