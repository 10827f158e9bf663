"""The paper's threat: replace a share of the training images by adversarial copies crafted on the attacker's
surrogate with a registered attack (FGSM / I-FGSM / PGD), labels kept, delivered as uint8 images."""

from __future__ import annotations

import torch

from core.engine.data import ImageSet
from core.engine.registry import THREATS, ThreatSpec
from core.threats.poison import PoisonConfig, PoisonedSet, craft, poisoned_copy, quantise_toward

BATCH_SIZE = 2048  # poisons crafted per call (and per progress report)


def poison_with_perturbations(train: ImageSet, surrogate, config: PoisonConfig, progress=None) -> PoisonedSet:
    def crafted(chosen: torch.Tensor) -> torch.Tensor:
        rows = train.images[chosen].clone()
        for start in range(0, chosen.shape[0], BATCH_SIZE):
            index = chosen[start : start + BATCH_SIZE]
            adversarial = craft(surrogate, train.images[index], train.labels[index], config)
            rows[start : start + BATCH_SIZE] = quantise_toward(train.images[index], adversarial, config.eps)
            if progress is not None:
                progress("crafting poisons", min(start + BATCH_SIZE, chosen.shape[0]), chosen.shape[0])
        return rows

    return poisoned_copy(train, config, crafted)


THREATS.register(
    ThreatSpec(
        grid_cases={
            "ifgsm_paper": {},  # the paper's: I-FGSM, eps 0.01, on 10% of train
            "ifgsm_8": {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "fraction": 1.0},
        },
        name="perturbation",
        label="Perturbation (the paper's)",
        description="The attacker replaces a share of the training images by adversarial copies crafted on a surrogate "
        "model, keeps their labels, and delivers them as ordinary 8-bit images.",
        apply=poison_with_perturbations,
        default_fraction=0.1,
        fraction_of="the train split",
        params=("attack", "eps", "alpha", "steps", "fraction", "seed"),
        needs_surrogate=True,
    )
)
