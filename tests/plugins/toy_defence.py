"""A toy defence in one file: mirror every training image, and every test input through the same operation. Its
knob `axis` (which way to mirror) is declared here: DefenceConfig's value, --toy-mirror-axis and the model's cache
key come from it."""

from torch import nn

from core.engine.data import ImageSet
from core.engine.registry import DEFENCES, DefenceSpec, Knob

AXIS = Knob("axis", "width", "mirror left-right (width) or upside down (height)", choices=("width", "height"))
DIMENSION = {"width": -1, "height": -2}


class MirrorInput(nn.Module):
    """The test-time half: the model sees mirrored inputs, as it was trained."""

    def __init__(self, dimension: int = -1):
        super().__init__()
        self.dimension = dimension

    def forward(self, x):
        return x.flip(self.dimension)


def mirror(train, context, config):
    return ImageSet(train.images.flip(DIMENSION[config.knob("toy_mirror", "axis")]), train.labels)


SPEC = DEFENCES.register(
    DefenceSpec(
        name="toy_mirror",
        label="Toy: mirror the images",
        description="Trains and tests on mirrored images.",
        apply=mirror,
        test_input=lambda config: MirrorInput(DIMENSION[config.knob("toy_mirror", "axis")]),
        knobs=(AXIS,),
    )
)
