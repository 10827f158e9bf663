"""Poison: pick a registered threat model and look at it; the perturbation threat with any registered attack."""

from ui.navigation import ensure_navigation

ensure_navigation()  # first: a deep link on a fresh server goes through app.py before the engine loads

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.engine.data import CLASS_NAMES
from core.engine.registry import ATTACKS, DEFENCES, THREATS
from core.experiments.budget import BUDGET_AXES, budget_progress
from core.experiments.compare import SHIPPED_COMPARISON
from core.experiments.defence_grid import shipped_damage
from core.threats.poison import DEFAULT_SOURCE_CLASS, DEFAULT_TARGET_CLASS, PoisonConfig
from ui.data import (
    applied_poison_summary,
    cached_budget,
    cached_comparison,
    cached_defence_grid,
    cached_run,
    load_surrogate,
    poison_preview,
    run_dir,
    shown,
    threat_preview,
)
from ui.links import CUSTOM_KNOB_RANGES, link_names
from ui.widgets import enlarged, guard, knob_widgets, preset_config, set_custom_poison

st.title("Poison")
link_names("threat", THREATS.names(), THREATS.label)
threat = st.radio(
    "Threat model", THREATS.names(), format_func=THREATS.label, horizontal=True, key="threat", bind="query-params"
)
spec = THREATS[threat]
st.caption(spec.description)


def damage_card(shipped: dict | None) -> None:
    """What the shipped defence grid measured for this threat (core.experiments.defence_grid.shipped_damage): the clean
    reference, no defence and the best defence, with the case's settings and seeds."""
    if not shipped:
        return
    setting = f"{shipped['fraction']:.0%} of train"
    if shipped["eps"] is not None and "eps" in spec.params:
        setting = f"eps {shipped['eps']:.4g} ({shipped['eps'] * 255:.1f}/255) on " + setting
    closest = "" if shipped["matches"] else " the measured case closest to these settings:"
    st.markdown(
        f"**Measured damage** (shipped defence grids, `python -m core defences`,{closest} {shipped['label']}: "
        f"{setting}, {shipped['n_seeds']} seed{'s' if shipped['n_seeds'] != 1 else ''}, preset `{shipped['preset']}`, "
        f"{shipped['n_test']:,} test images, one classifier per model, no distillation)"
    )
    st.caption(
        "Another study, not another truth: the Detectors page's comparison (`python -m core compare`) trains its "
        "own models on the same preset and seed numbers, and its means differ from these within the seeds' spread "
        "(the tables there and on the Detectors page give mean ± std). The Overview's run is all of GTSRB, one seed."
    )
    cols = st.columns(3)
    cols[0].metric("clean reference: clean acc.", f"{shipped['clean_reference']:.1%}")
    cols[1].metric(
        "undefended: clean acc.",
        f"{shipped['none']:.1%}",
        f"{(shipped['none'] - shipped['clean_reference']) * 100:+.1f} points",
    )
    cols[2].metric(f"behind the best defence ({shipped['best']})", f"{shipped['best_acc']:.1%}")


def other_threat(threat: str) -> None:
    """Threats without a surrogate: settings, a preview, the damage measured by `compare`, and applying it."""
    left, right = st.columns(2)
    classes = list(range(len(CLASS_NAMES)))
    with left:
        source = st.selectbox(
            "source class",
            classes,
            index=DEFAULT_SOURCE_CLASS,
            format_func=lambda c: f"{c}: {CLASS_NAMES[c]}",
            key="source_class",
            bind="query-params",
            disabled="source_class" not in spec.params,
        )
        target = st.selectbox(
            "target class",
            classes,
            index=DEFAULT_TARGET_CLASS,
            format_func=lambda c: f"{c}: {CLASS_NAMES[c]}",
            key="target_class",
            bind="query-params",
            disabled="target_class" not in spec.params,
        )
    with right:
        fraction = st.slider(
            f"poison fraction of {spec.fraction_of}",
            0.0,
            1.0,
            spec.default_fraction,
            0.01,
            key=f"fraction_{threat}",
            bind="query-params",
        )
        seed = st.number_input("seed", 0, 10_000, 0, key="threat_seed", bind="query-params")
    knobs = knob_widgets(spec, "threat")  # the threat's own parameters (backdoor: its trigger size), in its spec
    config = None
    with guard("the poison settings"):
        config = PoisonConfig(
            threat=threat,
            fraction=fraction,
            source_class=source,
            target_class=target,
            seed=int(seed),
            knobs=knobs,
        )
        set_custom_poison(config)
    preview = None
    with guard("loading the data"):
        preview = threat_preview(run_dir(), config) if config is not None else None  # no crafting: milliseconds
    if preview is None:
        return
    st.success(
        f"{preview['n_poisoned']:,} of {preview['n_train']:,} training samples poisoned "
        f"({preview['n_poisoned'] / max(preview['n_train'], 1):.2%} of the training set)."
    )
    columns = st.columns(8)
    for column, image, old, new in zip(columns, preview["images"], preview["old_labels"], preview["new_labels"]):
        caption = CLASS_NAMES[old] if old == new else f"{CLASS_NAMES[old]} → {CLASS_NAMES[new]}"  # relabelled or not
        column.image(enlarged(image), width="stretch", caption=caption, output_format="PNG")
    with guard("the measured damage"):
        comparison = cached_comparison()
        if threat not in comparison["summary"]:  # OPS, CUDA, ...: measured by the defence grids only
            grid = cached_defence_grid()
            damage_card(shipped_damage(grid, threat, None, fraction) if grid else None)
        if threat in comparison["summary"]:
            reference = comparison["summary"][threat]["reference"]
            shipped = comparison["config"]["fractions"][threat]
            st.markdown(
                f"**Measured damage** (shipped comparison `{shown(SHIPPED_COMPARISON)}`, default settings: fraction "
                f"{shipped:.0%}, {len(comparison['runs'])} seeds, preset "
                f"`{comparison['config']['experiment']['preset']}`, "
                f"{next(iter(comparison['runs'].values()))[threat]['n_test']:,} test images)"
            )
            cols = st.columns(4)
            for column, (name, key, title) in zip(
                cols,
                (
                    ("clean_reference", "clean_acc", "clean reference: clean acc."),
                    ("undefended", "clean_acc", "undefended: clean acc."),
                    ("clean_reference", "attack_success_rate", "clean reference: attack success"),
                    ("undefended", "attack_success_rate", "undefended: attack success"),
                ),
            ):
                stat = reference[name].get(key)
                if stat:
                    column.metric(
                        title,
                        f"{stat['mean']:.1%}",
                        f"± {stat['std'] * 100:.1f} points",
                        delta_color="off",
                        delta_arrow="off",
                    )
            st.caption(
                "The Detectors page shows which filters remove these poisons, and what the student keeps. "
                f"CLI: `python -m core run --threat {threat}` for a full run with these settings."
            )


if not spec.needs_surrogate:
    other_threat(threat)
    st.stop()

perturbation = "attack" in spec.params  # crafted with a registered attack (the paper's perturbation threat)
defaults = preset_config().poison
if not perturbation:  # TAP and unlearnable start from their own defaults (eps 8/255, all of train)
    defaults = defaults.with_threat(threat)


def key(name: str) -> str:
    """Widget keys: the perturbation threat keeps the plain names (and URL parameters); others get their own."""
    return name if perturbation else f"{name}_{threat}"


custom = st.session_state.get("preset") == "Custom"
left, right = st.columns(2)
with left:
    if custom and perturbation:
        # Custom starts from the preset's attack (the paper's I-FGSM), not from the first in the list
        st.session_state.setdefault("attack", defaults.attack)
        link_names("attack", ATTACKS.names(), ATTACKS.label)
        attack = st.selectbox("Attack", ATTACKS.names(), format_func=ATTACKS.label, key="attack", bind="query-params")
    else:  # what the preset (or the threat) uses, shown, not chosen
        attack = st.selectbox(
            "Attack",
            ATTACKS.names(),
            index=ATTACKS.names().index(defaults.attack),
            format_func=ATTACKS.label,
            key=f"attack_of_{threat}_{st.session_state.get('preset')}",
            disabled=True,
            help=f"{spec.label} is its own attack; this applies to the perturbation threat."
            if not perturbation
            else "Pick Custom in the sidebar to choose another attack.",
        )
    iterative = ATTACKS[attack].iterative or not perturbation
    eps = st.slider(
        "eps (L-inf, [0, 1] pixel scale; 8/255 = 0.031, 16/255 = 0.063)",
        *CUSTOM_KNOB_RANGES["eps"],
        float(defaults.eps),
        0.001,
        format="%.3f",
        key=key("eps"),
        bind="query-params",
        disabled=not custom,
    )
    alpha = st.slider(
        "alpha (step of the iterative attacks)",
        *CUSTOM_KNOB_RANGES["alpha"],
        float(defaults.alpha),
        0.0005,
        format="%.4f",
        key=key("alpha"),
        bind="query-params",
        disabled=not custom or not iterative,
    )
with right:
    steps = st.slider(
        "steps",
        *CUSTOM_KNOB_RANGES["steps"],
        int(defaults.steps),
        key=key("steps"),
        bind="query-params",
        disabled=not custom or not iterative,
    )
    fraction = st.slider(
        f"poison fraction of {spec.fraction_of}",
        *CUSTOM_KNOB_RANGES["fraction"],
        float(defaults.fraction),
        0.01,
        key=key("fraction"),
        bind="query-params",
        disabled=not custom,
    )
    seed = st.number_input(
        "seed",
        *CUSTOM_KNOB_RANGES["poison_seed"],
        int(defaults.seed),
        key="poison_seed",
        bind="query-params",
        disabled=not custom,
    )
# the threat's own parameters (and those of the threat it adapts: TAP's smooth scale for TAP through JPEG), and the
# perturbation's attack's, declared in their specs
knobs = knob_widgets(THREATS[spec.adapts], "poison", disabled=not custom) if spec.adapts else ()
knobs += knob_widgets(spec, "poison", disabled=not custom)
if perturbation:
    knobs += knob_widgets(ATTACKS[attack], "poison", disabled=not custom)
if not custom:
    knobs = ()
    st.info("Pick *Custom* in the sidebar to change these values; Paper and Quick use the threat's own settings.")
    attack, eps, alpha, steps, fraction, seed = (
        defaults.attack,
        defaults.eps,
        defaults.alpha,
        defaults.steps,
        defaults.fraction,
        defaults.seed,
    )
if iterative and alpha * steps < eps:
    st.warning(
        f"alpha x steps = {alpha * steps:.4f} is below eps = {eps}: the attack cannot reach the edge of the eps-ball."
    )
st.caption(
    f"eps {eps:.4g} is {eps * 255:.2f} grey levels; after rounding to 8 bits toward the original, "
    f"each pixel moves by at most {int(eps * 255 + 1e-6)} levels."
)
with guard("the measured damage"):
    grid = cached_defence_grid()
    damage_card(shipped_damage(grid, threat, eps, fraction) if grid else None)
with guard("the budget curves"):
    budget = cached_budget()
    curve = (budget or {}).get(threat)
    if curve:
        st.markdown(
            "**How much budget it needs** (`python -m core budget`, "
            f"preset `{curve['config']['experiment']['preset']}`, "
            f"{curve['n_test']:,} test images, one seed): clean test accuracy, undefended and behind "
            f"{' and '.join(DEFENCES[name].label for name in curve['config']['defences'])}."
        )
        measured, planned = budget_progress(curve)
        if measured < planned:
            st.caption(
                f"A partial curve: {measured} of {planned} points measured (the run stopped). The same command "
                "finishes it; measured points come from the model cache."
            )
        axes = [axis for axis, (key, _) in BUDGET_AXES.items() if curve["config"].get(key)]
        for column, axis in zip(st.columns(len(axes)), axes):
            points = curve[axis]
            if not points:  # a partial curve: an empty chart would only show a meaningless axis
                column.caption(f"Accuracy vs {axis.replace('_', ' ')}: not measured yet.")
                continue
            x = [point["eps"] * 255 if axis == "eps" else point[axis] for point in points]
            figure = go.Figure()
            lines = {"undefended": [point["undefended"] for point in points]}
            for name in curve["config"]["defences"]:
                lines[DEFENCES[name].label] = [point["defended"][name] for point in points]
            lines["clean reference"] = [point["clean_reference"] for point in points]
            for name, accuracies in lines.items():
                reference = dict(dash="dash", color="grey") if name == "clean reference" else None
                figure.add_trace(go.Scatter(x=x, y=accuracies, mode="lines+markers", name=name, line=reference))
            figure.update_layout(
                xaxis=dict(
                    title=BUDGET_AXES[axis][1](points[0]),
                    tickvals=x,
                    tickformat=".0%" if axis == "fraction" else ".0f",
                ),
                yaxis_title="clean accuracy",
                yaxis_tickformat=".0%",
                legend=dict(orientation="h", y=-0.35),
                height=340,
                margin=dict(t=20),
            )
            column.plotly_chart(figure, width="stretch", key=f"budget_{axis}")
        if "smooth_scale" in axes:
            st.caption(
                "Smooth scale: the same L-inf budget spent on a coarse grid of (32 / scale)² cells, bilinearly "
                "upsampled (a low-pass perturbation): the attacker's answer to the noise-residual detector, which "
                "stops finding it between scale 2 and 4 (docs/results.md, smoothness)."
            )

config = None
with guard("the poison settings"):
    config = PoisonConfig(
        threat=threat,
        attack=attack,
        eps=eps,
        alpha=alpha,
        steps=steps,
        fraction=fraction,
        seed=int(seed),
        knobs=knobs,
    )
    set_custom_poison(config)
run = None
with guard("loading the surrogate"):
    run = cached_run(run_dir())
    load_surrogate(run_dir())
if config is None or run is None:
    st.stop()

st.subheader("Preview")
classes = st.multiselect(
    "Classes",
    list(range(len(CLASS_NAMES))),
    default=[1, 14, 17, 25],
    format_func=lambda c: CLASS_NAMES[c],
    max_selections=8,
)
per_class = st.slider("samples per class", 1, 4, 2, key="per_class", bind="query-params")


with guard("the preview"):
    if classes:
        shown = poison_preview(run_dir(), tuple(classes), per_class, config)
        stats = shown["stats"]
        cols = st.columns(5)
        cols[0].metric(
            "L-inf", f"{stats['linf_levels']:.0f} levels", f"{stats['linf']:.4f}", delta_color="off", delta_arrow="off"
        )
        cols[1].metric("mean L2", f"{stats['l2']:.4f}")
        cols[2].metric("PSNR", f"{stats['psnr_db']:.1f} dB")
        cols[3].metric("surrogate acc. before", f"{shown['acc_before']:.0%}")
        cols[4].metric(
            "surrogate acc. after", f"{shown['acc_after']:.0%}", f"{shown['acc_after'] - shown['acc_before']:+.0%}"
        )
        for row in range(len(shown["clean"])):
            c1, c2, c3, c4 = st.columns([1, 1, 1, 3])
            c1.image(
                enlarged(shown["clean"][row]),
                caption="clean" if row == 0 else None,
                width="stretch",
                output_format="PNG",
            )
            c2.image(
                enlarged(shown["poisoned"][row]),
                caption="poisoned" if row == 0 else None,
                width="stretch",
                output_format="PNG",
            )
            c3.image(
                enlarged(shown["amplified"][row]),
                caption="perturbation (amplified)" if row == 0 else None,
                width="stretch",
                output_format="PNG",
            )
            c4.markdown(f"**{CLASS_NAMES[shown['labels'][row]]}**")
    else:
        st.caption("Pick at least one class.")

st.subheader("Apply to the training set")


# a callback, not the button's return value: the click is recorded before the rerun reaches the button
st.button("Apply", type="primary", key="apply_poison", on_click=lambda: st.session_state.update(applied_poison=config))
if "applied_poison" in st.session_state:
    with guard("poisoning the training set"):
        summary = applied_poison_summary(run_dir(), st.session_state["applied_poison"])
        st.success(
            f"{summary['poisoned']:,} of {summary['of']:,} training images replaced "
            f"({summary['actually changed']:,} differ after rounding)."
        )
        shown_summary = {
            "poisoned": f"{summary['poisoned']:,}",
            "of": f"{summary['of']:,}",
            "differ after rounding": f"{summary['actually changed']:,}",
            "largest change (grey levels)": f"{summary['linf_levels']:g}",
            "mean L2 per image ([0, 1] scale)": f"{summary['l2']:.3f}",
            "PSNR": f"{summary['psnr_db']:.1f} dB",
        }
        st.dataframe(pd.DataFrame([shown_summary]), width="stretch", hide_index=True)
        st.caption(
            "Run the whole pipeline on these settings from the Overview page "
            "(*Run the experiment* with the *Custom* preset)."
        )
