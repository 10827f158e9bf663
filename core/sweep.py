"""Threshold sweep: the distilled student's accuracy as a function of the reconstruction threshold.

For each threshold (chosen as quantiles of the training scores, so the dropped share is spread from
0 to 90%), drop the samples above it, train teacher and student at T on the rest, and measure the
student. The app reads this curve so that dragging the threshold shows an accuracy without training.
The sweep uses its own (shorter) epoch budget and a test subset; both are recorded with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from core.data import ImageSet
from core.distill import DistillConfig, soft_labels, train_classifier, train_student
from core.evaluate import filter_quality, robustness
from core.pipeline import ExperimentConfig, _seeded

DEFAULT_DROP_SHARES = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9)


@dataclass(frozen=True)
class SweepConfig:
    drop_shares: tuple[float, ...] = DEFAULT_DROP_SHARES
    epochs: int = 3
    test_subset: float = 0.15  # stratified share of the run's test set used to measure each student

    def __post_init__(self):
        if len(self.drop_shares) < 2 or not all(0 <= share < 1 for share in self.drop_shares):
            raise ValueError("drop_shares needs at least two values in [0, 1)")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 < self.test_subset <= 1:
            raise ValueError(f"test_subset must be in (0, 1], got {self.test_subset}")


def distil_at_threshold(
    train: ImageSet,
    scores: torch.Tensor,
    threshold: float,
    experiment: ExperimentConfig,
    epochs: int,
    temperature: float | None = None,
    progress=None,
    should_stop=None,
):
    """Drop training samples scored above threshold; teacher and student at T on the rest.

    Returns (teacher, student, kept mask). progress(stage, done, total) reports each training.
    """
    temperature = experiment.temperature if temperature is None else temperature
    kept_mask = scores <= threshold
    kept = train.subset(torch.nonzero(kept_mask).flatten())
    if len(kept) == 0:
        raise ValueError(
            f"threshold {threshold:.5f} drops every training sample: nothing is left to train on; raise it"
        )
    train_config = replace(_seeded(experiment.classifier_train, experiment.seed, "sweep"), epochs=epochs)
    distill_config = DistillConfig(temperature, experiment.classifier, train_config)
    report = (
        (lambda stage: lambda event: progress(stage, event.step, event.total_steps))
        if progress
        else (lambda stage: None)
    )
    teacher = train_classifier(
        kept, experiment.classifier, train_config, temperature, report("training teacher"), should_stop
    )
    student = train_student(
        kept.images,
        soft_labels(teacher, kept.images, temperature),
        distill_config,
        report("training student"),
        should_stop,
    )
    return teacher, student, kept_mask


def sweep_thresholds(
    train: ImageSet,
    scores: torch.Tensor,
    poison_mask: torch.Tensor,
    test: ImageSet,
    experiment: ExperimentConfig,
    config: SweepConfig,
    progress=None,
) -> dict:
    """Returns {"config": ..., "points": [{threshold, drop_share, filter quality..., clean_acc, fgsm_acc, ifgsm_acc}]}.

    train: the training set as delivered (poisons included); scores: the detector's score of each of its images;
    test: the images each student is measured on."""
    report = progress or (lambda stage, done, total: None)
    points = []
    for number, share in enumerate(sorted(config.drop_shares)):
        report("threshold sweep", number, len(config.drop_shares))
        threshold = (
            float(torch.quantile(scores, 1 - share, interpolation="higher")) if share > 0 else float(scores.max())
        )
        _, student, kept_mask = distil_at_threshold(train, scores, threshold, experiment, config.epochs)
        dropped = ~kept_mask
        points.append(
            {
                "threshold": threshold,
                "drop_share": float(dropped.float().mean()),
                **filter_quality(scores, dropped, poison_mask, threshold),
                **robustness(student, test, experiment.eval_attack),
            }
        )
    report("threshold sweep", len(config.drop_shares), len(config.drop_shares))
    return {
        "config": {**asdict(config), "n_test": len(test), "eval_attack": asdict(experiment.eval_attack)},
        "points": points,
    }


def sweep_run(run, config: SweepConfig, data_root=None, download: bool = False, progress=None) -> dict:
    """The sweep of a finished run, on its stored poisons and scores (nothing of the run is retrained)."""
    from core import explore
    from core.data import load_splits

    c = run.config
    splits = load_splits(data_root, c.trusted_fraction, c.seed, c.train_subset, c.test_subset, download)
    poisoned = run.poisons(splits.train)
    test = explore.student_test_subset(run, splits.test, config.test_subset)
    return sweep_thresholds(poisoned.data, run.train_scores, run.poison_mask, test, c, config, progress)


def accuracy_at(sweep: dict, threshold: float) -> dict:
    """Student accuracies at a threshold, linearly interpolated between the sweep's points."""
    points = sorted(sweep["points"], key=lambda point: point["threshold"])
    keys = ("clean_acc", "fgsm_acc", "ifgsm_acc")
    if threshold <= points[0]["threshold"]:
        return {key: points[0][key] for key in keys}
    if threshold >= points[-1]["threshold"]:
        return {key: points[-1][key] for key in keys}
    for low, high in zip(points, points[1:]):
        if low["threshold"] <= threshold <= high["threshold"]:
            weight = (threshold - low["threshold"]) / max(high["threshold"] - low["threshold"], 1e-12)
            return {key: low[key] + weight * (high[key] - low[key]) for key in keys}
    raise AssertionError("unreachable")
