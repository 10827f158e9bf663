"""Uncertainty and abstention: MC dropout on the student (the paper's "null" answer, made measurable).

With dropout switched on (batch norm stays in eval mode), N forward passes give N predictive
distributions p_1..p_N. The disagreement score is the expected KL divergence from their mean,
(1/N) sum_i KL(p_i || p_mean) (the mutual-information estimate of epistemic uncertainty). The model
abstains when the score exceeds a cut-off calibrated on trusted clean images at a chosen
false-positive rate, with alibi-detect's threshold semantics (`MCDropoutDetector` is a ScoreDetector).
Reported: coverage (share of inputs answered) and accuracy on the answered inputs, clean and adversarial,
and the whole coverage-accuracy curve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.detectors.detect import ScoreDetector
from core.engine.data import ImageSet
from core.engine.train import to_float_images


@dataclass(frozen=True)
class AbstainConfig:
    passes: int = 20  # MC-dropout forward passes per input
    fpr: float = 0.05  # share of trusted clean images the cut-off may reject
    seed: int = 0
    curve_points: int = 21

    def __post_init__(self):
        if self.passes < 2:
            raise ValueError(f"MC dropout needs at least 2 passes, got {self.passes}")
        if not 0 < self.fpr < 1:
            raise ValueError(f"abstention fpr must be in (0, 1), got {self.fpr}")
        if self.curve_points < 2:
            raise ValueError("curve_points must be >= 2")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def mc_dropout_probabilities(
    model: nn.Module, images: torch.Tensor, passes: int, seed: int = 0, batch_size: int = 1024
) -> torch.Tensor:
    """(passes, N, classes) softmax outputs with only the dropout layers in training mode. Seeded."""
    if not any(isinstance(module, nn.Dropout) for module in model.modules()):
        raise ValueError("MC dropout needs a model with dropout layers")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    outputs = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, images.shape[0], batch_size):
                x = to_float_images(images[start : start + batch_size].to(device))
                outputs.append(torch.stack([torch.softmax(model(x).float(), dim=1) for _ in range(passes)]).cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs, dim=1) if outputs else torch.empty(passes, 0, 0)


def expected_kl(probabilities: torch.Tensor) -> torch.Tensor:
    """(passes, N, C) -> (N,): mean over passes of KL(p_i || mean_i p_i); 0 when all passes agree."""
    mean = probabilities.mean(dim=0, keepdim=True)
    ratio = probabilities.clamp_min(1e-30).log() - mean.clamp_min(1e-30).log()
    return (
        torch.where(probabilities > 0, probabilities * ratio, torch.zeros_like(ratio))
        .sum(dim=2)
        .mean(dim=0)
        .clamp_min(0)
    )


class MCDropoutDetector(ScoreDetector):
    """Score = MC-dropout disagreement; `predict` says which inputs to abstain on."""

    def __init__(self, model: nn.Module, config: AbstainConfig, device=None):
        super().__init__(device=device)
        self.model, self.config = model, config

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return expected_kl(mc_dropout_probabilities(self.model, x, self.config.passes, self.config.seed))


def coverage_accuracy(scores: torch.Tensor, correct: torch.Tensor, cutoff: float) -> dict:
    """Answer the inputs scored <= cutoff: the share answered and the accuracy among them."""
    accepted = scores <= cutoff
    coverage = float(accepted.float().mean()) if scores.numel() else float("nan")
    accuracy = float(correct[accepted].float().mean()) if accepted.any() else float("nan")
    return {"coverage": coverage, "accuracy": accuracy}


def abstention_report(
    model: nn.Module, calibration: ImageSet, inputs: dict[str, ImageSet], config: AbstainConfig
) -> dict:
    """Calibrate the cut-off on trusted clean images at config.fpr, then for each named input set
    (e.g. clean test, I-FGSM test): coverage and accuracy at that cut-off, and the curve over cut-offs."""
    detector = MCDropoutDetector(model, config)
    detector.fit(calibration.images)
    detector.infer_threshold(calibration.images, config.fpr)
    cutoff = float(detector.threshold)
    scored = {}
    for name, data in inputs.items():
        probabilities = mc_dropout_probabilities(model, data.images, config.passes, config.seed)
        scores = expected_kl(probabilities)
        correct = probabilities.mean(dim=0).argmax(dim=1) == data.labels.cpu()
        scored[name] = (scores, correct)
    # One grid of cut-offs for every set: quantiles of all their scores pooled, plus "answer all".
    pooled = torch.cat([scores for scores, _ in scored.values()])
    grid = torch.quantile(pooled, torch.linspace(0, 1, config.curve_points)).tolist() if pooled.numel() else []
    report = {"config": config.to_dict(), "cutoff": cutoff, "n_calibration": len(calibration), "sets": {}}
    for name, (scores, correct) in scored.items():
        report["sets"][name] = {
            "n": int(scores.numel()),
            "accuracy_all": float(correct.float().mean()) if scores.numel() else float("nan"),
            "at_cutoff": coverage_accuracy(scores, correct, cutoff),
            "curve": [{"cutoff": value, **coverage_accuracy(scores, correct, value)} for value in grid],
        }
    return report
