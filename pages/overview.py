"""Overview: the method, the current run's headline numbers beside the paper's, and how to get a run."""

from dataclasses import replace
from pathlib import Path

import streamlit as st

from core.pipeline import MODEL_NAMES, PAPER_RESULTS
from core.run import SHIPPED_RUN, train_run
from ui.common import custom_poison, data_root, ensure_navigation, guard, preset_config, require_run, shown

ensure_navigation()

st.title("DAE-filtered defensive distillation, measured")
st.caption(
    "Badjie, Cecílio & Casimiro (2023) poison GTSRB with FGSM / I-FGSM, filter the training set with a denoising "
    "autoencoder, and distil a student at temperature T. This tool reruns that pipeline and shows what it really does."
)

st.graphviz_chart("""
digraph {
  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#f3f4f6", fontname="sans-serif"];
  train [label="GTSRB train split"]; poison [label="Poison\\nFGSM / I-FGSM on a surrogate", fillcolor="#fde2e4"];
  dae [label="DAE filter\\nreconstruction error > threshold -> drop"]; teacher [label="Teacher at T"];
  soft [label="Soft labels\\nsoftmax(z / T)"];
  student [label="Student at T\\n(evaluated at T = 1)", fillcolor="#e2f0cb"];
  trusted [label="Trusted clean slice", fillcolor="#dbeafe"];
  train -> poison -> dae -> teacher -> soft -> student; trusted -> dae [label="trains", style=dashed];
}
""")

buttons = st.columns(2)
if buttons[0].button("Load the shipped demo run"):
    st.session_state["run_dir"] = str(SHIPPED_RUN)
    st.rerun()
run_clicked = buttons[1].button(
    "Run the experiment", help="With the sidebar's preset; Custom uses the Poison page's values."
)

if run_clicked:
    with guard("the experiment"):
        config = preset_config()
        if st.session_state.get("preset") == "Custom":
            config = replace(config, poison=custom_poison() or config.poison)
        out = Path("runs") / f"app-{config.preset}-seed{config.seed}"
        with st.status(f"Running {config.summary()}", expanded=True) as status:
            bar = st.progress(0.0)
            st.button("Cancel", key="cancel-run", help="Stops the run; finished models stay cached")
            run = train_run(
                config,
                out,
                Path("runs") / "cache",
                data_root(),
                progress=lambda stage, done, total: bar.progress(done / max(total, 1), text=f"{stage}: {done}/{total}"),
            )
            status.update(label=f"Done in {run.results['seconds']:.0f} s; results in {out}", state="complete")
        st.session_state["run_dir"] = str(out)

run = require_run()

results = run.results
st.subheader("Headline results")
st.caption(f"Run: `{shown(run.directory)}` — {run.config.summary()}")
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
    f"paper: {PAPER_RESULTS['inferred_threshold']}",
    delta_color="off",
    delta_arrow="off",
)
rows = [
    {"model": name, **{k: f"{v:.2%}" for k, v in results["models"][name].items() if k.endswith("_acc")}}
    for name in MODEL_NAMES
]
st.dataframe(rows, width="stretch")
st.markdown(
    "**How to read this.** `undefended` is the honest baseline for the defence; `clean_reference` shows whether the "
    "poisons hurt at all. A filter ROC AUC near 0.5 means the score cannot tell these poisons from clean images: "
    "a 2-grey-level perturbation moves an image's reconstruction error far less than the error varies from one clean "
    "image to the next (`python -m core report` measures both). The Threshold page shows the filter at work; the "
    "Distillation page the five models side by side, with adaptive attacks that gradient masking cannot fool and "
    "MC-dropout abstention. The Detectors page compares the registered poison detectors with no-filter, random and "
    "oracle controls under each threat model."
)
