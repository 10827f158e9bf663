"""A preset end to end with a per-stage time table, then one live threshold point, on the device the engine picks.

    python bench/gpu.py [--preset paper] [--train-subset F] [--test-subset F] [--epochs N]

Trains every stage from an empty cache (a temporary folder): loading, surrogate, poisons, DAE, detector,
teacher / student pairs, evaluation. Each stage's time is the wall time between the first and the last progress
report of that stage name (the run's own progress callback, the one shape every long step reports through),
grouped into the table below. Then trains one point at the run's threshold as the Threshold page's live training
does (core.experiments.sweep.train_at_threshold: teacher + student with the sweep's fixed steps, measured). Goals
(issue 11):
the paper preset under 60 s on one H100-class GPU, a live point under 5 s. On CPU use --train-subset to keep it short.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine.data import load_splits  # noqa: E402
from core.engine.train import device_description  # noqa: E402
from core.experiments.pipeline import preset  # noqa: E402
from core.experiments.run import train_run  # noqa: E402
from core.experiments.sweep import sweep_steps, train_at_threshold

# progress stage name (its start) -> the row of the table it counts toward
GROUPS = (
    ("loading", "load"),
    ("surrogate", "surrogate"),
    ("craft", "poisons"),
    ("poison", "poisons"),
    ("DAE", "DAE"),
    ("defender", "detector"),
    ("detector", "detector"),
    ("scoring", "detector"),
    ("threshold", "detector"),
    ("student", "student"),
    ("training", "classifiers"),
    ("evaluating", "evaluation"),
)
# classifiers: every classifier trained on hard labels (teachers, clean reference, undefended, filter only)
ROWS = ("load", "surrogate", "poisons", "DAE", "detector", "classifiers", "student", "evaluation", "other")


def group_of(stage: str) -> str:
    for needle, row in GROUPS:
        if needle in stage and (row != "classifiers" or "student" not in stage):
            return row
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--train-subset", type=float)
    parser.add_argument("--test-subset", type=float)
    parser.add_argument("--epochs", type=int, help="override every classifier's epochs (for a short CPU check)")
    args = parser.parse_args()
    config = preset(args.preset)
    overrides = {k: v for k, v in (("train_subset", args.train_subset), ("test_subset", args.test_subset)) if v}
    if args.epochs:
        overrides["classifier_train"] = replace(config.classifier_train, epochs=args.epochs)
    config = replace(config, **overrides)

    spans: dict[str, list[float]] = {}  # stage -> [first report, last report]
    last = [time.perf_counter()]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        span = spans.setdefault(stage, [last[0], now])  # a stage starts where the previous report left off
        span[1] = now
        last[0] = now

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run = train_run(config, Path(folder) / "run", Path(folder) / "cache", progress=progress)
        total = time.perf_counter() - started
        c = run.config
        splits = load_splits(None, c.trusted_fraction, c.seed, c.train_subset, c.test_subset)
        steps = sweep_steps(run)
        started = time.perf_counter()
        point, _ = train_at_threshold(run, splits, "dae", run.threshold, c.temperature, steps)
        live = time.perf_counter() - started

    rows = dict.fromkeys(ROWS, 0.0)
    for stage, (first, end) in spans.items():
        rows[group_of(stage)] += end - first
    rows["other"] += max(0.0, total - sum(rows.values()))
    changed = ", ".join(f"{k} {v}" for k, v in (("train_subset", args.train_subset), ("epochs", args.epochs)) if v)
    print(
        f"preset {args.preset}{f' ({changed})' if changed else ''} on {device_description()}: "
        f"{len(run.poison_mask):,} training images"
    )
    print(f"{'stage':<14}{'seconds':>10}{'share':>8}")
    for row, seconds in rows.items():
        print(f"{row:<14}{seconds:>10.1f}{seconds / total:>8.0%}")
    print(f"{'end to end':<14}{total:>10.1f}   (goal on an H100-class GPU, paper preset: 60 s)")
    print(
        f"live threshold point: {live:.1f} s ({steps} steps each for teacher and student, then measured; "
        f"goal 5 s), student clean {point['clean_acc']:.1%}"
    )


if __name__ == "__main__":
    main()
