"""A toy study in one file: its options dataclass is the command's flags, main prints its table."""

from dataclasses import dataclass

from core.engine.registry import STUDIES, StudySpec
from core.studies import option


@dataclass(frozen=True)
class HistogramOptions:
    values: tuple[float, ...] = option(None, "the numbers to count, in [0, 1]", required=True)
    bins: int = option(4, "equal-width bins over [0, 1]")
    shape: str = option("counts", "what each bin shows", choices=("counts", "shares"))

    def __post_init__(self):
        if self.bins < 1:
            raise ValueError(f"--bins must be >= 1, got {self.bins}")


def main(options: HistogramOptions, data) -> int:
    counts = [0] * options.bins
    for value in options.values:
        counts[min(int(value * options.bins), options.bins - 1)] += 1
    shown = counts if options.shape == "counts" else [f"{count / len(options.values):.2f}" for count in counts]
    print(" ".join(map(str, shown)))
    return 0


SPEC = STUDIES.register(
    StudySpec("toy_histogram", "count numbers in equal-width bins", HistogramOptions, main, lambda options: False)
)
