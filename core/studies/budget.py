"""`python -m core budget`: TAP / unlearnable clean accuracy against eps, the poisoned share and (TAP) the smooth
scale, undefended and behind defences; written after every point (core/experiments/budget.py computes; budget.json in
--out)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.engine.registry import DEFENCES
from core.experiments.budget import BUDGET_DEFENCES, BUDGET_FILE, budget_curve, budget_threats, has_smooth_scale
from core.experiments.pipeline import preset
from core.reporting.report import report_budget
from core.studies import RUNS_DIR, STUDIES, DataOptions, Stages, StudySpec, option
from core.studies.run import PRESETS
from core.threats.tap import SMOOTH_SCALE


@dataclass(frozen=True)
class BudgetOptions:
    preset: str = option("compare", "the experiment the poisons and victims follow", choices=PRESETS)
    threats: tuple[str, ...] = option(("tap", "unlearnable"), "the poisons measured", choices=budget_threats)
    eps_levels: tuple[float, ...] = option((2, 4, 8, 16), "eps in grey levels (/255)")
    fractions: tuple[float, ...] = option((0.1, 0.5, 1.0), "shares of train poisoned")
    defences: tuple[str, ...] = option(BUDGET_DEFENCES, "beside undefended", choices=DEFENCES.names)
    train_subset: float | None = option(None, "override the preset's share of the train split")
    steps: int | None = option(None, "crafting steps (default: each threat's own; step size follows)")
    smooth_scales: tuple[int, ...] = option(
        (),
        "also measure the poison spent on a coarser grid (pixels per cell; default eps, all of train): TAP only",
        choices=SMOOTH_SCALE.choices,
    )
    out: Path = option(RUNS_DIR / "budget", "folder for budget.json")
    cache_dir: Path = option(RUNS_DIR / "cache", "trained-model cache")


def main(options: BudgetOptions, data: DataOptions) -> int:
    experiment = preset(options.preset)
    if options.train_subset is not None:
        experiment = replace(experiment, train_subset=options.train_subset)
    out = options.out / "budget.json"
    curves = {}
    with Stages() as stages:
        for threat in options.threats:
            smooth_scales = tuple(options.smooth_scales) if has_smooth_scale(threat) else ()
            if options.smooth_scales and not smooth_scales:
                print(f"{threat}: no smooth-scale axis (its crafting is per pixel; only TAP's has the knob)")
            curves[threat] = budget_curve(
                experiment,
                threat,
                tuple(level / 255 for level in options.eps_levels),
                tuple(options.fractions),
                tuple(options.defences),
                steps=options.steps,
                smooth_scales=smooth_scales,
                cache_dir=options.cache_dir,
                data_root=data.data_root,
                progress=stages,
                on_point=lambda partial, threat=threat: BUDGET_FILE.write(out, {**curves, threat: partial}),
            )
            BUDGET_FILE.write(out, curves)
    print(report_budget(curves))
    print(f"\nbudget curves: {out}")
    return 0


STUDIES.register(
    StudySpec(
        "budget",
        "TAP / unlearnable: clean accuracy vs eps and vs poisoned fraction, undefended and defended",
        BudgetOptions,
        main,
        writes=(BUDGET_FILE,),
    )
)
