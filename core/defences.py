"""Training-time defences: what the defender does to the (poisoned) training set before its classifier trains.

Each entry of core.registry.DEFENCES turns the training set into the one the classifier learns from (filter,
purify, JPEG, grayscale) or changes how it learns (adversarial training). Anchors, CIFAR-10 / ResNet-18 at eps 8/255:
JPEG quality 10 restores TAP to 83.9% and error-minimising noise to 81.5%; grayscale restores error-minimising
noise (93.0%) but not TAP (9.1%) (Liu et al. 2023, image shortcut squeezing). Purification adds noise larger than
eps and reconstructs with a denoiser trained on a small clean set (D-VAE 2024, ECLIPSE 2024): here the paper's DAE.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import rgb_to_grayscale

from core.attacks import pgd
from core.data import ImageSet
from core.registry import DEFENCES, DETECTORS, DefenceSpec
from core.train import predict, to_float_images


@dataclass(frozen=True)
class DefenceConfig:
    detector: str = "dae"  # filter: which detector's scores decide (thresholded as the run's ThresholdConfig says)
    sigma: float = 0.1  # purify: std of the Gaussian noise added before the DAE reconstructs ([0, 1] pixel scale)
    jpeg_quality: int = 10  # jpeg: PIL quality 1..95 (the anchor's 10)
    adversarial_eps: float = 8 / 255  # adversarial training: L-inf radius of the PGD examples trained on
    adversarial_steps: int = 3  # PGD steps per batch (step 2.5 * eps / steps, random start); training costs steps + 1x
    seed: int = 0

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}: choose one of {', '.join(DETECTORS.names())}")
        if not 0 <= self.sigma <= 1:
            raise ValueError(f"sigma must be in [0, 1] (noise std on the [0, 1] pixel scale), got {self.sigma}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in 1..95, got {self.jpeg_quality}")
        if not 0 < self.adversarial_eps <= 1 or not 1 <= self.adversarial_steps <= 100:
            raise ValueError("adversarial_eps must be in (0, 1] and adversarial_steps in 1..100")

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self, defence: str) -> dict:
        """The fields this defence reads: what keys a model trained behind it."""
        return {"defence": defence, **{name: getattr(self, name) for name in DEFENCES[defence].params}}


@dataclass
class DefenceContext:
    """What the defender has: its DAE, and the drop decision of any detector on the training set."""

    autoencoder: nn.Module
    drop_mask: Callable[[str], torch.Tensor]  # detector name -> bool per training image (True: dropped)


# ---- the operations ---------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded to the nearest grey level."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def purify(
    autoencoder: nn.Module, images: torch.Tensor, sigma: float, seed: int, batch_size: int = 1024
) -> torch.Tensor:
    """DAE(x + sigma * N(0, 1)) as uint8: noise larger than the poison's eps drowns it, the DAE removes both."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = to_float_images(images[start : start + batch_size].cpu())
        if sigma > 0:
            x = (x + sigma * torch.randn(x.shape, generator=generator)).clamp_(0, 1)
        out.append(to_uint8(predict(autoencoder, x, batch_size)))
    return torch.cat(out) if out else images.clone()


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each uint8 image through a PIL JPEG encode / decode at `quality`."""
    out = torch.empty_like(images)
    for index, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        out[index] = torch.from_numpy(np.asarray(Image.open(buffer).convert("RGB")).copy()).permute(2, 0, 1)
    return out


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """torchvision's rgb_to_grayscale, copied to the three channels the classifier takes (uint8 in, uint8 out)."""
    return rgb_to_grayscale(images, num_output_channels=3)


class GrayscaleInput(nn.Module):
    """Grayscale as the model's first layer at test time (differentiable, so adaptive attacks see through it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rgb_to_grayscale(x, num_output_channels=3)


def adversary(config: DefenceConfig):
    """PGD at adversarial_eps against the model being trained (Madry et al.): the accepted baseline."""
    eps, steps = config.adversarial_eps, config.adversarial_steps
    generator = torch.Generator().manual_seed(config.seed)

    def attack(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, labels, eps, 2.5 * eps / steps, steps, generator=generator)

    return attack


# ---- the registry -------------------------------------------------------------------------------


def _filtered(train: ImageSet, context: DefenceContext, config: DefenceConfig) -> ImageSet:
    return train.subset(torch.nonzero(~context.drop_mask(config.detector)).flatten())


def _purified(train: ImageSet, context: DefenceContext, config: DefenceConfig) -> ImageSet:
    return ImageSet(purify(context.autoencoder, train.images, config.sigma, config.seed), train.labels)


DEFENCES.register(
    DefenceSpec(
        "filter",
        "Filter: drop images a detector flags (the paper's, with the DAE)",
        "Drops every training image the chosen detector scores above the run's threshold.",
        _filtered,
        params=("detector",),
    )
)
DEFENCES.register(
    DefenceSpec(
        "purify",
        "Purify: train on DAE(x + noise)",
        "Replaces every training image by the DAE's reconstruction of it with Gaussian noise of std sigma added "
        "(sigma 0: plain reconstruction).",
        _purified,
        params=("sigma", "seed"),
    )
)
DEFENCES.register(
    DefenceSpec(
        "filter_purify",
        "Filter, then purify what is left",
        "Drops what the detector flags, then replaces the rest by DAE(x + noise).",
        lambda train, context, config: _purified(_filtered(train, context, config), context, config),
        params=("detector", "sigma", "seed"),
    )
)
DEFENCES.register(
    DefenceSpec(
        "jpeg",
        "JPEG compression",
        "Re-encodes every training image as JPEG at the given quality (image shortcut squeezing).",
        lambda train, context, config: ImageSet(jpeg(train.images, config.jpeg_quality), train.labels),
        params=("jpeg_quality",),
    )
)
DEFENCES.register(
    DefenceSpec(
        "grayscale",
        "Grayscale",
        "Trains and tests on grayscale copies of the images (image shortcut squeezing).",
        lambda train, context, config: ImageSet(grayscale(train.images), train.labels),
        test_input=lambda config: GrayscaleInput(),
    )
)
DEFENCES.register(
    DefenceSpec(
        "adversarial_training",
        "Adversarial training (PGD)",
        "Trains on PGD adversarial examples of the classifier itself at adversarial_eps, made fresh every batch.",
        lambda train, context, config: train,
        params=("adversarial_eps", "adversarial_steps", "seed"),
        adversary=adversary,
    )
)
