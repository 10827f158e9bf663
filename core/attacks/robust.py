"""Robustness that gradient masking cannot fake.

A student distilled at T and evaluated at T = 1 has saturated softmax outputs: the cross-entropy
gradient of many inputs is exactly zero, so plain FGSM / I-FGSM barely move it (Carlini & Wagner
2016). Here each model also faces the same attacks on logits / T, with a margin (CW) loss, PGD with a
random start, and transfer attacks crafted on another model. An input counts as robust only if it
survives every attack (per-input worst case), which is the number we headline.

A model with random noise in its forward pass (a purifier that adds noise before denoising) hides its gradient
behind that noise: one pass gives the gradient of one draw. With eot_samples > 1 the white-box attacks follow the
mean logits of that many passes, expectation over transformation (Athalye, Carlini & Wagner 2018), while an input
still counts as correct by one pass, as it is deployed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.attacks import cross_entropy_loss, fgsm, ifgsm, margin_loss, pgd, scaled_logits, zero_gradient_fraction
from core.engine.data import ImageSet
from core.engine.train import predict

EPS_CURVE = (0.0, 1 / 255, 2 / 255, 0.01, 4 / 255, 6 / 255, 8 / 255)


@dataclass(frozen=True)
class RobustEvalConfig:
    eps: float = 0.01
    steps: int = 10
    step_ratio: float = 0.25  # alpha = step_ratio * eps for the iterative attacks (2.5 eps / steps)
    temperature: float = 5.0  # for the logits / T attack (the run's distillation T)
    eps_curve: tuple[float, ...] = EPS_CURVE
    seed: int = 0
    eot_samples: int = 1  # passes averaged per attack step on a stochastic model (1: no EOT)

    def __post_init__(self):
        if self.eps < 0 or self.steps < 1 or not self.step_ratio > 0 or not self.temperature > 0:
            raise ValueError("robust evaluation needs eps >= 0, steps >= 1, step_ratio > 0, temperature > 0")
        if any(eps < 0 for eps in self.eps_curve):
            raise ValueError("eps_curve values must be >= 0")
        if self.eot_samples < 1:
            raise ValueError(f"eot_samples must be >= 1, got {self.eot_samples}")

    def to_dict(self) -> dict:
        data = asdict(self)
        return data if self.eot_samples > 1 else {name: value for name, value in data.items() if name != "eot_samples"}


def is_stochastic(model: nn.Module) -> bool:
    """Whether some part of the model draws random numbers in its forward pass (declares `stochastic = True`)."""
    return any(getattr(module, "stochastic", False) for module in model.modules())


class ExpectationOverTransformation(nn.Module):
    """The mean logits of `samples` forward passes of a stochastic model: what an attacker who knows the noise
    differentiates (EOT, Athalye et al. 2018; the mean of logits rather than of losses, so every attack's own loss
    applies unchanged)."""

    def __init__(self, model: nn.Module, samples: int):
        super().__init__()
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.model, self.samples = model, samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(dim=0)


def attacked_model(model: nn.Module, eot_samples: int) -> nn.Module:
    """What the white-box attacks differentiate: the EOT of a stochastic model, the model itself otherwise."""
    return ExpectationOverTransformation(model, eot_samples) if eot_samples > 1 and is_stochastic(model) else model


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
    white_box = attacked_model(model, config.eot_samples)
    attacks = {
        "fgsm": lambda: fgsm(white_box, x, y, eps),
        "ifgsm": lambda: ifgsm(white_box, x, y, eps, alpha, steps),
        "fgsm_logits_t": lambda: fgsm(white_box, x, y, eps, loss=on_logits_t),
        "ifgsm_logits_t": lambda: ifgsm(white_box, x, y, eps, alpha, steps, loss=on_logits_t),
        "ifgsm_margin": lambda: ifgsm(white_box, x, y, eps, alpha, steps, loss=margin_loss),
        "pgd_margin": lambda: pgd(white_box, x, y, eps, alpha, steps, generator=generator, loss=margin_loss),
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
