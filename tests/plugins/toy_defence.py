"""A toy defence in one file: mirror every training image, and every test input through the same operation."""

from torch import nn

from core.data import ImageSet
from core.registry import DEFENCES, DefenceSpec


class MirrorInput(nn.Module):
    """The test-time half: the model sees mirrored inputs, as it was trained."""

    def forward(self, x):
        return x.flip(-1)


SPEC = DEFENCES.register(
    DefenceSpec(
        name="toy_mirror",
        label="Toy: mirror the images",
        description="Trains and tests on left-right mirrored images.",
        apply=lambda train, context, config: ImageSet(train.images.flip(-1), train.labels),
        test_input=lambda config: MirrorInput(),
    )
)
