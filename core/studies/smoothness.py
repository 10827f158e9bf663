"""`python -m core smoothness`: TAP's budget spent on a coarser grid against the residual detector: the detectors'
ROC AUC and the damage per scale (core/experiments/smoothness.py computes; smoothness.json in --out)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.experiments.pipeline import preset
from core.experiments.smoothness import SMOOTHNESS_FILE, smoothness_sweep
from core.reporting.report import format_smoothness
from core.studies import RUNS_DIR, STUDIES, DataOptions, Stages, StudySpec, option
from core.studies.run import PRESETS


@dataclass(frozen=True)
class SmoothnessOptions:
    preset: str = option("compare", "the experiment the poisons and victims follow", choices=PRESETS)
    scales: tuple[int, ...] = option((1, 2, 4, 8), "grid coarseness (1: per pixel)")
    fraction: float = option(0.5, "share of train poisoned (AUC needs clean ones)")
    train_subset: float | None = option(None, "override the preset's share of the train split")
    steps: int | None = option(None, "TAP steps (default: the threat's 40)")
    out: Path = option(RUNS_DIR / "smoothness", "folder for smoothness.json")
    cache_dir: Path = option(RUNS_DIR / "cache", "trained-model cache")


def main(options: SmoothnessOptions, data: DataOptions) -> int:
    experiment = preset(options.preset)
    if options.train_subset is not None:
        experiment = replace(experiment, train_subset=options.train_subset)
    with Stages() as stages:
        result = smoothness_sweep(
            experiment,
            tuple(options.scales),
            options.fraction,
            options.cache_dir,
            data.data_root,
            stages,
            steps=options.steps,
        )
    SMOOTHNESS_FILE.write(options.out / "smoothness.json", result)

    print(format_smoothness(result))
    print(f"smoothness: {options.out / 'smoothness.json'}  ({result['seconds']:.0f} s)")
    return 0


STUDIES.register(
    StudySpec(
        "smoothness",
        "TAP spent low-pass vs the residual detector: detector AUC and damage per scale",
        SmoothnessOptions,
        main,
        writes=(SMOOTHNESS_FILE,),
    )
)
