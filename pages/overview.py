"""Overview: the method, the current run's headline numbers beside the paper's, and how to get a run."""

from ui.navigation import ensure_navigation

ensure_navigation()  # first: a deep link on a fresh server goes through app.py before the engine loads

from dataclasses import replace
from pathlib import Path

import streamlit as st

from core.detectors.detect import PAPER_INITIAL_THRESHOLD
from core.experiments.defence_grid import SHIPPED_DEFENCE_GRIDS
from core.experiments.pipeline import MODEL_LABELS, MODEL_NAMES, PAPER_RESULTS
from core.experiments.run import SHIPPED_RUN, SHIPPED_SWEEP_RUNS, weak_students_note
from core.jobs import default_threads, list_jobs, minutes
from core.reporting.findings import findings
from core.studies.run import run_arguments
from ui.data import cached_defence_grid, cached_run, experiment_seconds_here, run_dir, shown
from ui.jobs import COARSE_SHARES, experiment_commands, jobs_panel, jobs_root, run_folder, start
from ui.widgets import custom_poison, guard, preset_config, require_run

GLOSSARY = """
- **FGSM / I-FGSM / PGD**: one-step and iterated gradient-sign attacks (Goodfellow et al. 2015; Kurakin et al. 2017;
  Madry et al. 2018); *eps* is how far each pixel may move (0.01 = 2.55 grey levels of 255).
- **DAE**: denoising autoencoder; its *reconstruction error* is the paper's poison score.
- **Teacher / student, T**: defensive distillation (Papernot et al. 2016): the student learns the teacher's softened
  probabilities at temperature T.
- **Adaptive worst case**: per test image, the strongest of several attacks that know the defence (logits / T, margin
  loss, PGD, transfer); distilled students can hide from plain attacks (*gradient masking*).
- **EOT**: expectation over transformation: an attack that averages its gradient over a defence's random noise.
- **TAP**: targeted adversarial poisoning (Fowl et al. 2021): every training image nudged toward another class.
- **Unlearnable noise**: error-minimising noise (Huang et al. 2021) that gives the model a shortcut to learn instead.
- **OPS**: one-pixel shortcut (Wu et al. 2023): one pixel per class set to a fixed value.
- **CUDA**: class-wise convolutional blur (Sadasivan et al. 2023).
- **BadNets**: a backdoor (Gu et al. 2017): a small trigger patch makes the model answer a target class.
- **ABL**: anti-backdoor learning (Li et al. 2021): isolate the images learnt fastest, then unlearn them.
- **MC dropout**: several forward passes with dropout on; the student abstains when they disagree.
- **Clean reference**: the same classifier trained without poisons: what a defence should get back to.
"""
PAGE_TITLES = {
    "pages/threshold.py": "Threshold",
    "pages/distillation.py": "Distillation",
    "pages/detectors.py": "Detectors",
    "pages/poison.py": "Poison",
}


def percent(value) -> str:
    return "-" if value is None else f"{value:.2%}"


st.title("DAE-filtered defensive distillation, measured")
st.caption(
    "Badjie, Cecílio & Casimiro (2023) poison GTSRB with FGSM / I-FGSM, filter the training set with a denoising "
    "autoencoder, and distil a student at temperature T. This tool reruns that pipeline and shows what it really does."
)

# Two rows, read as a snake (poisoning, then distillation coming back), at graphviz's small font sizes: the drawing is
# then narrower than the page and drawn at its own size, labels at about the body text's size. Streamlit shrinks a
# wider drawing to the page, and larger font sizes only made it wider (labels unreadable at 1024-1280 px).
st.graphviz_chart("""
digraph {
  rankdir=LR; nodesep=0.15; ranksep=0.25;
  node [shape=box, style="rounded,filled", fillcolor="#f3f4f6", fontname="sans-serif", fontsize=11, margin="0.08,0.04"];
  edge [fontsize=9, fontname="sans-serif"];
  train [label="GTSRB\\ntrain split"]; poison [label="Poison\\nFGSM / I-FGSM", fillcolor="#fde2e4"];
  dae [label="DAE filter\\nerror > threshold:\\ndrop"]; teacher [label="Teacher\\nat T"];
  soft [label="Soft labels\\nsoftmax(z / T)"];
  student [label="Student at T\\n(tested at T = 1)", fillcolor="#e2f0cb"];
  trusted [label="Trusted\\nclean slice", fillcolor="#dbeafe"];
  train -> poison -> dae; trusted -> dae [label="trains", style=dashed];
  dae -> teacher [constraint=false]; student -> soft -> teacher [dir=back];
  {rank=same; train; student} {rank=same; poison; soft} {rank=same; dae; teacher}
}
""")

buttons = st.columns(2)
if run_dir() != str(SHIPPED_RUN) and buttons[0].button("Load the shipped demo run"):
    st.session_state["run_dir"] = str(SHIPPED_RUN)
    st.rerun()
run_clicked = buttons[1].button(
    "Run the experiment",
    help="With the sidebar's preset (Custom: the Poison page's values): the run, then its threshold curve, as a "
    "background job that goes on when you leave the page.",
)
with guard("the time estimate"):
    chosen = preset_config().preset
    made_here = [job for job in list_jobs(jobs_root(), kind="experiment") if job.state == "done" and job.finished]
    same = [job for job in made_here if Path(job.run_dir or "").name.startswith(f"{chosen}-")]
    if same:
        took = same[0].finished - same[0].started
        buttons[1].caption(
            f"The last {chosen} experiment made here took {minutes(took)} with {same[0].threads} thread(s), run and "
            "curve."
        )
    else:
        threads = int(st.session_state.get("job_threads", default_threads()))
        config = preset_config()
        if st.session_state.get("preset") == "Custom":
            config = replace(config, poison=custom_poison() or config.poison)
        points = len(COARSE_SHARES) * 3 * 2  # DAE, random and oracle at the coarse shares, then as many refined
        estimate = experiment_seconds_here(config, threads, tuple(float(share) for share in COARSE_SHARES), points)
        buttons[1].caption(
            f"No {chosen} experiment made here yet. Estimated on this machine with {threads} thread"
            f"{'s' if threads > 1 else ''} (a short timing of its models here; bench/estimate.py checks it against a "
            f"measured run): about {minutes(estimate['run'])} for the run, then {minutes(estimate['curve'])} for its "
            f"threshold curve ({estimate['points']} points). The Jobs page shows progress and time left."
        )
if run_clicked:
    with guard("the experiment"):
        config = preset_config()
        if st.session_state.get("preset") == "Custom":
            config = replace(config, poison=custom_poison() or config.poison)
        out = run_folder(config)
        job = start(
            f"{config.summary()}: the run, then its threshold curve (DAE, random, oracle; one seed)",
            "experiment",
            experiment_commands(run_arguments(config), out),
            run_dir=str(out),
        )
        st.session_state["experiment_job"] = {"id": job.id, "run_dir": str(out)}

if experiment := st.session_state.get("experiment_job"):
    st.caption(
        "Your experiment runs in the background: leave this page or close the browser, it goes on (all jobs: the Jobs "
        "page). When the run is trained, the app opens it; its threshold curve then fills in on the Threshold page."
    )
    with guard("the experiment's job"):
        jobs_panel(experiment["run_dir"], key="overview", limit=1)

run = require_run()

st.subheader("What the paper claims, and what we measured")
with guard("the findings"):
    grid_files = tuple(shown(path.parent) for path in SHIPPED_DEFENCE_GRIDS if path.exists())
    sweep_runs = tuple(
        (cached_run(str(folder)), shown(folder)) for folder in SHIPPED_SWEEP_RUNS if (folder / "results.json").exists()
    )
    for finding in findings(run, cached_defence_grid(), shown(run.directory), grid_files, sweep_runs):
        with st.container(border=True):
            st.markdown(f"**{finding['title']}** ({finding['seeds']} seed{'s' if finding['seeds'] > 1 else ''})")
            if finding["paper"]:
                st.markdown(f"*The paper* {finding['paper']}.")
            st.markdown(finding["text"])
            st.caption(f"From {finding['source']}.")
            st.page_link(finding["page"], label=f"See it on the {PAGE_TITLES[finding['page']]} page", icon="➡️")
st.caption(
    "Every number above is read from the shipped files when the page opens; each card names its study. The same "
    "claim measured by two studies (a run on all of GTSRB, a grid on the compare preset's quarter) differs by their "
    "data and seeds: each page says which it shows."
)
with st.expander("Glossary: the names on these pages"):
    st.markdown(GLOSSARY)

results = run.results
st.subheader("Headline results")
if note := weak_students_note(run):
    st.warning(note)
st.caption(f"Run `{shown(run.directory)}` ({run.config.summary()}), {results['data']['n_test']:,} test images")
student = results["models"]["filter_distillation"]
cols = st.columns(4)
cols[0].metric(
    "student, I-FGSM test accuracy",
    f"{student['ifgsm_acc']:.2%}",
    f"paper: {PAPER_RESULTS['student_adversarial_acc']:.2%}",
    delta_color="off",
    delta_arrow="off",
)
cols[1].metric("student, clean test accuracy", f"{student['clean_acc']:.2%}")
cols[2].metric("filter ROC AUC (0.5 = chance)", f"{results['filter']['auroc']:.3f}")
cols[3].metric(
    "inferred threshold",
    f"{results['filter']['threshold']:.4f}",
    f"paper: {PAPER_RESULTS['inferred_threshold']} (inferred from its initial {PAPER_INITIAL_THRESHOLD})",
    delta_color="off",
    delta_arrow="off",
)
COLUMNS = {"clean_acc": "clean", "fgsm_acc": "FGSM", "ifgsm_acc": "I-FGSM", "adaptive_acc": "adaptive worst case"}
rows = [
    {
        "model": MODEL_LABELS[name],
        **{title: percent(results["models"][name].get(key)) for key, title in COLUMNS.items()},
    }
    for name in MODEL_NAMES
]
st.dataframe(rows, width="stretch", hide_index=True)
st.caption(
    "One seed; white-box attacks on each model at T = 1, eps 0.01, on every test image (the adaptive worst case: the "
    "strongest of the adaptive attacks per image, on the stratified subset the Distillation page names). The "
    "undefended model is the honest baseline for the defence; the clean reference shows whether the poisons hurt."
)
