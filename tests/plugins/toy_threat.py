"""A toy threat model in one file: darken a share of the training images, labels kept."""

from core.data import ImageSet
from core.poison import PoisonConfig, PoisonedSet, choose_poison_indices, poison_mask
from core.registry import THREATS, ThreatSpec


def darken(train: ImageSet, surrogate, config: PoisonConfig, progress=None) -> PoisonedSet:
    chosen = choose_poison_indices(len(train), config.fraction, config.seed)
    images = train.images.clone()
    images[chosen] = images[chosen] // 2
    return PoisonedSet(ImageSet(images, train.labels.clone()), poison_mask(len(train), chosen), config)


SPEC = THREATS.register(
    ThreatSpec(
        name="toy_darken",
        label="Toy: darkened images",
        description="Halves the brightness.",
        apply=darken,
        default_fraction=0.2,
        fraction_of="the train split",
        params=("fraction", "seed"),
    )
)
