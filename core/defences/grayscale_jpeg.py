"""Two squeezes in a row (image shortcut squeezing, Liu et al., ICML 2023): grayscale, then JPEG.

On the shipped grids no single squeeze covers every poison: grayscale leaves OPS and the noise crafted through
grayscale, JPEG leaves TAP crafted through JPEG (README). Grayscale removes colour shortcuts, JPEG removes small
high-frequency ones; their composition asks a poison to survive both. Grayscale at train and test time (as the
grayscale defence), JPEG on the training set (as the jpeg defence). Cost: one plain training.
"""

from __future__ import annotations

from core.defences import GrayscaleInput, grayscale, jpeg
from core.engine.data import ImageSet
from core.engine.registry import DEFENCES, DefenceSpec, Knob

NAME = "grayscale_jpeg"

DEFENCES.register(
    DefenceSpec(
        NAME,
        "Grayscale, then JPEG",
        "Every training image made grey then JPEG-encoded at the given quality; test inputs made grey.",
        lambda train, context, config: ImageSet(
            jpeg(grayscale(train.images), config.knob(NAME, "quality")), train.labels
        ),
        test_input=lambda config: GrayscaleInput(),
        knobs=(Knob("quality", 10, "PIL JPEG quality, 1..95 (the anchor's 10)", low=1, high=95),),
        blind=("quality", (75, 50, 30, 20, 10)),
    )
)
