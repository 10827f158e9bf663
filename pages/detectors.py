"""Detectors: every poison detector against the no-filter, random and oracle controls, per threat model."""

from ui.navigation import ensure_navigation

ensure_navigation()  # first: a deep link on a fresh server goes through app.py before the engine loads

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.detectors.detect import filter_label
from core.engine.registry import THREATS
from core.experiments.compare import SHIPPED_COMPARISON, SHIPPED_COMPARISONS, comparison_rows
from core.experiments.defence_grid import case_label, defence_rows
from core.reporting.report import ranking_table
from ui.data import cached_comparison, cached_defence_costs, cached_defence_grid, shown
from ui.links import link_names
from ui.widgets import figure_download, full_table, guard, require_run, wrapped_table

st.title("Detectors")
st.caption(
    "Rules: poisons are 8-bit images like the rest; a detector sees only the defender's trusted images, its own "
    "classifier and DAE, and the training set; never the attacker's surrogate or the poison mask, which is used "
    "here only to score. Every detector drops the same share of the training set (the run's threshold rule)."
)

# Issue 38: the deployer's question first: which single defence, at one setting chosen in advance, holds against every
# poison? Every defence of the shipped grids, ranked by its worst case; none is left out for doing badly.
st.header("One defence against every poison?")
ranking_grid = None
with guard("loading the defence grids"):
    ranking_grid = cached_defence_grid()
if ranking_grid is None:
    st.info("No shipped defence grid: `python -m core defences --seeds 3 --out checkpoints/defences` makes it.")
else:
    ranking_rows, ranking_sentence = ranking_table(ranking_grid, cached_defence_costs())
    st.markdown(f"**{ranking_sentence}**")
    wrapped_table(pd.DataFrame(ranking_rows))
    st.caption(
        "The goal: one defence, one setting, keeps 90% of the clean reference's accuracy against every availability "
        "poison (the adaptive ones included) and leaves every backdoor under 5% attack success at a cost of at most "
        "2 points, over 3 seeds. Kept: the defended model's clean accuracy over the clean reference trained beside it "
        "(mean over seeds) against the poison where that share is smallest. Poisons / backdoors: how many of the "
        "grids' cases the defence was trained behind; seeds: the fewest behind any of its cells. From the shipped "
        "defence grids merged (preset compare; the table below names each case's settings). The newest defences "
        "(issue 38's five, then I-BAU) had their setting chosen on clean data before any poison "
        "(`python -m core blind`, docs/results.md). Cost: "
        "seconds of its training over one plain training's, measured side by side by `python bench/defence_cost.py` "
        "(its file names the preset, images and threads)."
    )
st.divider()

# The shipped comparisons that are there (a checkout may hold only the main one): a selector when there are several.
shipped = {label: path for label, path in SHIPPED_COMPARISONS.items() if path.exists()} or {
    "every threat": SHIPPED_COMPARISON  # none: loading it says how to make it
}
chosen = next(iter(shipped))
if len(shipped) > 1:
    chosen = st.radio("Comparison", list(shipped), key="comparison", bind="query-params")
comparison = None
with guard("loading the comparison"):
    comparison = cached_comparison(str(shipped[chosen]))
if comparison is None:
    st.stop()

threats = [threat for threat in comparison["summary"] if threat in THREATS]
link_names("threat", threats, THREATS.label)
threat = st.radio(
    "Threat model", threats, format_func=THREATS.label, horizontal=True, key="threat", bind="query-params"
)
summary = comparison["summary"][threat]
first_run = next(iter(comparison["runs"].values()))[threat]
experiment = comparison["config"]["experiment"]
n_seeds = len(comparison["runs"])
poison = first_run["poison"]
spec = THREATS[threat]
what = f"{spec.description} Poison fraction: {poison['fraction']:.0%} of {spec.fraction_of}"
st.markdown(
    f"**{spec.label}**: {what}: {poison['n_poisoned']:,} poisons in {poison['n_train']:,} training images. "
    f"From `{shown(shipped[chosen])}` (`python -m core compare`): preset `{experiment['preset']}`, {n_seeds} "
    f"seed{'s' if n_seeds > 1 else ''} (mean ± standard deviation), {first_run['n_test']:,} test images, worst case "
    f"over adaptive attacks on {first_run['n_robust_test']:,} of them. The Overview's run is another study (all of "
    "GTSRB, one seed): its numbers differ by data and seeds."
)

reference, undefended = summary["reference"]["clean_reference"], summary["reference"]["undefended"]
damage = [*st.columns(2), *st.columns(2)]  # two rows of two: the labels stay whole down to 1024 px windows
damage[0].metric("clean reference: clean accuracy", f"{reference['clean_acc']['mean']:.1%}")
damage[1].metric(
    "undefended: clean accuracy",
    f"{undefended['clean_acc']['mean']:.1%}",
    f"{(undefended['clean_acc']['mean'] - reference['clean_acc']['mean']) * 100:+.1f} points",
)
if "attack_success_rate" in undefended:
    damage[2].metric("clean reference: attack success", f"{reference['attack_success_rate']['mean']:.1%}")
    damage[3].metric(
        "undefended: attack success",
        f"{undefended['attack_success_rate']['mean']:.1%}",
        f"{(undefended['attack_success_rate']['mean'] - reference['attack_success_rate']['mean']) * 100:+.1f} points",
        delta_color="inverse",
    )
    st.caption(
        "Attack success: backdoor, the share of triggered test images of other classes classified as the target; "
        "label flipping, the share of Stop test images classified as 60 km/h."
    )
else:
    damage[2].metric("undefended: I-FGSM accuracy", f"{undefended['ifgsm_acc']['mean']:.1%}")
    damage[3].metric("undefended: worst case", f"{undefended['adaptive_acc']['mean']:.1%}")

rows = comparison_rows(summary)
table = pd.DataFrame(rows)
# Two tables rather than one of nine columns: the one was cut after its I-FGSM column at 1280 px (issue 34)
detection = ["ROC AUC", "precision", "recall"]
st.markdown("**Finding the poisons**: each detector's drop decision against the ground truth")
full_table(table[table["filter"] != "-"][["filter", *detection]])
st.markdown("**The student behind each filter** (distilled at T), beside the clean reference and undefended model")
full_table(table[[column for column in table.columns if column not in detection]])
st.caption(
    "Controls (no filter, random, oracle) are scored by their drop decision itself. Clean / I-FGSM on the test "
    "set; worst case = the strongest of FGSM / I-FGSM on logits and logits/T, margin-loss I-FGSM and PGD, and "
    "transfer from the surrogate, per input."
)
downloads = st.columns(2)
downloads[0].download_button(
    "Download the table (CSV)", table.to_csv(index=False), f"detectors_{threat}.csv", "text/csv"
)
downloads[1].download_button(
    "Download compare.json", json.dumps(comparison, indent=2), "compare.json", "application/json"
)

detectors = [
    name
    for name, quality in summary["filters"].items()
    if quality.get("auroc") and name not in ("random", "oracle", "none")
]
auc = go.Figure(
    go.Bar(
        x=[filter_label(name) for name in detectors],
        y=[summary["filters"][name]["auroc"]["mean"] for name in detectors],
        error_y=dict(type="data", array=[summary["filters"][name]["auroc"]["std"] for name in detectors]),
        marker_color=["#e45756" if name == "dae" else "#4c78a8" for name in detectors],
    )
)
auc.add_hline(0.5, line_dash="dot", line_color="grey", annotation_text="chance")
auc.add_hline(0.95, line_dash="dash", line_color="green", annotation_text="goal 0.95")
auc.update_layout(
    height=360,
    margin=dict(t=40, b=30),
    yaxis_range=[0, 1.02],
    yaxis_title="ROC AUC (mean ± std over seeds)",
    title=f"Separating poisons from clean training images: {spec.label}",
)
st.plotly_chart(auc, width="stretch", key="chart-auc")
figure_download(auc, f"detector_auc_{threat}")

run = require_run()
if run.detectors and threat == run.config.poison.threat:
    st.subheader("On the loaded run")
    st.caption(
        f"The same detectors on the loaded run's training set ({run.detectors['n_poisoned']:,} poisons in "
        f"{run.detectors['n_train']:,} images, preset `{run.config.preset}`). Switch the score on the Threshold page."
    )
    paper_rows = [
        {
            "detector": filter_label(name),
            "ROC AUC": quality["auroc"],
            "precision": quality["precision"],
            "recall": quality["recall"],
        }
        for name, quality in run.detectors["detectors"].items()
    ]
    st.dataframe(
        pd.DataFrame(paper_rows).style.format({"ROC AUC": "{:.3f}", "precision": "{:.3f}", "recall": "{:.3f}"}),
        width="stretch",
        hide_index=True,
    )

st.divider()
st.header("Defences against each threat")
grid = None
with guard("loading the defence grid"):
    grid = cached_defence_grid()
if grid is None:
    st.info("No shipped defence grid: `python -m core defences --seeds 3 --out checkpoints/defences` makes it.")
    st.stop()
cases = list(grid["summary"])
if not cases:
    st.info("The shipped defence grid has not finished any threat case yet.")
    st.stop()
case = st.radio(
    "Threat case",
    cases,
    horizontal=True,
    key="case",
    bind="query-params",
    format_func=lambda name: case_label(grid, name),
)
case_summary = grid["summary"][case]
settings = grid["config"]["case_settings"][case]
first = next(iter(grid["runs"].values()))[case]
budget = (
    f"eps {settings['eps'] * 255:.1f}/255 on "
    if settings["threat"] in THREATS and "eps" in THREATS[settings["threat"]].params
    else ""
)
st.markdown(
    f"**{THREATS.label(settings['threat'])}**, {budget}{settings['fraction']:.0%} of "
    f"{THREATS[settings['threat']].fraction_of} ({first['poison']['n_poisoned']:,} poisons in "
    f"{first['poison']['n_train']:,} images). Preset `{grid['config']['experiment']['preset']}` (the detector "
    f"comparison's: many models per case), mean ± std over the seeds each row names; one classifier per defence, "
    f"no distillation; clean accuracy on {first['n_test']:,} test images, worst case over adaptive attacks at the "
    f"paper's eps 0.01 on {first['n_robust_test']:,} of them."
)
grid_table = pd.DataFrame(defence_rows(case, case_summary))
full_table(grid_table, wide=("model",))
st.caption(
    "Published numbers are CIFAR-10 (Fowl et al. 2021, Huang et al. 2021, Liu et al. 2023, Wu et al. 2023, Sadasivan "
    "et al. 2023; backdoor: BackdoorBench's attack success): another dataset and model, for orientation only. Oracle: "
    "trained on the clean images only (n/a when every image is poisoned). Purify the training set only: the first "
    "grid's measurement, test images raw; at train and test time: as purification is deployed, its worst case "
    "attacked through the purifier's noise: 'EOT xN' where each attack step followed the mean of N noisy passes "
    "(expectation over transformation), one pass otherwise (an upper bound)."
)
names = [name for name, metrics in case_summary["models"].items() if metrics]
bars = go.Figure(
    go.Bar(
        x=[name.replace("_", " ") for name in names],
        y=[case_summary["models"][name]["clean_acc"]["mean"] for name in names],
        error_y=dict(type="data", array=[case_summary["models"][name]["clean_acc"]["std"] for name in names]),
        marker_color=[
            "#54a24b" if name in ("clean_reference", "oracle") else "#e45756" if name == "none" else "#4c78a8"
            for name in names
        ],
    )
)
bars.update_layout(yaxis_title="clean test accuracy", yaxis_tickformat=".0%", height=360, margin=dict(t=20))
st.plotly_chart(bars, width="stretch")
figure_download(bars, f"defences_{case}")
st.download_button("Download defences.json", json.dumps(grid, indent=1), "defences.json", "application/json")
