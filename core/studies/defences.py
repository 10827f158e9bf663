"""`python -m core defences`: every threat case x every registered training-time defence, over seeds, resumable case
by case (core/experiments/defence_grid.py computes; defences.json in --out)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.defences import DefenceConfig  # its flag fields are this command's flags
from core.engine.registry import DEFENCES
from core.experiments.blind import BLIND_FILE
from core.experiments.defence_grid import (
    DEFENCE_GRID_FILE,
    DefenceGridConfig,
    defence_grid,
    finished_runs,
    format_defence_grid,
    grid_cases,
    load_defence_grid,
)
from core.experiments.pipeline import preset
from core.studies import (
    RUNS_DIR,
    STUDIES,
    DataOptions,
    ExecutorOptions,
    Stages,
    StudySpec,
    config_flags,
    config_values,
    knob_option,
    knobs_in,
    option,
)
from core.studies.run import PRESETS


def _case_names() -> tuple[str, ...]:
    return tuple(grid_cases())


@dataclass(frozen=True)
@config_flags(DefenceConfig)  # --detector; the defences' own settings (--sigma, --jpeg-quality, ...) are knobs
class DefencesOptions(ExecutorOptions):
    preset: str = option("compare", "the shipped grid used 'compare'", choices=PRESETS)
    cases: tuple[str, ...] | None = option(None, "threat cases (default: all)", choices=_case_names)
    defences: tuple[str, ...] | None = option(None, "defences to train behind (default: all)", choices=DEFENCES.names)
    seeds: int = option(1, "seeds 0..K-1, mean +- std over those that finish")
    robust_test_subset: float = option(0.3, "share of test attacked (worst case)")
    robust_steps: int = option(10, "iterations of the adaptive attacks")
    eot_samples: int = option(1, "passes averaged per attack step on a model with test-time noise (EOT; 1: none)")
    train_subset: float | None = option(None, "override the preset's share of the train split")
    test_subset: float | None = option(None, "override the preset's share of the test split")
    epochs: int | None = option(None, "override the preset's epochs for every classifier")
    dae_epochs: int | None = option(None, "override the preset's DAE epochs")
    defender_epochs: int | None = option(None, "override the preset's epochs of the defender's classifier")
    out: Path = option(RUNS_DIR / "defences", "folder for defences.json")
    fresh: bool = option(False, "recompute every case (default: keep those --out holds, same settings)")
    cache_dir: Path = option(RUNS_DIR / "cache", "trained-model cache")
    knobs: tuple = knob_option("threats", "attacks", "defences")  # the entries' own knobs: --cuda-blur 0.5, ...
    blind: Path | None = option(None, "a settings.json of `python -m core blind`: its chosen settings, frozen")

    def __post_init__(self):
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")

    def defence_knobs(self) -> tuple:
        """The defences' knobs: those of `--blind`'s file, then any given as flags (a flag wins)."""
        chosen = BLIND_FILE.read(self.blind, missing_ok=False)["knobs"] if self.blind else {}
        return tuple({**chosen, **dict(knobs_in(self.knobs, "defences"))}.items())

    def grid_config(self):
        experiment = preset(self.preset)
        names = ("train_subset", "test_subset", "defender_epochs")
        overrides = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.epochs is not None:
            overrides["classifier_train"] = replace(experiment.classifier_train, epochs=self.epochs)
        if self.dae_epochs is not None:
            overrides["dae"] = replace(experiment.dae, train=replace(experiment.dae.train, epochs=self.dae_epochs))
        poison_knobs = knobs_in(self.knobs, "threats", "attacks")
        overrides["poison"] = replace(experiment.poison, knobs=poison_knobs)
        return DefenceGridConfig(
            replace(experiment, **overrides),
            cases=tuple(self.cases or _case_names()),
            defences=tuple(self.defences or DEFENCES.names()),
            defence=DefenceConfig(**config_values(self, DefenceConfig), knobs=self.defence_knobs()),
            seeds=tuple(range(self.seeds)),
            robust_test_subset=self.robust_test_subset,
            robust_steps=self.robust_steps,
            eot_samples=self.eot_samples,
        )


def main(options: DefencesOptions, data: DataOptions) -> int:
    config = options.grid_config()
    out = options.out / "defences.json"
    previous = None if options.fresh else load_defence_grid(out)
    kept = finished_runs(config, previous)
    if kept:
        print(f"resuming {out}: keeping {sum(map(len, kept.values()))} finished case(s) with the same settings")
    with Stages() as stages:
        grid = defence_grid(
            config,
            options.cache_dir,
            data.data_root,
            stages,
            on_case=lambda partial: DEFENCE_GRID_FILE.write(out, partial),
            previous=previous,
            executor=options.executor_config(),
        )
    DEFENCE_GRID_FILE.write(out, grid)
    print(format_defence_grid(grid))
    print(f"\ndefence grid: {out}  ({grid['seconds']:.0f} s)")
    return 0


STUDIES.register(
    StudySpec(
        "defences",
        "every threat case x every training-time defence, over seeds (no distillation)",
        DefencesOptions,
        main,
        writes=(DEFENCE_GRID_FILE,),
    )
)
