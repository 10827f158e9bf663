"""A toy threat model in one file: darken a share of the training images, labels kept. Its knob `factor` (how many
times darker) is declared here and nowhere else: the config value, the flag --toy-darken-factor and the Poison
page's widget come from it."""

from core.engine.data import ImageSet
from core.engine.registry import THREATS, Knob, ThreatSpec
from core.threats.poison import PoisonConfig, PoisonedSet, choose_poison_indices, poison_mask

FACTOR = Knob("factor", 2, "how many times darker a poisoned image is", low=2, high=8)


def darken(train: ImageSet, surrogate, config: PoisonConfig, progress=None) -> PoisonedSet:
    chosen = choose_poison_indices(len(train), config.fraction, config.seed)
    images = train.images.clone()
    images[chosen] = images[chosen] // config.knob("toy_darken", "factor")
    return PoisonedSet(ImageSet(images, train.labels.clone()), poison_mask(len(train), chosen), config)


SPEC = THREATS.register(
    ThreatSpec(
        name="toy_darken",
        label="Toy: darkened images",
        description="Halves the brightness (or divides it by its factor).",
        apply=darken,
        default_fraction=0.2,
        fraction_of="the train split",
        params=("fraction", "seed"),
        knobs=(FACTOR,),
    )
)
