"""A toy poison detector in one file: the image's darkness (a ScoreDetector needs only `score`)."""

import torch

from core.detect import ScoreDetector
from core.registry import DETECTORS, DetectorSpec
from core.train import to_float_images


class DarknessDetector(ScoreDetector):
    def score(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - to_float_images(x.cpu()).flatten(1).mean(dim=1)


SPEC = DETECTORS.register(DetectorSpec("toy_darkness", "Toy: darkness", lambda context: DarknessDetector()))
