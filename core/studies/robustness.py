"""`python -m core robustness`: adaptive, transfer and eps-curve robustness of a finished run's models (stored in
its robustness.json; core/attacks/robust.py computes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.experiments.run import ROBUSTNESS_FILE, add_robustness
from core.reporting.report import format_robustness
from core.studies import STUDIES, DataOptions, ExecutorOptions, Stages, StudySpec, load_run, option


@dataclass(frozen=True)
class RobustnessOptions(ExecutorOptions):  # a cell per model
    run_dir: Path = option(None, "a run's output folder (holds results.json)", required=True)
    test_subset: float = option(0.08, "stratified share of the test set to attack")
    steps: int = option(10, "iterations of the iterative attacks")


def robustness_of(run, test_subset: float, steps: int, data: DataOptions, executor) -> dict:
    """Measure and store the run's robustness (core.experiments.run.add_robustness), with the command line's progress
    bars."""
    with Stages() as stages:
        return add_robustness(run, test_subset, steps, data.data_root, data.download, stages, executor)


def main(options: RobustnessOptions, data: DataOptions) -> int:
    run = load_run(options.run_dir)
    robust = robustness_of(run, options.test_subset, options.steps, data, options.executor_config())
    print(format_robustness(run, robust))
    return 0


STUDIES.register(
    StudySpec(
        "robustness",
        "adaptive, transfer and eps-curve robustness of a finished run's models",
        RobustnessOptions,
        main,
        writes=(ROBUSTNESS_FILE,),
    )
)
