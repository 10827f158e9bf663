"""`python -m core detectors`: score every registered poison detector on a finished run's training set (for the
app's Score selector; detectors.json and detector_scores.safetensors in the run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.experiments.compare import DETECTORS_FILE
from core.experiments.run import add_detectors
from core.studies import RUNS_DIR, STUDIES, DataOptions, Stages, StudySpec, knob_option, load_run, option


@dataclass(frozen=True)
class DetectorsOptions:
    run_dir: Path = option(None, "a run's output folder (holds results.json)", required=True)
    knobs: tuple = knob_option("detectors")  # the detectors' own knobs: --supervised-epochs 20, --knn-k 5, ...
    cache_dir: Path = option(RUNS_DIR / "cache", "trained-model cache")


def format_detectors(summary: dict) -> str:
    """One row per detector: ROC AUC, precision and recall at the run's drop share."""
    lines = [
        f"{'detector':<22}{'ROC AUC':>9}{'precision':>11}{'recall':>8}   "
        f"({summary['n_poisoned']} poisons in {summary['n_train']})"
    ]
    for name, quality in summary["detectors"].items():
        lines.append(f"{name:<22}{quality['auroc']:>9.3f}{quality['precision']:>11.3f}{quality['recall']:>8.3f}")
    return "\n".join(lines)


def main(options: DetectorsOptions, data: DataOptions) -> int:
    run = load_run(options.run_dir)
    with Stages() as stages:
        summary = add_detectors(run, options.knobs, options.cache_dir, data.data_root, data.download, stages)
    print(format_detectors(summary))
    print(f"detectors: {options.run_dir / 'detectors.json'}, scores in detector_scores.safetensors")
    return 0


STUDIES.register(
    StudySpec(
        "detectors",
        "score every poison detector on a finished run's training set (for the app)",
        DetectorsOptions,
        main,
        writes=(DETECTORS_FILE,),
    )
)
