"""Error-minimising noise, "Unlearnable Examples" (Huang et al. 2021).

The attacker trains a model alongside its noise and solves a min-min problem: the model descends the loss on the
noisy images, the noise then descends the same loss (within the eps-ball), until the model fits the noisy images
almost perfectly. The noise has become a shortcut that explains each label, so a victim trained on it learns the
noise, not the signs. Class-wise: one noise per class (a stronger, simpler shortcut); sample-wise: one per image.
Anchor: CIFAR-10, ResNet-18, eps 8/255, all of train, 20 steps of 0.8/255 per round: clean accuracy -> 21.1%.
Labels are kept; poisons are delivered as uint8 within the eps-ball (core.threats.poison.quantise_toward).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from core.engine.data import NUM_CLASSES, ImageSet
from core.engine.registry import THREATS, Knob, ThreatSpec
from core.engine.train import default_device
from core.threats.poison import PoisonConfig, PoisonedSet, poisoned_copy, quantise_toward

# The min-min schedule of Huang et al.: train the model TRAIN_STEPS batches, then optimise the noise of every
# poisoned image for config.steps steps; stop once the model fits the noisy images (STOP_ACCURACY) or after
# MAX_ROUNDS rounds. Their paper uses 10 model steps, 20 noise steps, stop at 99%.
TRAIN_STEPS = 10
MAX_ROUNDS = 10
STOP_ACCURACY = 0.99
BATCH_SIZE = 512  # images per model step and per noise step
LEARNING_RATE = 0.1  # SGD with momentum 0.9, weight decay 5e-4, as their ResNet-18
NOISE_SCOPE = Knob(
    "noise_scope",
    "samplewise",
    "one noise per image (samplewise) or one per class (classwise: a stronger, simpler shortcut)",
    choices=("samplewise", "classwise"),
    stored_as="noise_scope",
)


def _fresh_model(surrogate: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A newly initialised copy of the attacker's architecture: the model the noise is trained alongside."""
    torch.manual_seed(seed)
    model = copy.deepcopy(surrogate)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def error_minimising_noise(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: PoisonConfig,
    progress=None,
) -> torch.Tensor:
    """Noise (float, within +-eps) for float images in [0, 1]: one per image or one per class (the noise_scope knob).

    Trains `model` in place alongside the noise. Returns the noise per image, on the images' device."""
    device = images.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    classwise = config.knob("unlearnable", "noise_scope") == "classwise"
    noise = torch.zeros((NUM_CLASSES if classwise else images.shape[0], *images.shape[1:]), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, weight_decay=5e-4)
    n = images.shape[0]

    def noisy(index: torch.Tensor) -> torch.Tensor:
        return (images[index] + noise[labels[index] if classwise else index]).clamp(0, 1)

    for round_number in range(1, MAX_ROUNDS + 1):
        model.train()
        for _ in range(TRAIN_STEPS):
            index = torch.randint(n, (min(BATCH_SIZE, n),), generator=generator, device=device)
            loss = F.cross_entropy(model(noisy(index)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        for start in range(0, n, BATCH_SIZE):
            index = torch.arange(start, min(start + BATCH_SIZE, n), device=device)
            for _ in range(config.steps):
                step_noise = noise.detach().requires_grad_(True)
                x = (images[index] + step_noise[labels[index] if classwise else index]).clamp(0, 1)
                total = F.cross_entropy(model(x), labels[index], reduction="sum")
                (gradient,) = torch.autograd.grad(total, step_noise)
                noise = (noise - config.alpha * gradient.sign()).clamp(-config.eps, config.eps)
        with torch.no_grad():
            correct = sum(
                int(
                    (
                        model(noisy(torch.arange(s, min(s + BATCH_SIZE, n), device=device))).argmax(1)
                        == labels[s : s + BATCH_SIZE]
                    ).sum()
                )
                for s in range(0, n, BATCH_SIZE)
            )
        if progress is not None:
            progress("crafting error-minimising noise (rounds)", round_number, MAX_ROUNDS)
        if correct / n >= STOP_ACCURACY:
            break
    return noise[labels] if classwise else noise


def poison_with_unlearnable_noise(train: ImageSet, surrogate, config: PoisonConfig, progress=None) -> PoisonedSet:
    def crafted(chosen: torch.Tensor) -> torch.Tensor:
        device = default_device()
        model = _fresh_model(surrogate, config.seed).to(device)
        x = train.images[chosen].to(device).float() / 255.0
        noise = error_minimising_noise(model, x, train.labels[chosen].to(device), config, progress)
        return quantise_toward(train.images[chosen], (x + noise).clamp(0, 1).cpu(), config.eps)

    return poisoned_copy(train, config, crafted)


THREATS.register(
    ThreatSpec(
        name="unlearnable",
        label="Unlearnable examples: error-minimising noise",
        description="The attacker adds noise that makes each training image trivially easy to classify (min-min "
        "optimisation against a model trained alongside), labels kept: a model trained on them learns the noise, not "
        "the signs (Huang et al. 2021). Class-wise (one noise per class) or sample-wise.",
        apply=poison_with_unlearnable_noise,
        default_fraction=1.0,  # the anchors poison all of train
        fraction_of="the train split",
        params=("eps", "alpha", "steps", "fraction", "seed"),
        knobs=(NOISE_SCOPE,),
        needs_surrogate=True,  # only its architecture: the model trained alongside starts fresh
        # 8/255 as the anchors; their 20 steps of 0.8/255, halved to 10 steps of 1.6/255 for CPU budgets
        defaults={"eps": 8 / 255, "alpha": 1.6 / 255, "steps": 10},
        step_size=lambda eps, steps: eps / 5,
    )
)
