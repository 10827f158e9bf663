"""Perturbation poisoning: replace a fraction of the training images by FGSM / I-FGSM copies.

The attacker crafts the perturbations on a surrogate classifier trained on clean data, keeps the
labels, and delivers ordinary image files: the poisons are quantised back to uint8, rounding each
pixel toward its original value so the L-inf bound still holds after rounding. (Float-valued poisons
would be spotted by their non-integral pixels, a loophole no detector may use.)

The ground-truth mask says which samples were poisoned. It is only ever used to *score* a defence.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.attacks import fgsm, ifgsm, pgd
from core.data import ImageSet

ATTACKS = ("fgsm", "ifgsm", "pgd")


@dataclass(frozen=True)
class PoisonConfig:
    attack: str = "ifgsm"
    eps: float = 0.01  # L-inf radius on the [0, 1] pixel scale (the paper's 0.01 is 2.55 grey levels)
    alpha: float = 0.01  # step size of I-FGSM / PGD
    steps: int = 10
    fraction: float = 0.1  # of the train split, replaced in place (the paper does not say; see README)
    seed: int = 0

    def __post_init__(self):
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {self.attack!r}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0 (pixel scale [0, 1]), got {self.eps}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"poison fraction must be in [0, 1], got {self.fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PoisonedSet:
    """The training set as the defender receives it, plus the ground truth for scoring only."""

    data: ImageSet  # poisoned images (uint8) with their original, unchanged labels
    poison_mask: torch.Tensor  # bool (N,): True where the image was replaced by a poison
    config: PoisonConfig

    @property
    def n_poisoned(self) -> int:
        return int(self.poison_mask.sum())


def choose_poison_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Exactly round(fraction * n) distinct indices, seeded."""
    count = int(round(fraction * n))
    generator = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n, generator=generator)[:count]).values


def quantise_toward(original: torch.Tensor, adversarial: torch.Tensor, eps: float) -> torch.Tensor:
    """Float adversarial images in [0, 1] -> uint8, each pixel rounded toward the original uint8 value.

    Truncating the perturbation toward zero never increases |x_adv - x|, so the eps-ball still holds.
    """
    delta = adversarial * 255.0 - original.float()
    # A float error of 1e-4 grey levels must not cost a whole level: snap near-integers first,
    # then cap at the largest whole number of levels inside the eps-ball.
    delta = torch.where((delta - delta.round()).abs() < 1e-3, delta.round(), delta)
    max_levels = float(int(eps * 255.0 + 1e-6))
    delta = torch.trunc(delta).clamp_(-max_levels, max_levels)
    return (original.float() + delta).clamp_(0, 255).to(torch.uint8)


def craft(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: PoisonConfig) -> torch.Tensor:
    """Adversarial float images in [0, 1] for uint8 images, per config (untargeted, true labels)."""
    x = images.float() / 255.0
    if config.attack == "fgsm":
        return fgsm(model, x, labels, config.eps)
    if config.attack == "ifgsm":
        return ifgsm(model, x, labels, config.eps, config.alpha, config.steps)
    return pgd(model, x, labels, config.eps, config.alpha, config.steps,
               generator=torch.Generator().manual_seed(config.seed))


def poison_training_set(train: ImageSet, surrogate: nn.Module, config: PoisonConfig,
                        progress=None, batch_size: int = 2048) -> PoisonedSet:
    """Replace round(fraction * N) chosen training images by quantised adversarial copies.

    progress(done, total), if given, is called after each batch of crafted poisons.
    """
    chosen = choose_poison_indices(len(train), config.fraction, config.seed)
    images = train.images.clone()
    for start in range(0, chosen.shape[0], batch_size):
        index = chosen[start: start + batch_size]
        adversarial = craft(surrogate, train.images[index], train.labels[index], config)
        images[index] = quantise_toward(train.images[index], adversarial, config.eps)
        if progress is not None:
            progress(min(start + batch_size, chosen.shape[0]), chosen.shape[0])
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[chosen] = True
    return PoisonedSet(ImageSet(images, train.labels.clone()), mask, config)
