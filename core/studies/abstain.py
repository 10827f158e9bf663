"""`python -m core abstain`: MC-dropout abstention of a finished run's student, its coverage and accuracy
(abstention.json in the run; core/detectors/abstain.py computes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.experiments.run import ABSTENTION_FILE, add_abstention
from core.reporting.report import format_abstention
from core.studies import STUDIES, DataOptions, StudySpec, load_run, option


@dataclass(frozen=True)
class AbstainOptions:
    run_dir: Path = option(None, "a run's output folder (holds results.json)", required=True)
    model: str = option("filter_distillation", "which of the run's models (default: the student)")
    passes: int = option(20, "MC-dropout forward passes per input")
    fpr: float = option(0.05, "share of trusted clean images the cut-off may reject")
    test_subset: float = option(0.15, "stratified share of the test set to evaluate")


def main(options: AbstainOptions, data: DataOptions) -> int:
    run = load_run(options.run_dir)
    report = add_abstention(
        run, options.model, options.passes, options.fpr, options.test_subset, data.data_root, data.download
    )

    print(format_abstention(options.model, report))
    print(f"abstention: {options.run_dir / 'abstention.json'}")
    return 0


STUDIES.register(
    StudySpec(
        "abstain",
        "MC-dropout abstention of a finished run's student: coverage and accuracy",
        AbstainOptions,
        main,
        writes=(ABSTENTION_FILE,),
    )
)
