"""Sharpening and frequency filtering against convolution-based poisons (CUDA, Sadasivan et al., CVPR 2023).

CUDA blurs each class with its own random filter: the shortcut is the class's frequency response. Sharpening (an
unsharp mask) undoes part of a blur, and a low-pass filter removes the high frequencies where the class-wise filters
differ most and where small-norm noise lives; the reported CIFAR-10 figure for sharpening plus frequency filtering
against CUDA is 78.5% (2024). The same module goes in front of the classifier at test time (differentiable: FFT and
a convolution), so the classifier sees filtered images on both sides. Cost: one plain training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.engine.registry import DEFENCES, DefenceSpec, Knob

NAME = "sharpen_lowpass"
BLUR_KERNEL = torch.tensor([1.0, 2.0, 1.0]) / 4  # the unsharp mask's blur: a 3x3 binomial filter


class SharpenLowpass(nn.Module):
    """x -> low-pass(x + amount * (x - blur(x))): frequencies above `cutoff` cycles per image removed, clamped."""

    def __init__(self, amount: float, cutoff: int, size: int = 32):
        super().__init__()
        self.amount = amount
        kernel = torch.outer(BLUR_KERNEL, BLUR_KERNEL)
        self.register_buffer("kernel", kernel.expand(3, 1, 3, 3).clone())
        frequencies = torch.fft.fftfreq(size) * size  # cycles per image, -16..15
        radius = (frequencies[:, None] ** 2 + torch.fft.rfftfreq(size)[None, :].mul(size) ** 2).sqrt()
        self.register_buffer("mask", (radius <= cutoff).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.kernel, groups=3)
        sharpened = x + self.amount * (x - blurred)
        filtered = torch.fft.irfft2(torch.fft.rfft2(sharpened) * self.mask, s=x.shape[-2:])
        return filtered.clamp(0, 1)


DEFENCES.register(
    DefenceSpec(
        NAME,
        "Sharpen, then low-pass filter (against CUDA-like blurs)",
        "Every training image and every test input is sharpened by an unsharp mask and loses the frequencies above "
        "the cutoff (in cycles per 32-pixel image; 23 keeps them all).",
        lambda train, context, config: train,
        input_transform=lambda train, context, config: SharpenLowpass(
            config.knob(NAME, "amount"), config.knob(NAME, "cutoff")
        ),
        knobs=(
            Knob("amount", 1.0, "unsharp mask strength (0: no sharpening)", low=0.0, high=4.0),
            Knob("cutoff", 12, "highest frequency kept, cycles per image (23: all)", low=1, high=23),
        ),
        blind=("cutoff", (16, 12, 10, 8, 6)),
    )
)
