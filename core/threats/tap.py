"""Targeted adversarial poisoning, TAP (Fowl et al. 2021, "Adversarial Examples Make Strong Poisons").

Every chosen training image is replaced by a targeted PGD adversarial example of the attacker's fully trained
surrogate, aimed at the permuted class (y + 1) mod C, labels kept. A victim trained from scratch on such images
learns the features of the wrong class behind each label, and fails on clean test images. Anchor: CIFAR-10,
ResNet-18, eps 8/255, all of train, 250 steps: clean accuracy 94.7% -> 8.2%; untargeted poisons are far weaker.
The poisons are delivered as uint8 (core.threats.poison.quantise_toward keeps the eps-ball after rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.attacks import batched, loss_gradient, project_linf
from core.engine.data import NUM_CLASSES, ImageSet
from core.engine.registry import THREATS, Knob, ThreatSpec
from core.engine.train import random_translate
from core.threats.poison import PoisonConfig, PoisonedSet, poisoned_copy, quantise_toward

BATCH_SIZE = 1024  # poisons crafted per call (and per progress report)
CRAFT_AUGMENT = Knob(
    "craft_augment",
    False,
    "craft through random flips and +-2 px shifts of each step's view (poisons that survive the victim's augmentation)",
    stored_as="craft_augment",
)
# The same L-inf budget spent low-pass, against a defender who looks at high-frequency residuals (1: a free value per
# pixel; the smoothness study finds the noise-residual detector blind between 2 and 4).
SMOOTH_SCALE = Knob(
    "smooth_scale",
    1,
    "the perturbation lives on a (32 / scale)^2 grid, bilinearly upsampled (1: none)",
    choices=(1, 2, 4, 8),
    stored_as="smooth_scale",
)


def permuted_target(labels: torch.Tensor) -> torch.Tensor:
    """The class TAP pushes each image toward: (y + 1) mod C."""
    return (labels + 1) % NUM_CLASSES


def _augmented_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random horizontal flip and +-2 px shift of each image, differentiable in x (gather and flip)."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    return random_translate(x, 2, generator)


def smooth_perturbation(delta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A coarse perturbation bilinearly upsampled to the image size: each value is a convex combination of grid
    values, so the L-inf bound of the grid holds for the image."""
    return F.interpolate(delta, size=size, mode="bilinear", align_corners=False)


@batched
def targeted_pgd(model, x, target, eps, alpha, steps, augment=False, generator=None, smooth=1):
    """Descend the cross-entropy toward `target` by alpha * sign(gradient) per step, projected on the eps-ball.

    augment: each step sees a random flip / shift of the image, so the poison survives the victim's augmentation.
    smooth: the perturbation lives on a grid `smooth` times coarser than the image (bilinearly upsampled)."""
    generator = generator if generator is not None else torch.Generator()
    view_generator = torch.Generator(device=x.device).manual_seed(int(torch.randint(2**31, (1,), generator=generator)))

    def to_target(logits, labels):
        return F.cross_entropy(logits, labels, reduction="none")

    if smooth > 1:
        size = tuple(x.shape[-2:])
        coarse = torch.zeros(*x.shape[:2], size[0] // smooth, size[1] // smooth, device=x.device)
        for _ in range(steps):
            coarse.requires_grad_(True)
            with torch.enable_grad():
                x_adv = (x + smooth_perturbation(coarse, size)).clamp(0, 1)
                view = _augmented_view(x_adv, view_generator) if augment else x_adv
                (gradient,) = torch.autograd.grad(to_target(model(view).float(), target).sum(), coarse)
            coarse = (coarse.detach() - alpha * gradient.sign()).clamp_(-eps, eps)
        return (x + smooth_perturbation(coarse, size)).clamp(0, 1).detach()

    delta = torch.zeros_like(x)
    for _ in range(steps):
        x_adv = (x + delta).clamp(0, 1)
        if augment:
            x_adv = x_adv.requires_grad_(True)
            with torch.enable_grad():
                view = _augmented_view(x_adv, view_generator)
                total = to_target(model(view).float(), target).sum()
                (gradient,) = torch.autograd.grad(total, x_adv)
        else:
            gradient = loss_gradient(model, x_adv, target, to_target)
        delta = project_linf(x + delta - alpha * gradient.sign(), x, eps) - x
    return (x + delta).detach()


def poison_with_tap(train: ImageSet, surrogate, config: PoisonConfig, progress=None) -> PoisonedSet:
    def crafted(chosen: torch.Tensor) -> torch.Tensor:
        rows = train.images[chosen].clone()
        generator = torch.Generator().manual_seed(config.seed)
        for start in range(0, chosen.shape[0], BATCH_SIZE):
            index = chosen[start : start + BATCH_SIZE]
            x = train.images[index].float() / 255.0
            adversarial = targeted_pgd(
                surrogate,
                x,
                permuted_target(train.labels[index]),
                config.eps,
                config.alpha,
                config.steps,
                augment=config.knob("tap", "craft_augment"),
                generator=generator,
                smooth=config.knob("tap", "smooth_scale"),
            )
            rows[start : start + BATCH_SIZE] = quantise_toward(train.images[index], adversarial, config.eps)
            if progress is not None:
                progress("crafting TAP poisons", min(start + BATCH_SIZE, chosen.shape[0]), chosen.shape[0])
        return rows

    return poisoned_copy(train, config, crafted)


THREATS.register(
    ThreatSpec(
        name="tap",
        label="TAP: targeted adversarial poisoning",
        description="The attacker pushes every chosen training image toward the next class, (y + 1) mod 43, with "
        "targeted PGD on a surrogate, keeps the true labels, and delivers 8-bit images: a model trained on them learns "
        "the wrong features behind each label (Fowl et al. 2021).",
        apply=poison_with_tap,
        default_fraction=1.0,  # the anchors poison all of train
        fraction_of="the train split",
        params=("eps", "alpha", "steps", "fraction", "seed"),
        knobs=(CRAFT_AUGMENT, SMOOTH_SCALE),
        needs_surrogate=True,
        # 8/255 as the anchors; step 2.5 * eps / steps (Madry's rule); 40 steps: the probe's 20 fooled the
        # surrogate on 86% of images at 8/255, 40 on 99% at 16/255 (../shared/notes/probes.md)
        defaults={"eps": 8 / 255, "alpha": 2.5 * (8 / 255) / 40, "steps": 40},
        step_size=lambda eps, steps: 2.5 * eps / steps,
    )
)
