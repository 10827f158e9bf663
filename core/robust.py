"""Robustness that gradient masking cannot fake.

A student distilled at T and evaluated at T = 1 has saturated softmax outputs: the cross-entropy
gradient of many inputs is exactly zero, so plain FGSM / I-FGSM barely move it (Carlini & Wagner
2016). Here each model also faces the same attacks on logits / T, with a margin (CW) loss, PGD with a
random start, and transfer attacks crafted on another model. An input counts as robust only if it
survives every attack (per-input worst case), which is the number we headline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.attacks import cross_entropy_loss, fgsm, ifgsm, margin_loss, pgd, scaled_logits, zero_gradient_fraction
from core.data import ImageSet
from core.train import predict

EPS_CURVE = (0.0, 1 / 255, 2 / 255, 0.01, 4 / 255, 6 / 255, 8 / 255)


@dataclass(frozen=True)
class RobustEvalConfig:
    eps: float = 0.01
    steps: int = 10
    step_ratio: float = 0.25  # alpha = step_ratio * eps for the iterative attacks (2.5 eps / steps)
    temperature: float = 5.0  # for the logits / T attack (the run's distillation T)
    eps_curve: tuple[float, ...] = EPS_CURVE
    seed: int = 0

    def __post_init__(self):
        if self.eps < 0 or self.steps < 1 or not self.step_ratio > 0 or not self.temperature > 0:
            raise ValueError("robust evaluation needs eps >= 0, steps >= 1, step_ratio > 0, temperature > 0")
        if any(eps < 0 for eps in self.eps_curve):
            raise ValueError("eps_curve values must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return predict(model, x).argmax(dim=1) == y.cpu()


def attack_suite(
    model: nn.Module, test: ImageSet, eps: float, config: RobustEvalConfig, transfer_from: nn.Module | None = None
) -> dict:
    """Accuracy under each attack at eps, and the per-input worst case over all of them."""
    x, y = test.images.float() / 255, test.labels
    alpha, steps = config.step_ratio * eps, config.steps
    on_logits_t = scaled_logits(cross_entropy_loss, config.temperature)
    generator = torch.Generator().manual_seed(config.seed)
    attacks = {
        "fgsm": lambda: fgsm(model, x, y, eps),
        "ifgsm": lambda: ifgsm(model, x, y, eps, alpha, steps),
        "fgsm_logits_t": lambda: fgsm(model, x, y, eps, loss=on_logits_t),
        "ifgsm_logits_t": lambda: ifgsm(model, x, y, eps, alpha, steps, loss=on_logits_t),
        "ifgsm_margin": lambda: ifgsm(model, x, y, eps, alpha, steps, loss=margin_loss),
        "pgd_margin": lambda: pgd(model, x, y, eps, alpha, steps, generator=generator, loss=margin_loss),
    }
    if transfer_from is not None:
        attacks["transfer_ifgsm"] = lambda: ifgsm(transfer_from, x, y, eps, alpha, steps)
    survived = _correct(model, x, y)
    accuracies = {"clean": float(survived.float().mean())}
    for name, run in attacks.items():
        correct = _correct(model, run(), y)
        accuracies[name] = float(correct.float().mean())
        survived &= correct
    accuracies["worst_case"] = float(survived.float().mean())
    return accuracies


def robust_report(
    model: nn.Module,
    test: ImageSet,
    config: RobustEvalConfig,
    transfer_from: nn.Module | None = None,
    progress=None,
    stage: str = "robustness",
) -> dict:
    """adaptive_acc (worst case at config.eps), per-attack accuracies, zero_grad_fraction, and eps_curve.

    progress(stage, done, total), if given, is called once per point of the eps curve."""
    at_eps = attack_suite(model, test, config.eps, config, transfer_from)
    x, y = test.images.float() / 255, test.labels
    curve = []
    for number, eps in enumerate(config.eps_curve):
        if progress is not None:
            progress(stage, number, len(config.eps_curve))
        result = attack_suite(model, test, eps, config, transfer_from) if eps > 0 else {"worst_case": at_eps["clean"]}
        curve.append({"eps": eps, "robust_acc": result["worst_case"]})
    return {
        "adaptive_acc": at_eps["worst_case"],
        "attacks": at_eps,
        "zero_grad_fraction": zero_gradient_fraction(model, x, y),
        "eps_curve": curve,
    }
