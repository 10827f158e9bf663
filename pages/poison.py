"""Poison: craft FGSM / I-FGSM poisons on the attacker's surrogate and look at them."""
import numpy as np
import pandas as pd
import streamlit as st
import torch

from core import explore
from core.data import CLASS_NAMES
from core.evaluate import accuracy
from core.poison import PoisonConfig, craft, poison_training_set, quantise_toward
from ui.common import ensure_navigation, cached_classifier, cached_run, enlarged, guard, preset_config, run_dir, run_splits

ensure_navigation()

st.title("Poison")
st.caption("The attacker replaces a share of the training images by adversarial copies crafted on a surrogate model, "
           "keeps their labels, and delivers them as ordinary 8-bit images.")

defaults = preset_config().poison
custom = st.session_state.get("preset") == "Custom"
left, right = st.columns(2)
with left:
    attack = st.selectbox("Attack", ["ifgsm", "fgsm"], format_func=str.upper, key="attack", bind="query-params",
                          disabled=not custom)
    eps = st.slider("eps (L-inf, [0, 1] pixel scale)", 0.0, 0.1, float(defaults.eps), 0.001, format="%.3f", key="eps",
                    bind="query-params", disabled=not custom)
    alpha = st.slider("alpha (I-FGSM step)", 0.0, 0.05, float(defaults.alpha), 0.001, format="%.3f", key="alpha",
                      bind="query-params", disabled=not custom or attack == "fgsm")
with right:
    steps = st.slider("steps", 1, 50, int(defaults.steps), key="steps", bind="query-params", disabled=not custom or attack == "fgsm")
    fraction = st.slider("poison fraction of the train split", 0.0, 1.0, float(defaults.fraction), 0.01, key="fraction",
                         bind="query-params", disabled=not custom)
    seed = st.number_input("seed", 0, 10_000, int(defaults.seed), key="poison_seed", disabled=not custom)
if not custom:
    st.info("Pick *Custom* in the sidebar to change these values; Paper and Quick use the paper's settings.")
    attack, eps, alpha, steps, fraction, seed = defaults.attack, defaults.eps, defaults.alpha, defaults.steps, defaults.fraction, defaults.seed
if attack != "fgsm" and alpha * steps < eps:
    st.warning(f"alpha x steps = {alpha * steps:.4f} is below eps = {eps}: I-FGSM cannot reach the edge of the eps-ball.")
st.caption(f"eps {eps} is {eps * 255:.2f} grey levels; after rounding to 8 bits toward the original, "
           f"each pixel moves by at most {int(eps * 255 + 1e-6)} levels.")

config = None
with guard("the poison settings"):
    config = PoisonConfig(attack=attack, eps=eps, alpha=alpha, steps=steps, fraction=fraction, seed=int(seed))
run = None
with guard("loading the surrogate"):
    run = cached_run(run_dir())
    surrogate = cached_classifier(run_dir(), "surrogate")
    splits = run_splits(run)
if config is None or run is None:
    st.stop()

st.subheader("Preview")
classes = st.multiselect("Classes", list(range(len(CLASS_NAMES))), default=[1, 14, 17, 25], format_func=lambda c: CLASS_NAMES[c],
                         max_selections=8)
per_class = st.slider("samples per class", 1, 4, 2)


@st.cache_data(max_entries=16, show_spinner="Crafting preview poisons...")
def preview(directory: str, classes: tuple, per_class: int, attack: str, eps: float, alpha: float, steps: int, seed: int):
    run = cached_run(directory)
    train = run_splits(run).train
    rng = np.random.default_rng(seed)
    index = [int(i) for c in classes for i in rng.choice(np.flatnonzero(train.labels.numpy() == c), per_class, replace=False)]
    index = torch.tensor(index, dtype=torch.long)
    clean, labels = train.images[index], train.labels[index]
    model = cached_classifier(directory, "surrogate")
    poisoned = quantise_toward(clean, craft(model, clean, labels, PoisonConfig(attack, eps, alpha, steps, 1.0, seed)), eps)
    return clean, poisoned, labels


with guard("the preview"):
    if classes:
        clean, poisoned, labels = preview(run_dir(), tuple(classes), per_class, attack, eps, alpha, steps, int(seed))
        stats = explore.perturbation_stats(clean, poisoned)
        before, after = accuracy(surrogate, clean, labels), accuracy(surrogate, poisoned, labels)
        cols = st.columns(5)
        cols[0].metric("L-inf", f"{stats['linf_levels']:.0f} levels", f"{stats['linf']:.4f}", delta_color="off")
        cols[1].metric("mean L2", f"{stats['l2']:.4f}")
        cols[2].metric("PSNR", f"{stats['psnr_db']:.1f} dB")
        cols[3].metric("surrogate acc. before", f"{before:.0%}")
        cols[4].metric("surrogate acc. after", f"{after:.0%}", f"{after - before:+.0%}")
        amplified = ((poisoned.float() - clean.float()) / max(2 * eps * 255, 1e-6) + 0.5).clamp(0, 1)
        for row in range(len(clean)):
            c1, c2, c3, c4 = st.columns([1, 1, 1, 3])
            c1.image(enlarged(clean[row]), caption="clean" if row == 0 else None, width="stretch")
            c2.image(enlarged(poisoned[row]), caption="poisoned" if row == 0 else None, width="stretch")
            c3.image(enlarged(amplified[row]), caption="perturbation (amplified)" if row == 0 else None, width="stretch")
            c4.markdown(f"**{CLASS_NAMES[int(labels[row])]}**")
    else:
        st.caption("Pick at least one class.")

st.subheader("Apply to the training set")


@st.cache_resource(max_entries=3, show_spinner=False)
def applied(directory: str, attack: str, eps: float, alpha: float, steps: int, fraction: float, seed: int):
    run = cached_run(directory)
    bar = st.progress(0.0, text="Crafting poisons")
    result = poison_training_set(run_splits(run).train, cached_classifier(directory, "surrogate"),
                                 PoisonConfig(attack, eps, alpha, steps, fraction, seed),
                                 progress=lambda done, total: bar.progress(done / max(total, 1), text=f"Crafting poisons {done}/{total}"))
    bar.empty()
    return result


if st.button("Apply", type="primary"):
    st.session_state["applied_poison"] = (attack, eps, alpha, steps, fraction, int(seed))
if "applied_poison" in st.session_state:
    with guard("poisoning the training set"):
        poisoned_set = applied(run_dir(), *st.session_state["applied_poison"])
        changed = (poisoned_set.data.images != splits.train.images).flatten(1).any(dim=1)
        summary = {"poisoned": poisoned_set.n_poisoned, "of": len(splits.train), "actually changed": int(changed.sum()),
                   **explore.perturbation_stats(splits.train.images[poisoned_set.poison_mask], poisoned_set.data.images[poisoned_set.poison_mask])}
        st.success(f"{summary['poisoned']:,} of {summary['of']:,} training images replaced "
                   f"({summary['actually changed']:,} differ after rounding).")
        st.dataframe(pd.DataFrame([summary]), width="stretch")
        st.caption("Run the whole pipeline on these settings from the Overview page (*Run the experiment*).")
