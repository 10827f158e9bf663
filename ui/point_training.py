"""The Threshold page's training queue: teacher and student trained at exactly one threshold, as background jobs.

Each released threshold (or a button press) becomes a `python -m core point` job (ui/jobs.py); finished points are kept
in the run's points.json, drawn on the sweep's chart as stars and listed here. The server trains nothing.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.engine.train import device_description
from core.experiments.sweep import point_images, sweep_robust_steps, sweep_steps
from core.jobs import minutes
from ui.data import point_seconds_here, shown
from ui.jobs import active_jobs, is_shipped, jobs_panel, more_seeds_commands, point_job, points_path, start
from ui.jobs import trained_points as jobs_trained_points
from ui.widgets import guard

POINT_COLUMNS = ("threshold", "drop_share", "kept", "clean_acc", "adaptive_acc", "ifgsm_acc", "fgsm_acc", "steps")


def submit_point(run, directory: str, score: str, threshold: float) -> None:
    """Teacher + student at this threshold as a background job (`python -m core point`), kept in points.json."""
    point_job(directory, score, threshold, sweep_steps(run))


def seconds_per_point(run, directory: str, score: str) -> tuple[float, str]:
    """How long one point takes here: the mean of the points trained at this budget, else an estimate; and which."""
    steps = sweep_steps(run)
    timed = [
        point for point in jobs_trained_points(directory, score) if point.get("steps") == steps and point.get("seconds")
    ]
    if timed:
        seconds = sum(point["seconds"] for point in timed) / len(timed)
        return seconds, f"measured: the mean of the {len(timed)} point{'s' if len(timed) > 1 else ''} trained here"
    seconds = point_seconds_here(
        run.config.classifier.width,
        run.config.classifier.hidden,
        run.config.classifier_train.batch_size,
        steps,
        tuple(point_images(run).items()),
        run.config.eval_attack.steps,
        sweep_robust_steps(run),
    )
    return (
        seconds,
        "estimated from a short timing of this model here; the first point trained replaces it with its own time",
    )


def draw_point_training(run, directory: str, score: str, slider_key: str) -> None:
    """The section: what a point costs, the toggle that queues every released threshold, the button that queues this
    one, more seeds for the curve, and the jobs and points of this run."""
    st.subheader("Train at exactly this threshold")
    steps = sweep_steps(run)
    seconds, basis = seconds_per_point(run, directory, score)
    st.caption(
        f"Trains teacher and student at the run's T on what the threshold keeps, {steps:,} optimiser steps each (the "
        "sweep's budget, whatever the threshold keeps), and measures the student on the sweep's test subset, as a "
        f"background job: leave the page, it goes on. On this machine ({device_description()}) a point takes about "
        f"{minutes(seconds)} ({basis}). Finished points are kept in `{shown(points_path(directory))}` and drawn on the "
        "sweep's chart as stars."
    )
    columns = st.columns([1, 1])
    columns[0].toggle(
        "Train every threshold I release",
        value=device_description().startswith("GPU"),
        key="live_training",
        help="On a GPU a point takes seconds: each released slider position is queued as a job and trained in turn.",
    )
    columns[1].button(
        "Train at this threshold in the background",
        type="primary",
        key="train_in_background",
        on_click=lambda: submit_point(run, directory, score, float(st.session_state[slider_key])),
    )
    if run.sweep and not is_shipped(directory) and not active_jobs(directory):
        seeds = max(point["n_seeds"] for point in run.sweep["curves"]["detector"])
        if seeds < 3 and st.button("Measure the curve at 3 seeds in the background", key="more_seeds"):
            start(
                f"threshold curve of {shown(directory)} at 3 seeds", "sweep", more_seeds_commands(directory), directory
            )
            st.rerun()

    with guard("the background jobs"):
        jobs_panel(directory, key="threshold", limit=4)
        points = jobs_trained_points(directory, score)
        if points:
            rows = [{key: point.get(key) for key in (*POINT_COLUMNS, "seconds")} for point in points]
            st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)
