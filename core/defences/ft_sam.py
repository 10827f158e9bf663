"""FT-SAM (Zhu et al., ICCV 2023, "Enhancing fine-tuning based backdoor defense with sharpness-aware minimization").

Fine-tuning on clean data alone leaves a backdoor in place when the trigger's neurons sit in a flat region of the
loss; sharpness-aware minimisation (Foret et al. 2021) with a large radius pushes the weights off it, so the
backdoor's features decay while clean accuracy is kept. Anchor: BadNets on CIFAR-10 92.21% clean / 1.63% attack
success with 5% clean data (NAD 88.82% / 1.96%). Here: the trained classifier fine-tuned on the defender's trusted
clean images for fine_tune_epochs at fine_tune_lr (the fine_tune defence's settings), each step taken at the
weights perturbed by rho along the normalised gradient. Cost: two passes per step over the small trusted set.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from core.engine.registry import DEFENCES, DefenceSpec, Knob
from core.engine.train import random_translate, to_float_images

NAME = "ft_sam"


def sam_fine_tune(model: nn.Module, train_set, context, config) -> nn.Module:
    """A copy of `model` fine-tuned with SAM on the trusted images (SGD, momentum 0.9, cosine decay to 0)."""
    if context.trusted is None or context.train_config is None:
        raise ValueError("FT-SAM needs the defender's trusted images and the run's training recipe")
    rho = config.knob(NAME, "rho")
    tuned = copy.deepcopy(model).train()
    images, labels = context.trusted.images, context.trusted.labels
    batch = context.train_config.batch_size
    steps = max(1, math.ceil(config.knob("fine_tune", "epochs") * len(images) / batch))
    optimiser = torch.optim.SGD(tuned.parameters(), lr=config.knob("fine_tune", "lr"), momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(config.seed)
    parameters = [p for p in tuned.parameters() if p.requires_grad]
    for _ in range(steps):
        index = torch.randint(len(images), (batch,), generator=generator)
        x, y = random_translate(to_float_images(images[index]), 2, generator), labels[index]
        F.cross_entropy(tuned(x), y).backward()
        with torch.no_grad():  # climb to the worst weights within rho, take the gradient there, come back
            norm = torch.norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None])) + 1e-12
            steps_up = [rho * p.grad / norm if p.grad is not None else torch.zeros_like(p) for p in parameters]
            for p, up in zip(parameters, steps_up):
                p.add_(up)
        optimiser.zero_grad()
        F.cross_entropy(tuned(x), y).backward()
        with torch.no_grad():
            for p, up in zip(parameters, steps_up):
                p.sub_(up)
        optimiser.step()
        optimiser.zero_grad()
        schedule.step()
    return tuned.eval()


DEFENCES.register(
    DefenceSpec(
        NAME,
        "FT-SAM: fine-tune on trusted images with sharpness-aware minimisation",
        "The classifier trained on the poisoned set, fine-tuned on the defender's trusted clean images with SAM at "
        "radius rho (the fine_tune defence's passes and rate).",
        lambda train, context, config: train,
        params=("fine_tune_epochs", "fine_tune_lr", "seed"),
        after_training=sam_fine_tune,
        knobs=(Knob("rho", 0.5, "SAM's radius: how far the weights are pushed before each step", low=0.0, high=10.0),),
        blind=("rho", (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)),
    )
)
