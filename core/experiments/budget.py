"""How much budget a strong poison needs: clean accuracy against eps and against the poisoned fraction.

For TAP or unlearnable noise: the poisons at each eps (on the threat's default fraction, all of train) and at each
fraction (at the threat's default eps, 8/255), a classifier trained on them undefended and one behind each defence
(by default the grid's two best: JPEG and grayscale), beside the clean reference. Step sizes scale with eps as the
defaults do (TAP 2.5 eps / steps, unlearnable eps / 5).
For a threat whose crafting has a smooth scale (TAP), optionally a third axis: the same budget (default eps, all of
train) spent on a coarser perturbation grid, the attacker's answer to the residual detector (core.experiments.smoothness
measures what it does to the detector; this axis, what it still does to the victim and whether JPEG / grayscale still
undo it). Every model is cached.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from core.defences import DEFENCES, DefenceConfig
from core.engine.registry import THREATS
from core.engine.storage import PROJECT_ROOT, ResultFile
from core.engine.train import machine
from core.experiments.defence_grid import defence_context, defended_model
from core.experiments.evaluate import accuracy
from core.experiments.pipeline import ExperimentConfig, ModelCache, prepare
from core.threats.poison import PoisonConfig, threat_knobs


def budget_threats() -> tuple[str, ...]:
    """The availability poisons whose budget the budget study measures: the threats whose spec scales a crafting step
    with eps (ThreatSpec.step_size: TAP and unlearnable noise)."""
    return tuple(spec.name for spec in THREATS.specs() if spec.step_size is not None)


# The two defences that restore most in the shipped defence grid (checkpoints/defences): grayscale against both
# threats, JPEG (quality 10, the shortcut-squeezing anchor) close behind against TAP.
BUDGET_DEFENCES = ("jpeg", "grayscale")


SMOOTH_SETTING = "tap.smooth_scale"  # the knob of the third axis (core/threats/tap.py: SMOOTH_SCALE)


def has_smooth_scale(threat: str) -> bool:
    """Whether the threat's crafting reads TAP's smooth scale (TAP and the TAPs crafted through a defence)."""
    return SMOOTH_SETTING in threat_knobs(threat)


def poison_at(
    base: PoisonConfig,
    threat: str,
    eps: float | None = None,
    fraction: float | None = None,
    steps: int | None = None,
    smooth_scale: int = 1,
) -> PoisonConfig:
    """The threat's defaults with eps, fraction, steps and / or smooth scale changed, the step size scaled with eps
    (and steps)."""
    poison = base.with_threat(threat).with_knobs({SMOOTH_SETTING: smooth_scale})
    poison = replace(poison, steps=poison.steps if steps is None else steps)
    eps = poison.eps if eps is None else eps
    step_size = THREATS[threat].step_size
    if step_size is None:
        raise ValueError(f"{threat} has no budget curve: choose one of {', '.join(budget_threats())}")
    alpha = step_size(eps, poison.steps)
    return replace(poison, eps=eps, alpha=alpha, fraction=poison.fraction if fraction is None else fraction)


def budget_curve(
    experiment: ExperimentConfig,
    threat: str,
    eps_values: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255, 16 / 255),
    fractions: tuple[float, ...] = (0.1, 0.5, 1.0),
    defences: tuple[str, ...] = BUDGET_DEFENCES,
    defence_config: DefenceConfig | None = None,
    steps: int | None = None,  # crafting steps; None: the threat's default
    smooth_scales: tuple[int, ...] = (),  # the third axis, for threats that have the knob (TAP); () measures none
    cache_dir="runs/cache",
    data_root=None,
    progress=None,
    on_point=None,  # called with the curve so far after each point
) -> dict:
    """{"config", "eps": [points], "fraction": [points], "smooth_scale": [points]}; a point holds eps, fraction,
    smooth scale and the clean test accuracies of the undefended and clean-reference classifiers, and "defended":
    {defence: accuracy}."""
    if threat not in budget_threats():
        raise ValueError(f"the budget curve is for {', '.join(budget_threats())}, got {threat!r}")
    unknown = [name for name in defences if name not in DEFENCES.names()]
    if unknown or not defences:
        raise ValueError(f"defences must be some of {', '.join(DEFENCES.names())}, got {', '.join(unknown) or 'none'}")
    if smooth_scales and not has_smooth_scale(threat):
        raise ValueError(f"{threat} has no smooth scale (its crafting is per pixel): measure smooth scales for tap")
    started = time.time()
    cache = ModelCache(cache_dir)
    report = progress or (lambda stage, done, total: None)
    defence_config = defence_config or DefenceConfig(seed=experiment.seed)
    settings = [("eps", poison_at(experiment.poison, threat, eps=eps, steps=steps)) for eps in eps_values]
    settings += [("fraction", poison_at(experiment.poison, threat, fraction=f, steps=steps)) for f in fractions]
    settings += [
        ("smooth_scale", poison_at(experiment.poison, threat, steps=steps, smooth_scale=scale))
        for scale in smooth_scales
    ]
    curves: dict[str, list] = {axis: [] for axis in BUDGET_AXES}
    n_test = None

    def result() -> dict:
        return {
            "config": {
                "experiment": experiment.to_dict(),
                "threat": threat,
                "defences": list(defences),
                "steps": steps,
                "eps_levels": list(eps_values),
                "fractions": list(fractions),
                "smooth_scales": list(smooth_scales),
            },
            **curves,
            "n_test": n_test,
            "seconds": round(time.time() - started, 1),
            "machine": machine(),
        }

    # the eps axis's 8/255 point is the fraction axis's 100% point and the smooth axis's scale 1: measured once
    measured: dict[PoisonConfig, dict] = {}
    for number, (axis, poison) in enumerate(settings):
        report(f"budget curve ({threat})", number, len(settings))
        if poison not in measured:
            config = replace(experiment, poison=replace(poison, seed=experiment.seed))
            prepared = prepare(config, cache, data_root, report)
            test = prepared.splits.test
            undefended, _ = prepared.classifier("undefended", prepared.poisoned.data, "undefended", prepared.poison_key)
            reference, _ = prepared.classifier(
                "clean_reference", prepared.splits.train, "clean_reference", prepared.data_key
            )
            context = defence_context(prepared, config, cache, report)
            defended = {name: defended_model(prepared, name, defence_config, context)[0] for name in defences}
            n_test = len(test)
            measured[poison] = {
                "eps": poison.eps,
                "fraction": poison.fraction,
                "smooth_scale": poison.knob("tap", "smooth_scale"),
                "undefended": accuracy(undefended, test.images, test.labels),
                "defended": {name: accuracy(model, test.images, test.labels) for name, model in defended.items()},
                "clean_reference": accuracy(reference, test.images, test.labels),
                "n_poisoned": prepared.poisoned.n_poisoned,
            }
        curves[axis].append(measured[poison])
        if on_point is not None:
            on_point(result())  # a stopped run keeps what it measured; the model cache makes a rerun cheap
    report(f"budget curve ({threat})", len(settings), len(settings))
    return result()


SHIPPED_BUDGET = PROJECT_ROOT / "checkpoints" / "budget" / "budget.json"


def _upgraded_budget(curves: dict) -> dict:
    """budget.json (threat -> curves) in today's shape: older files (one defence per point; no smooth-scale axis) are
    read into it, and every point's keys are checked."""
    for curve in curves.values():
        if "defence" in curve["config"]:  # a file from before several defences per point: one defence
            name = curve["config"].pop("defence")
            curve["config"]["defences"] = [name]
            for point in curve["eps"] + curve["fraction"]:
                point["defended"] = {name: point["defended"]}
        curve.setdefault("smooth_scale", [])  # a file from before the smooth-scale axis: per-pixel poisons
        curve["config"].setdefault("smooth_scales", [])
        for point in budget_points(curve):
            point.setdefault("smooth_scale", 1)
            [point[key] for key in ("eps", "fraction", "undefended", "clean_reference")]
            [point["defended"][name] for name in curve["config"]["defences"]]
    return curves


BUDGET_FILE = ResultFile("budget.json", "python -m core budget --out {folder}", upgrade=_upgraded_budget)


def load_budget(path: str | Path = SHIPPED_BUDGET) -> dict | None:
    """budget.json (threat -> curves), or None when there is none; a corrupt file raises CheckpointError."""
    return BUDGET_FILE.read(path)


# An axis of a budget curve: the config key listing its planned values, and the chart's x title given one of its
# points (each axis holds the others at the threat's defaults: the title says at what).
BUDGET_AXES = {
    "eps": ("eps_levels", lambda point: f"eps in grey levels (on {point['fraction']:.0%} of train)"),
    "fraction": ("fractions", lambda point: f"poisoned share (eps {point['eps'] * 255:.0f}/255)"),
    "smooth_scale": (
        "smooth_scales",
        lambda point: f"smooth scale: px per cell ({point['eps'] * 255:.0f}/255, {point['fraction']:.0%})",
    ),
}


def budget_points(curve: dict) -> list[dict]:
    """Every measured point of a curve, axis after axis (the shared default point once per axis)."""
    return [point for axis in BUDGET_AXES for point in curve.get(axis, [])]


def budget_progress(curve: dict) -> tuple[int, int]:
    """(points measured, points the run set out to measure); files from before the plan was stored count as done."""
    measured = len(budget_points(curve))
    planned = sum(len(curve["config"].get(key, curve.get(axis, []))) for axis, (key, _) in BUDGET_AXES.items())
    return measured, planned
