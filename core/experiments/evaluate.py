"""Measurements: clean and adversarial accuracy of a classifier, and the quality of a poison filter."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from core.attacks import fgsm, ifgsm
from core.engine.data import ImageSet, stratified_split
from core.engine.recipe import sampling_seed
from core.engine.train import predict


@dataclass(frozen=True)
class AttackEvalConfig:
    """Test-time white-box attacks, crafted on the evaluated model (the paper's settings by default)."""

    eps: float = 0.01
    alpha: float = 0.01
    steps: int = 10
    # Stratified share of the test set the attacks run on (clean accuracy is always on all of it). An I-FGSM of 10
    # steps costs 11 input gradients per image: on the paper preset's 12,630 test images, 5 models, about 16 min of
    # 2 CPU cores. Left out of to_dict at 1.0, so the configs of runs made before it keep their keys.
    test_subset: float = 1.0

    def __post_init__(self):
        if not self.eps >= 0 or not self.alpha >= 0 or self.steps < 1:
            raise ValueError(
                f"eval attack needs eps >= 0, alpha >= 0, steps >= 1; got {self.eps}, {self.alpha}, {self.steps}"
            )
        if not 0 < self.test_subset <= 1:
            raise ValueError(f"the attacked test share must be in (0, 1], got {self.test_subset}")

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["test_subset"] == 1.0:
            del data["test_subset"]
        return data


def attack_test_index(labels: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """Indices of the stratified share of a test set that the attacks run on (all of it at share 1), drawn with
    the run's "attack_test" sampling seed: the run's evaluation and its sweep attack the same images."""
    if share >= 1:
        return torch.arange(len(labels))
    return stratified_split(labels, share, sampling_seed(seed, "attack_test"))[1]


def robust_test_set(test, share: float, seed: int):
    """The stratified share of a test set (an ImageSet) that the adaptive attacks run on, drawn with the run's
    "robust_test" sampling seed: the same images for every model of a run, its sweep, comparison and defence grid."""
    if not 0 < share <= 1:
        raise ValueError(f"test-subset must be in (0, 1], got {share}")
    return test.subset(stratified_split(test.labels, share, sampling_seed(seed, "robust_test"))[1])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    if images.shape[0] == 0:
        return float("nan")
    return float((predict(model, images).argmax(dim=1) == labels.cpu()).float().mean())


def correct_per_image(
    model: nn.Module, test: ImageSet, config: AttackEvalConfig, attack_index: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """{"clean_acc": bool (N,), "fgsm_acc", "ifgsm_acc": bool (len(attack_index),)}: whether the model is right on
    each test image, clean, and on the images attack_index names (default: all) under white-box FGSM / I-FGSM
    crafted on it. Stored with a run so `verify` can recompute any sample."""
    x = test.images.float() / 255.0
    attacked = x if attack_index is None else x[attack_index]
    labels = test.labels if attack_index is None else test.labels[attack_index]

    def correct(images: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        return predict(model, images).argmax(dim=1) == truth.cpu()

    return {
        "clean_acc": correct(x, test.labels),
        "fgsm_acc": correct(fgsm(model, attacked, labels, config.eps), labels),
        "ifgsm_acc": correct(ifgsm(model, attacked, labels, config.eps, config.alpha, config.steps), labels),
    }


def robustness(model: nn.Module, test: ImageSet, config: AttackEvalConfig) -> dict:
    """clean_acc, fgsm_acc and ifgsm_acc (fractions in [0, 1]) with white-box attacks on model."""
    return {
        key: float(correct.float().mean()) if correct.numel() else float("nan")
        for key, correct in correct_per_image(model, test, config).items()
    }


def filter_quality(scores: torch.Tensor, dropped: torch.Tensor, poison_mask: torch.Tensor, threshold: float) -> dict:
    """Score a filter against the ground truth: the 2x2 counts, precision / recall / F1 of dropping
    poisons, and the ROC AUC of the score (0.5 = no better than chance)."""
    dropped, poison_mask = dropped.bool().cpu(), poison_mask.bool().cpu()
    kept = ~dropped
    counts = {
        "kept_clean": int((kept & ~poison_mask).sum()),
        "kept_poisoned": int((kept & poison_mask).sum()),
        "dropped_clean": int((dropped & ~poison_mask).sum()),
        "dropped_poisoned": int((dropped & poison_mask).sum()),
    }
    true_positive = counts["dropped_poisoned"]
    precision = true_positive / max(int(dropped.sum()), 1) if dropped.any() else 0.0
    recall = true_positive / int(poison_mask.sum()) if poison_mask.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    has_both = bool(poison_mask.any()) and bool((~poison_mask).any())
    auroc = float(roc_auc_score(poison_mask.numpy(), scores.cpu().numpy())) if has_both else float("nan")
    return {"threshold": float(threshold), "auroc": auroc, "precision": precision, "recall": recall, "f1": f1, **counts}
