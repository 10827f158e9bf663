"""ECLIPSE's compensation as a defence on its own: random grayscale plus Gaussian noise on every training batch.

ECLIPSE (Wang et al., 2024, "Expelling availability poisons through sparse diffusion purification") follows its
purifier with RandomGrayscale and Gaussian-noise augmentation at train time: grayscale hides colour shortcuts (error-
minimising noise, OPS's colour), noise larger than the poison's eps drowns small-norm patterns. Train-time only: a
test input is a clean image, which augmentation has no counterpart for. Cost: one plain training.
"""

from __future__ import annotations

import torch
from torchvision.transforms.functional import rgb_to_grayscale

from core.engine.registry import DEFENCES, DefenceSpec, Knob

NAME = "grayscale_noise"


def grayscale_and_noise(x: torch.Tensor, share_grey: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Each image of the [0, 1] batch x turned grey with probability share_grey, then x + sigma * N(0, 1), clamped."""
    grey = torch.rand(len(x), generator=generator) < share_grey
    x = torch.where(grey.to(x.device)[:, None, None, None], rgb_to_grayscale(x, num_output_channels=3), x)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    return (x + sigma * noise).clamp(0, 1)


def augmenter(config):
    """The per-batch augmentation as a core.engine.train.Adversary (it ignores the model), seeded by the defence's
    seed."""
    share_grey, sigma = config.knob(NAME, "share_grey"), config.knob(NAME, "sigma")
    generator = torch.Generator().manual_seed(config.seed)
    return lambda model, x, labels: grayscale_and_noise(x, share_grey, sigma, generator)


DEFENCES.register(
    DefenceSpec(
        NAME,
        "Random grayscale + noise augmentation (ECLIPSE's compensation)",
        "Every training batch: each image turned grey with probability share_grey, then Gaussian noise of std sigma "
        "([0, 1] scale) added. Test inputs are left as they are.",
        lambda train, context, config: train,
        params=("seed",),
        adversary=augmenter,
        knobs=(
            Knob("share_grey", 0.5, "share of each batch turned grey", low=0.0, high=1.0),
            Knob("sigma", 0.1, "std of the Gaussian noise added to every training image", low=0.0, high=1.0),
        ),
        blind=("sigma", (0.05, 0.1, 0.15, 0.2, 0.3)),
    )
)
