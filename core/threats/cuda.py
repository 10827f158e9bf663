"""CUDA: convolution-based unlearnable datasets (Sadasivan et al. 2023).

Every image of a class is blurred by that class's own random filter, one per colour channel: a k x k kernel whose
centre is 1 and whose other taps are drawn from U(0, blur), normalised to sum to 1. The filter is a shortcut that
labels the class; no surrogate, no optimisation: seconds to craft. Their defaults are this threat's knobs' defaults
(k = 3, blur 0.3): `--cuda-kernel-size 5 --cuda-blur 0.5` on the command line, widgets on the Poison page.
Anchor: CIFAR-10, all of train: clean accuracy 20.1% under grayscale, 19-44% under adversarial training (the change
is not small in L-inf, so an L-inf defence does not bound it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.engine.data import NUM_CLASSES, ImageSet
from core.engine.registry import THREATS, Knob, ThreatSpec
from core.threats.poison import PoisonConfig, PoisonedSet, poisoned_copy

KERNEL_SIZE = Knob("kernel_size", 3, "side k of each class's blur kernel, in pixels (their 3)", choices=(3, 5, 7))
BLUR = Knob(
    "blur", 0.3, "the off-centre taps are U(0, blur) before normalising: 0 leaves images unchanged (their 0.3)", 0, 1
)


def class_filters(seed: int, kernel_size: int = KERNEL_SIZE.default, blur: float = BLUR.default) -> torch.Tensor:
    """(classes, 3, 1, k, k): per class, one normalised random blur kernel per channel (depthwise)."""
    generator = torch.Generator().manual_seed(seed)
    filters = torch.rand(NUM_CLASSES, 3, 1, kernel_size, kernel_size, generator=generator) * blur
    filters[..., kernel_size // 2, kernel_size // 2] = 1.0
    return filters / filters.sum(dim=(-2, -1), keepdim=True)


def convolve(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, H, W), each channel convolved with one (3, 1, k, k) kernel, edges replicated; uint8 out."""
    pad = kernels.shape[-1] // 2
    x = F.pad(images.float(), (pad,) * 4, mode="replicate")
    return F.conv2d(x, kernels, groups=3).round().clamp(0, 255).to(torch.uint8)


def convolution_poison(train: ImageSet, config: PoisonConfig, progress=None) -> PoisonedSet:
    filters = class_filters(config.seed, config.knob("cuda", "kernel_size"), config.knob("cuda", "blur"))

    def blurred(chosen: torch.Tensor) -> torch.Tensor:
        rows, labels = train.images[chosen].clone(), train.labels[chosen]
        for label in labels.unique().tolist():
            rows[labels == label] = convolve(train.images[chosen[labels == label]], filters[label])
        if progress is not None:
            progress("blurring each class with its filter", NUM_CLASSES, NUM_CLASSES)
        return rows

    return poisoned_copy(train, config, blurred)


THREATS.register(
    ThreatSpec(
        name="cuda",
        label="CUDA: class-wise convolution",
        description="The attacker blurs every image of a class with that class's own random k x k filter per channel, "
        "labels kept: the filter becomes the shortcut a network learns (Sadasivan et al. 2023). No surrogate; not "
        "small in L-inf.",
        apply=lambda train, surrogate, config, progress=None: convolution_poison(train, config, progress),
        default_fraction=1.0,  # the anchors poison all of train
        fraction_of="the train split",
        params=("fraction", "seed"),
        knobs=(KERNEL_SIZE, BLUR),
    )
)
