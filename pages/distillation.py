"""Distillation: temperature, teacher probabilities at T and at 1, and the five models side by side."""

from ui.navigation import ensure_navigation

ensure_navigation()  # first: a deep link on a fresh server goes through app.py before the engine loads

import json
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.engine.data import CLASS_NAMES
from core.engine.storage import CheckpointError
from core.experiments.pipeline import MODEL_LABELS, MODEL_NAMES, PAPER_RESULTS
from core.experiments.sweep import sweep_steps
from ui.data import run_dir, shown, teacher_probabilities, test_set_size
from ui.jobs import follow_up, jobs_panel, point_job, trained_points
from ui.widgets import enlarged, figure_download, guard, percentages, require_run, session_threshold

st.title("Distillation")
run = require_run()

st.subheader("The five models")
results = run.results
rows = []
for name in MODEL_NAMES:
    model = results["models"][name]
    rows.append(
        {
            "model": MODEL_LABELS[name],
            "clean": model["clean_acc"],
            "FGSM": model["fgsm_acc"],
            "I-FGSM": model["ifgsm_acc"],
            "paper (adversarial)": PAPER_RESULTS["student_adversarial_acc"]
            if name == "filter_distillation"
            else np.nan,
        }
    )
table = pd.DataFrame(rows).set_index("model")
st.dataframe(percentages(table), width="stretch")
attack = run.config.eval_attack
st.caption(
    f"White-box attacks crafted on each evaluated model at T = 1: eps {attack.eps}, alpha {attack.alpha}, "
    f"{attack.steps} steps, on all {results['data']['n_test']:,} test images (run `{shown(run.directory)}`, preset "
    f"{run.config.preset}, seed {run.config.seed}). Distilled students are known to mask "
    "gradients at T = 1 (Carlini & Wagner 2016): high numbers here do not prove robustness."
)
downloads = st.columns(2)
downloads[0].download_button(
    "Download results (JSON)", json.dumps(results, indent=2), "results.json", "application/json"
)
downloads[1].download_button("Download the table (CSV)", table.to_csv(), "models.csv", "text/csv")

st.subheader("Robustness that gradient masking cannot fake")
if run.robustness:
    robust = run.robustness
    labels = {
        "clean": "clean",
        "fgsm": "FGSM (cross-entropy)",
        "ifgsm": "I-FGSM (cross-entropy)",
        "fgsm_logits_t": "FGSM on logits/T",
        "ifgsm_logits_t": "I-FGSM on logits/T",
        "ifgsm_margin": "I-FGSM, margin loss",
        "pgd_margin": "PGD, margin loss",
        "transfer_ifgsm": "transfer I-FGSM (surrogate)",
        "worst_case": "worst case (headline)",
    }
    robust_table = pd.DataFrame(
        {
            name: {labels[k]: v for k, v in report["attacks"].items()}
            | {"inputs with zero gradient": report["zero_grad_fraction"]}
            for name, report in robust["models"].items()
        }
    ).rename(
        columns=MODEL_LABELS
    )  # attacks as rows, the five models as columns: fits the page without a horizontal scroll
    st.dataframe(robust_table.style.format("{:.2%}"), width="stretch")
    config = robust["config"]
    st.caption(
        f"A stratified subset of {robust['n_test']:,} test images (of {results['data']['n_test']:,}), eps "
        f"{config['eps']}, {config['steps']} steps, alpha = {config['step_ratio']} x eps; an input counts as robust "
        "only if every attack fails on it. Its clean and I-FGSM rows differ from the table above by the subset (and "
        "the attack's steps), not by the model: the same student, measured on fewer images."
    )
    curve = go.Figure()
    for name, report in robust["models"].items():
        curve.add_trace(
            go.Scatter(
                x=[p["eps"] * 255 for p in report["eps_curve"]],
                y=[p["robust_acc"] for p in report["eps_curve"]],
                name=MODEL_LABELS.get(name, name),
                mode="lines+markers",
            )
        )
    curve.update_layout(
        height=340,
        margin=dict(t=30, b=30),
        xaxis_title="eps (grey levels of 255)",
        yaxis_title="worst-case accuracy",
        yaxis_range=[0, 1],
        title="Accuracy vs eps, strongest attack per input",
    )
    st.plotly_chart(curve, width="stretch", key="chart-eps")
    figure_download(curve, "eps_curve")
else:
    st.warning(
        "No adaptive evaluation for this run yet. Until then the FGSM / I-FGSM columns above may be inflated by "
        "gradient masking."
    )
    with guard("the robustness job"):
        follow_up(run_dir(), "robustness", "measure the adaptive robustness", "robustness")

st.subheader("Abstention: MC dropout on the student")
if run.abstention:
    abstention = run.abstention
    config = abstention["config"]
    set_labels = {"clean": "clean test", "ifgsm": "I-FGSM (paper-style)", "pgd_margin": "PGD, margin loss (adaptive)"}
    st.caption(
        f"{config['passes']} forward passes with dropout on; the student abstains when the passes disagree "
        f"(expected KL from their mean) more than a cut-off set at {config['fpr']:.0%} false positives on "
        f"{abstention['n_calibration']:,} trusted clean images. {abstention['n_test']:,} test images, model "
        f"`{abstention['model']}`."
    )
    abstention_table = pd.DataFrame(
        {
            set_labels.get(name, name): {
                "accuracy (answer all)": result["accuracy_all"],
                "coverage at the cut-off": result["at_cutoff"]["coverage"],
                "accuracy on answered": result["at_cutoff"]["accuracy"],
            }
            for name, result in abstention["sets"].items()
        }
    ).T
    st.dataframe(percentages(abstention_table), width="stretch")
    coverage = go.Figure()
    for name, result in abstention["sets"].items():
        coverage.add_trace(
            go.Scatter(
                x=[p["coverage"] for p in result["curve"]],
                y=[p["accuracy"] for p in result["curve"]],
                name=set_labels.get(name, name),
                mode="lines+markers",
            )
        )
        at = result["at_cutoff"]
        coverage.add_trace(
            go.Scatter(
                x=[at["coverage"]],
                y=[at["accuracy"]],
                mode="markers",
                marker_size=13,
                marker_symbol="x",
                showlegend=False,
                name=f"{name} at the cut-off",
            )
        )
    coverage.update_layout(
        height=340,
        margin=dict(t=30, b=30),
        xaxis_title="coverage (share answered)",
        yaxis_title="accuracy on answered inputs",
        yaxis_range=[0, 1.02],
        xaxis_range=[0, 1.02],
        title="Coverage vs accuracy (x: the calibrated cut-off)",
    )
    st.plotly_chart(coverage, width="stretch", key="chart-coverage")
    figure_download(coverage, "coverage_accuracy")
else:
    st.info("No abstention evaluation for this run yet.")
    with guard("the abstention job"):
        follow_up(run_dir(), "abstain", "measure abstention (MC dropout)", "abstain")

st.subheader("Teacher probabilities at T and at 1")
T = st.slider("Temperature T", 1.0, 100.0, float(run.config.temperature), 0.5, key="T", bind="query-params")
with guard("the teacher's probabilities"):
    last = test_set_size(run_dir()) - 1
    index = st.number_input("GTSRB test image", 0, last, 0, key="distill_image", bind="query-params")
    probabilities = teacher_probabilities(run_dir(), int(index), T)
    at_t, at_1 = probabilities["at_t"], probabilities["at_1"]
    left, right = st.columns([1, 4])
    left.image(enlarged(probabilities["image"], 5), caption=CLASS_NAMES[probabilities["label"]], output_format="PNG")
    figure = go.Figure(
        [
            go.Bar(y=[n for n, _ in at_t][::-1], x=[p for _, p in at_t][::-1], orientation="h", name=f"T = {T:g}"),
            go.Bar(y=[n for n, _ in at_1][::-1], x=[p for _, p in at_1][::-1], orientation="h", name="T = 1"),
        ]
    )
    # A log axis: at T = 1 the top class holds nearly all the mass and the others are 1e-4..1e-8, which a linear axis
    # draws as nothing; softening is the rise of those small bars at T (the dark knowledge the student learns from).
    figure.update_layout(
        barmode="group",
        height=320,
        margin=dict(t=30, b=30),
        xaxis_type="log",
        xaxis_range=[-8, 0],
        xaxis_title="probability (log scale)",
        # plain powers of ten: Plotly's SI prefixes read "10n, 1µ, 100µ" (issue 34)
        xaxis_tickvals=[10.0**power for power in range(-8, 1, 2)],
        xaxis_ticktext=["10⁻⁸", "10⁻⁶", "10⁻⁴", "0.01", "1"],
    )
    with right:
        st.plotly_chart(figure, width="stretch", key="chart-teacher")
        figure_download(figure, "teacher_probabilities")
        st.caption(
            f"Top class at T = 1: {at_1[0][1]:.6f}; at T = {T:g}: {at_t[0][1]:.4f}. The second class rises from "
            f"{at_1[1][1]:.1e} to {at_t[1][1]:.1e}: what softening gives the student (log scale)."
        )

st.subheader("Train teacher and student on the filtered set")
# The Threshold page's score and threshold, validated here (that page may have stored a score this run cannot
# filter with, e.g. one whose scores file is damaged): anything unusable falls back to the DAE at the run's threshold.
score, threshold = "dae", run.threshold
requested = st.session_state.get("score", "dae")
try:
    if requested != "dae":
        run.scores_of(requested)  # the scores themselves must load, not only the threshold
    stored = session_threshold(run, requested)
    if not math.isfinite(stored):
        raise ValueError(f"threshold {stored}")
    score, threshold = requested, stored
except (CheckpointError, ValueError, TypeError) as problem:
    st.info(
        f"The Threshold page's score '{requested}' cannot be used here ({problem}); using the DAE score at the "
        "run's threshold instead."
    )
steps = st.slider(
    "optimiser steps (teacher and student each; default: the sweep's, the run's recipe on all of train)",
    10,
    max(4 * sweep_steps(run), 100),
    sweep_steps(run),
    key="distill_steps",
    bind="query-params",
)
st.caption(f"Uses the Threshold page's current score ({score}) and threshold ({threshold:.5f}) and T = {T:g}.")
if st.button("Train in the background", type="primary", help="A background job: leave the page, it goes on"):
    with guard("starting the training"):
        point_job(run_dir(), score, threshold, steps, temperature=T)
with guard("the background jobs"):
    jobs_panel(run_dir(), kind="point", key="distillation", limit=3)
if trained := trained_points(run_dir()):
    columns = (
        "score",
        "threshold",
        "temperature",
        "steps",
        "kept",
        "clean_acc",
        "fgsm_acc",
        "ifgsm_acc",
        "adaptive_acc",
    )
    points = pd.DataFrame([{key: point.get(key) for key in columns} for point in trained])
    shares = {column: "{:.2%}" for column in points.columns if column.endswith(("_acc", "_rate"))}
    st.dataframe(
        points.style.format(shares, precision=5, na_rep="—"), width="stretch", hide_index=True
    )  # no raw None, no index column
