"""`python -m core data`: where GTSRB is and how many images it holds."""

from __future__ import annotations

from dataclasses import dataclass

from core.engine.data import default_root, load_gtsrb
from core.studies import STUDIES, DataOptions, StudySpec


@dataclass(frozen=True)
class NoOptions:
    pass


def main(options: NoOptions, data: DataOptions) -> int:
    root = data.data_root or default_root()
    train, test = load_gtsrb("train", root, data.download), load_gtsrb("test", root, data.download)
    print(f"GTSRB at {root}: {len(train)} training and {len(test)} test images, {int(train.labels.max()) + 1} classes")
    return 0


# load_gtsrb says itself what is missing, and how to get it
STUDIES.register(
    StudySpec(
        "data", "check the dataset: where it is and how many images it holds", NoOptions, main, lambda options: False
    )
)
