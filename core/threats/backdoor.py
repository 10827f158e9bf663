"""BadNets backdoor (Gu et al. 2017): stamp a small trigger on a share of the other classes' training images and
relabel them as the target class; at test time the trigger steers any image to the target.
Attack success: the share of triggered test images of other classes classified as the target."""

from __future__ import annotations

import torch

from core.engine.data import ImageSet
from core.engine.registry import THREATS, Knob, ThreatSpec
from core.threats.poison import PoisonConfig, PoisonedSet, poisoned_copy, target_success

TRIGGER_SIZE = Knob(
    "trigger_size",
    3,
    "side of the square trigger in pixels, stamped in the bottom-right corner",
    1,
    16,
    stored_as="trigger_size",
)


def trigger_patch(size: int) -> torch.Tensor:
    """The BadNets trigger: a size x size black-and-white checkerboard, uint8 (3, size, size)."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((rows + cols) % 2 == 0).to(torch.uint8) * 255).expand(3, size, size).clone()


def stamp_trigger(images: torch.Tensor, size: int) -> torch.Tensor:
    """A copy of uint8 images (N, 3, 32, 32) with the trigger in the bottom-right corner, one pixel in."""
    stamped = images.clone()
    stamped[:, :, -size - 1 : -1, -size - 1 : -1] = trigger_patch(size)
    return stamped


def plant_backdoor(train: ImageSet, config: PoisonConfig, progress=None) -> PoisonedSet:
    """Stamp the trigger on round(fraction * N_other) images of the other classes and relabel them as the target."""
    return poisoned_copy(
        train,
        config,
        new_pixels=lambda chosen: stamp_trigger(train.images[chosen], config.knob("backdoor", "trigger_size")),
        new_labels=lambda chosen: config.target_class,
        eligible=train.labels != config.target_class,
    )


def backdoor_success(model, test: ImageSet, config: PoisonConfig) -> dict:
    others = test.images[test.labels != config.target_class]
    return target_success(model, stamp_trigger(others, config.knob("backdoor", "trigger_size")), config.target_class)


THREATS.register(
    ThreatSpec(
        grid_cases={
            "backdoor": {},
            # adaptive against abl_drop, which drops 10%: a quarter of the other classes poisoned (about 24% of train)
            "backdoor_heavy": {"fraction": 0.25, "adapts": ("backdoor", "abl_drop")},
        },
        name="backdoor",
        label="BadNets backdoor",
        description="The attacker stamps a small trigger on a share of the other classes' training images and relabels "
        "them as the target class; at test time the trigger steers any image to the target.",
        apply=lambda train, surrogate, config, progress=None: plant_backdoor(train, config),
        default_fraction=0.05,
        fraction_of="the other classes",  # BadNets-typical
        params=("target_class", "fraction", "seed"),
        metrics=backdoor_success,
        knobs=(TRIGGER_SIZE,),
    )
)
