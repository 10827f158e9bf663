"""`python -m core compare`: every registered poison detector against the no-filter, random and oracle controls, per
threat model, over seeds; resumable cell by cell (core/experiments/compare.py computes; compare.json in --out)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.detectors.detect import CONTROLS, ThresholdConfig
from core.engine.registry import DETECTORS, THREATS
from core.experiments.compare import (
    COMPARISON_FILE,
    DEFAULT_THREATS,
    CompareConfig,
    compare,
    finished_comparisons,
    format_comparison,
    load_comparison,
)
from core.experiments.pipeline import preset
from core.studies import (
    RUNS_DIR,
    STUDIES,
    DataOptions,
    ExecutorOptions,
    Stages,
    StudySpec,
    knob_option,
    knobs_in,
    option,
)
from core.studies.run import PRESETS


@dataclass(frozen=True)
class CompareOptions(ExecutorOptions):
    preset: str = option("compare", "the shipped comparison used 'compare'", choices=PRESETS)
    threats: tuple[str, ...] = option(DEFAULT_THREATS, "threat models", choices=THREATS.names)
    detectors: tuple[str, ...] | None = option(None, "detectors to score (default: all)", choices=DETECTORS.names)
    distil: tuple[str, ...] | None = option(
        None, "filters that also get a distilled student (default: the controls, dae and supervised)"
    )
    seeds: int = option(1, "run everything for seeds 0..K-1 and report mean +- std")
    expected_poison: float | None = option(None, "share of the train set every detector drops (default 0.1)")
    robust_test_subset: float = option(0.3, "share of the test set attacked for the adaptive worst case")
    out: Path = option(RUNS_DIR / "compare", "folder for compare.json")
    cache_dir: Path = option(RUNS_DIR / "cache", "trained-model cache")
    fresh: bool = option(False, "ignore an existing compare.json in --out instead of resuming from it")
    knobs: tuple = knob_option("threats", "attacks", "detectors")  # the entries' own knobs: --cuda-blur 0.5, ...

    def __post_init__(self):
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")

    def compare_config(self):
        experiment = preset(self.preset)
        if self.expected_poison is not None:
            threshold = ThresholdConfig(mode="expected_poison", expected_poison=self.expected_poison)
            experiment = replace(experiment, threshold=threshold)
        poison_knobs = knobs_in(self.knobs, "threats", "attacks")
        experiment = replace(experiment, poison=replace(experiment.poison, knobs=poison_knobs))
        detectors = tuple(self.detectors or DETECTORS.names())
        default_distil = [name for name in CONTROLS + ("dae", "supervised") if name in CONTROLS + detectors]
        return CompareConfig(
            experiment,
            threats=tuple(self.threats),
            detectors=detectors,
            distil=tuple(self.distil or default_distil),
            seeds=tuple(range(self.seeds)),
            robust_test_subset=self.robust_test_subset,
            knobs=knobs_in(self.knobs, "detectors"),
        )


def main(options: CompareOptions, data: DataOptions) -> int:
    config = options.compare_config()
    out = options.out / "compare.json"
    previous = None if options.fresh or not out.exists() else load_comparison(out)
    kept = finished_comparisons(config, previous)
    if any(kept.values()):
        print(f"resuming {out}: keeping {sum(map(len, kept.values()))} finished cell(s) with the same settings")
    with Stages() as stages:
        comparison = compare(
            config,
            options.cache_dir,
            data.data_root,
            progress=stages,
            executor=options.executor_config(),
            previous=previous,
            on_cell=lambda partial: COMPARISON_FILE.write(out, partial),
        )
    COMPARISON_FILE.write(out, comparison)
    print(format_comparison(comparison))
    print(f"\ncomparison: {out}  ({comparison['seconds']:.0f} s)")
    return 0


STUDIES.register(
    StudySpec(
        "compare",
        "poison detectors vs random / oracle / no-filter controls, per threat model, over seeds",
        CompareOptions,
        main,
        writes=(COMPARISON_FILE,),
    )
)
