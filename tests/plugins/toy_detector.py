"""A toy poison detector in one file: the image's darkness (a ScoreDetector needs only `score`), raised to its knob
`power` (declared here: CompareConfig's value and --toy-darkness-power come from it)."""

import torch

from core.detectors.detect import ScoreDetector
from core.engine.registry import DETECTORS, DetectorSpec, Knob
from core.engine.train import to_float_images

POWER = Knob("power", 1.0, "the darkness score is raised to this power", low=0.5, high=4.0)


class DarknessDetector(ScoreDetector):
    def __init__(self, power: float = 1.0):
        self.power = power

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (1 - to_float_images(x.cpu()).flatten(1).mean(dim=1)) ** self.power


SPEC = DETECTORS.register(
    DetectorSpec(
        "toy_darkness",
        "Toy: darkness",
        lambda context: DarknessDetector(context.knob("toy_darkness", "power")),
        knobs=(POWER,),
    )
)
