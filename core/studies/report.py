"""`python -m core report`: the numbers README states about a run (and a comparison, defence grid or budget curves),
computed from their files with standard errors (core/reporting/report.py computes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.engine.storage import CheckpointError
from core.experiments.budget import load_budget
from core.experiments.compare import load_comparison
from core.experiments.defence_grid import load_defence_grid, merge_grids
from core.reporting.report import (
    defence_grid_markdown,
    report_budget,
    report_comparison,
    report_defence_grid,
    report_defence_ranking,
    report_points,
    report_run,
    report_sweep,
)
from core.studies import STUDIES, DataOptions, StudySpec, load_run, option


@dataclass(frozen=True)
class ReportOptions:
    run_dir: Path = option(None, "a run's output folder (holds results.json)", required=True)
    comparison: Path | None = option(None, "a compare.json to report on as well")
    defences: tuple[Path, ...] | None = option(
        None, "defences.json files (python -m core defences) to report on as well, merged into one table"
    )
    budget: Path | None = option(None, "a budget.json (python -m core budget) to report on as well")


def main(options: ReportOptions, data: DataOptions) -> int:

    # Every file named is read before the (slow) run report, so a wrong path fails at once.
    comparison = load_comparison(options.comparison) if options.comparison else None
    grids = []
    for path in options.defences or ():
        grids.append(load_defence_grid(path))
        if grids[-1] is None:
            raise CheckpointError(f"no defence grid at {path}: run `python -m core defences` first")
    grid = merge_grids(grids)
    curves = load_budget(options.budget) if options.budget else None
    if options.budget and curves is None:
        raise CheckpointError(f"no budget curves at {options.budget}: run `python -m core budget` first")
    run = load_run(options.run_dir)
    print(report_run(run))
    if run.sweep:
        print("\nThreshold sweep:\n" + report_sweep(run))
    if run.points:
        print("\nPoints trained at one threshold (points.json):\n" + report_points(run))
    if comparison is not None:
        print(report_comparison(comparison))
    if grid is not None:
        print(report_defence_grid(grid))
        print("\nEvery defence ranked by its worst case over every poison:\n" + report_defence_ranking(grid))
        print("\nREADME's table:\n" + defence_grid_markdown(grid))
    if curves is not None:
        print(report_budget(curves))
    return 0


STUDIES.register(
    StudySpec(
        "report",
        "the numbers README states about a run, computed from its files (with standard errors)",
        ReportOptions,
        main,
    )
)
