"""One-pixel shortcut, OPS (Wu et al. 2023, "One-Pixel Shortcut: on the Learning Preference of Deep Neural
Networks").

Every image of a class gets the same single pixel set to the same saturated colour (each channel 0 or 255): a
shortcut a network learns long before the sign, labels kept. Per class, the position and colour are the ones whose
change is largest and most uniform over the class's images (their search: mean change high, its spread low; here
mean minus standard deviation of the per-image L1 change), each (position, colour) used by one class only. No
surrogate, no gradient: seconds to craft. Anchor: CIFAR-10, all of train: clean accuracy 9.6% even under adversarial
training at 8/255 (an L0 change of one pixel is far outside an L-inf ball of 8/255).
"""

from __future__ import annotations

import itertools

import torch

from core.engine.data import NUM_CLASSES, ImageSet
from core.engine.registry import THREATS, ThreatSpec
from core.threats.poison import PoisonConfig, PoisonedSet, poisoned_copy

COLOURS = torch.tensor(list(itertools.product((0, 255), repeat=3)), dtype=torch.float32)  # (8, 3): saturated colours


def shortcut_pixels(images: torch.Tensor, labels: torch.Tensor) -> dict[int, tuple[int, int, torch.Tensor]]:
    """class -> (row, col, uint8 colour (3,)): per class, the position and saturated colour whose L1 change over the
    class's images has the largest mean minus standard deviation; a (position, colour) pair goes to one class."""
    taken: set[tuple[int, int]] = set()
    chosen = {}
    height, width = images.shape[-2:]
    for label in labels.unique().tolist():
        pixels = images[labels == label].float().permute(0, 2, 3, 1).reshape(-1, height * width, 1, 3)
        change = (pixels - COLOURS).abs().sum(-1) / 255  # (n, positions, colours)
        score = change.mean(0) - (change.std(0) if change.shape[0] > 1 else 0)
        for flat in score.flatten().argsort(descending=True).tolist():
            position, colour = divmod(flat, COLOURS.shape[0])
            if (position, colour) not in taken:
                taken.add((position, colour))
                row, col = divmod(position, width)
                chosen[label] = (row, col, COLOURS[colour].to(torch.uint8))
                break
    return chosen


def one_pixel_shortcut(train: ImageSet, config: PoisonConfig, progress=None) -> PoisonedSet:
    """Set each chosen image's class pixel to its class colour (positions searched on the chosen images)."""

    def placed(chosen: torch.Tensor) -> torch.Tensor:
        rows, labels = train.images[chosen].clone(), train.labels[chosen]
        for label, (row, col, colour) in shortcut_pixels(rows, labels).items():
            rows[labels == label, :, row, col] = colour
        if progress is not None:
            progress("placing one-pixel shortcuts", NUM_CLASSES, NUM_CLASSES)
        return rows

    return poisoned_copy(train, config, placed)


THREATS.register(
    ThreatSpec(
        name="ops",
        label="OPS: one-pixel shortcut",
        description="The attacker sets one pixel of every image of a class to one saturated colour, the same per "
        "class, labels kept: a network learns the pixel, not the sign (Wu et al. 2023). An L0 change, outside any "
        "L-inf budget, so adversarial training does not see it.",
        apply=lambda train, surrogate, config, progress=None: one_pixel_shortcut(train, config, progress),
        default_fraction=1.0,  # the anchors poison all of train
        fraction_of="the train split",
        params=("fraction", "seed"),
    )
)
