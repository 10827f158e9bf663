"""`python -m core sweep`: the student's accuracy against the share of the training set a filter drops (the run's
detector, random and oracle), over seeds, resumable point by point (core/experiments/sweep.py computes; sweep.json in
the run)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.engine.storage import CheckpointError
from core.experiments.live import point_estimate
from core.experiments.sweep import (
    FILTERS,
    SWEEP_FILE,
    SweepConfig,
    format_sweep,
    read_sweep_file,
    shares_around,
    sweep_run,
)
from core.studies import RUNS_DIR, STUDIES, DataOptions, ExecutorOptions, Stages, StudySpec, load_run, note, option


@dataclass(frozen=True)
class SweepOptions(ExecutorOptions):
    run_dir: Path = option(None, "a run's output folder (holds results.json)", required=True)
    steps: int | None = option(
        None, "optimiser steps per teacher and per student (default: the run's epochs on all of train)"
    )
    seeds: int = option(3, "repeats 0..K-1 of every point (mean and std)")
    filters: tuple[str, ...] = option(FILTERS, "curves to measure", choices=FILTERS)
    points: int = option(24, "drop shares evenly spread over 0..0.9 (ignored with --drop-shares)")
    drop_shares: tuple[float, ...] | None = option(None, "explicit shares of the training set to drop")
    refine: int = option(0, "also this many shares within +-10 points of the share the run's own threshold drops")
    test_subset: float = option(1.0, "share of the test set each student's clean accuracy is on")
    attack_test_subset: float = option(0.1, "share of that attacked with FGSM / I-FGSM")
    robust_test_subset: float = option(0.3, "share of the attacked set for the worst case")
    robust_steps: int = option(10, "iterations of the adaptive attacks")
    fresh: bool = option(False, "recompute every point (default: keep the file's)")
    batch_models: int = option(
        1, "train this many kept sets at once as one batched model (a GPU: 16; a CPU gains nothing)"
    )
    cache_dir: Path = option(RUNS_DIR / "cache", "trained-model cache")

    def __post_init__(self):
        if self.points < 2:
            raise ValueError(f"--points must be >= 2, got {self.points}")
        if not 0 <= self.refine <= 50:
            raise ValueError(f"--refine must be in 0..50, got {self.refine}")

    def sweep_config(self):
        shares = self.drop_shares or tuple(round(0.9 * index / (self.points - 1), 4) for index in range(self.points))
        return SweepConfig(
            drop_shares=tuple(shares),
            filters=tuple(self.filters),
            seeds=tuple(range(self.seeds)) if self.seeds >= 1 else (),
            steps=self.steps,
            test_subset=self.test_subset,
            attack_test_subset=self.attack_test_subset,
            robust_test_subset=self.robust_test_subset,
            robust_steps=self.robust_steps,
            batch_models=self.batch_models,
        )


def main(options: SweepOptions, data: DataOptions) -> int:
    run = load_run(options.run_dir)
    config = options.sweep_config()
    if options.refine:
        own_share = float((run.train_scores > run.threshold).float().mean())
        extra = shares_around(own_share, options.refine)
        config = replace(config, drop_shares=tuple(sorted(set(config.drop_shares) | set(extra))))
    out = options.run_dir / "sweep.json"
    previous = None if options.fresh else read_sweep_file(out)
    note(f"a point is estimated at {point_estimate(run, config):.0f} s here (the Threshold page's estimate)")

    def on_point(partial: dict) -> None:
        if not (options.run_dir / "results.json").exists():  # atomic writes would make the folder again, half
            raise CheckpointError(
                f"the run folder {options.run_dir} was removed while its sweep ran; nothing more is "
                "written (make the run again, then its sweep)"
            )
        SWEEP_FILE.write(out, partial)

    with Stages() as stages:
        sweep = sweep_run(
            run,
            config,
            data.data_root,
            data.download,
            progress=stages,
            on_point=on_point,
            previous=previous,
            executor=options.executor_config(),
        )
    SWEEP_FILE.write(out, sweep)
    print(format_sweep(sweep))
    print(f"sweep: {out}  ({sweep['seconds']:.0f} s)")
    return 0


STUDIES.register(
    StudySpec(
        "sweep",
        "student accuracy vs drop share for the run's detector, random and oracle filters, over seeds",
        SweepOptions,
        main,
        writes=(SWEEP_FILE,),
    )
)
