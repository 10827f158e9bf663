"""Poison: pick a threat model (the paper's perturbations, label flipping, a BadNets backdoor) and look at it."""
import numpy as np
import pandas as pd
import streamlit as st
import torch

from core import explore
from core.data import CLASS_NAMES
from core.evaluate import accuracy
from core.poison import DEFAULT_FRACTIONS, DEFAULT_SOURCE_CLASS, DEFAULT_TARGET_CLASS, THREATS, PoisonConfig, craft, poison_training_set, quantise_toward
from ui.common import (cached_classifier, cached_comparison, cached_run, enlarged, ensure_navigation, guard, preset_config,
                       run_dir, run_splits)

ensure_navigation()

st.title("Poison")
THREAT_LABELS = {"perturbation": "Perturbation (the paper's)", "label_flip": "Label flipping", "backdoor": "BadNets backdoor"}
threat = st.radio("Threat model", THREATS, format_func=THREAT_LABELS.get, horizontal=True, key="threat", bind="query-params")


def other_threat(threat: str) -> None:
    """Label flipping and the backdoor: settings, a preview, the damage measured by `compare`, and applying it."""
    st.caption({"label_flip": "The attacker relabels a share of one source class as a target class; images are untouched.",
                "backdoor": "The attacker stamps a small trigger on a share of the other classes' training images and relabels "
                            "them as the target class; at test time the trigger steers any image to the target."}[threat])
    left, right = st.columns(2)
    classes = list(range(len(CLASS_NAMES)))
    with left:
        source = st.selectbox("source class", classes, index=DEFAULT_SOURCE_CLASS, format_func=lambda c: f"{c}: {CLASS_NAMES[c]}",
                              key="source_class", disabled=threat != "label_flip")
        target = st.selectbox("target class", classes, index=DEFAULT_TARGET_CLASS, format_func=lambda c: f"{c}: {CLASS_NAMES[c]}",
                              key="target_class")
    with right:
        fraction = st.slider("poison fraction" + (" of the source class" if threat == "label_flip" else " of the other classes"),
                             0.0, 1.0, DEFAULT_FRACTIONS[threat], 0.01, key=f"fraction_{threat}")
        trigger = st.slider("trigger size (pixels)", 1, 8, 3, key="trigger_size", disabled=threat != "backdoor")
        seed = st.number_input("seed", 0, 10_000, 0, key="threat_seed")
    config = None
    with guard("the poison settings"):
        config = PoisonConfig(threat=threat, fraction=fraction, source_class=source, target_class=target, trigger_size=trigger,
                              seed=int(seed))
    run = None
    with guard("loading the data"):
        run = cached_run(run_dir())
        train = run_splits(run).train
    if config is None or run is None:
        return
    poisoned = poison_training_set(train, None, config)  # no crafting: milliseconds
    changed = torch.nonzero(poisoned.poison_mask).flatten()
    st.success(f"{poisoned.n_poisoned:,} of {len(train):,} training samples poisoned "
               f"({poisoned.n_poisoned / max(len(train), 1):.2%} of the training set).")
    if len(changed):
        shown = changed[torch.randperm(len(changed), generator=torch.Generator().manual_seed(int(seed)))[:8]]
        columns = st.columns(8)
        for column, index in zip(columns, shown.tolist()):
            column.image(enlarged(poisoned.data.images[index]), width="stretch",
                         caption=f"{CLASS_NAMES[int(train.labels[index])]} → {CLASS_NAMES[int(poisoned.data.labels[index])]}")
    with guard("the measured damage"):
        comparison = cached_comparison()
        if threat in comparison["summary"]:
            reference = comparison["summary"][threat]["reference"]
            shipped = comparison["config"]["fractions"][threat]
            st.markdown(f"**Measured damage** (shipped comparison, default settings: fraction {shipped:.0%}, "
                        f"{len(comparison['runs'])} seeds, preset `{comparison['config']['experiment']['preset']}`)")
            cols = st.columns(4)
            for column, (name, key, title) in zip(cols, (("clean_reference", "clean_acc", "clean reference: clean acc."),
                                                         ("undefended", "clean_acc", "undefended: clean acc."),
                                                         ("clean_reference", "attack_success_rate", "clean reference: attack success"),
                                                         ("undefended", "attack_success_rate", "undefended: attack success"))):
                stat = reference[name][key]
                column.metric(title, f"{stat['mean']:.1%}", f"± {stat['std'] * 100:.1f} points", delta_color="off")
            st.caption("The Detectors page shows which filters remove these poisons, and what the student keeps. "
                       f"CLI: `python -m core run --threat {threat}` for a full run with these settings.")


if threat != "perturbation":
    other_threat(threat)
    st.stop()

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
    poisoned = quantise_toward(clean, craft(model, clean, labels, PoisonConfig(attack=attack, eps=eps, alpha=alpha, steps=steps, fraction=1.0, seed=seed)), eps)
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
                                 PoisonConfig(attack=attack, eps=eps, alpha=alpha, steps=steps, fraction=fraction, seed=seed),
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
