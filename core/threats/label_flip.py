"""Label flipping: relabel a share of one source class as a target class; images untouched.
Attack success: the share of the source class's test images classified as the target."""

from __future__ import annotations

from core.engine.data import ImageSet
from core.engine.registry import THREATS, ThreatSpec
from core.threats.poison import PoisonConfig, PoisonedSet, poisoned_copy, target_success


def flip_labels(train: ImageSet, config: PoisonConfig, progress=None) -> PoisonedSet:
    """Relabel round(fraction * n_source) images of the source class as the target class."""
    return poisoned_copy(
        train, config, new_labels=lambda chosen: config.target_class, eligible=train.labels == config.source_class
    )


def flip_success(model, test: ImageSet, config: PoisonConfig) -> dict:
    return target_success(model, test.images[test.labels == config.source_class], config.target_class)


THREATS.register(
    ThreatSpec(
        name="label_flip",
        label="Label flipping",
        description="The attacker relabels a share of one source class as a target class; images are untouched.",
        apply=lambda train, surrogate, config, progress=None: flip_labels(train, config),
        default_fraction=0.4,
        fraction_of="the source class",  # 40% of Stop signs, about 1% of train
        params=("source_class", "target_class", "fraction", "seed"),
        metrics=flip_success,
    )
)
