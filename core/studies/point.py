"""`python -m core point`: teacher and student at one threshold of a run's score, measured as the sweep measures,
kept in the run's points.json beside its sweep (what the Threshold page's *Train at this threshold* runs)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from core.experiments.sweep import POINTS_FILE, add_point, measured_point, sweep_steps
from core.studies import STUDIES, DataOptions, Stages, StudySpec, load_run, note, option


@dataclass(frozen=True)
class PointOptions:
    run_dir: Path = option(None, "a run's output folder (holds results.json)", required=True)
    threshold: float = option(None, "drop the training images scored above this", required=True)
    score: str = option("dae", "the detector whose scores the threshold applies to (scored on the run)")
    temperature: float | None = option(None, "distillation temperature T (default: the run's)")
    steps: int | None = option(None, "optimiser steps per teacher and per student (default: the run's sweep's)")
    out: Path | None = option(None, "the points file to add it to (default: RUN_DIR/points.json)")

    def __post_init__(self):
        if self.threshold is None or not math.isfinite(self.threshold):
            raise ValueError(f"--threshold must be a finite number, got {self.threshold}")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"--temperature must be a finite number > 0, got {self.temperature}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")


def main(options: PointOptions, data: DataOptions) -> int:
    run = load_run(options.run_dir)
    scores = run.scores_of(options.score)  # a score not on the run: CheckpointError before any work
    if not bool((scores <= options.threshold).any()):
        raise ValueError(f"threshold {options.threshold} drops every training image: nothing is left to train on")
    out = options.out or options.run_dir / POINTS_FILE.name
    previous = POINTS_FILE.read(out)  # a corrupt file stops here, before training
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot write the points file {out}: {error.strerror}") from None
    if not os.access(out.parent, os.W_OK):
        raise ValueError(f"cannot write the points file {out}: its folder is not writable")
    temperature = options.temperature or run.config.temperature
    steps = options.steps or sweep_steps(run)
    note(f"training teacher and student at {options.score} <= {options.threshold:g}, T={temperature}, {steps} steps")
    with Stages() as stages:
        point = measured_point(
            run, run.splits(data.data_root, data.download), options.score, options.threshold, temperature, steps, stages
        )
    if out.parent == options.run_dir and not (options.run_dir / "results.json").exists():
        raise ValueError(f"the run folder {options.run_dir} was removed while the point trained: nothing was written")
    POINTS_FILE.write(out, add_point(POINTS_FILE.read(out) or previous, point))
    print(
        f"point at {options.score} <= {options.threshold:g} ({point['drop_share']:.1%} dropped, {point['kept']:,} "
        f"kept): clean {point['clean_acc']:.2%}, FGSM {point['fgsm_acc']:.2%}, I-FGSM {point['ifgsm_acc']:.2%}, "
        f"adaptive worst case {point['adaptive_acc']:.2%} ({point['seconds']:.0f} s)"
    )
    print(f"points: {out}")
    return 0


STUDIES.register(
    StudySpec(
        "point",
        "teacher and student at one threshold, measured as the sweep measures, kept in the run's points.json",
        PointOptions,
        main,
        writes=(POINTS_FILE,),
    )
)
