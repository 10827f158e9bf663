"""One threshold-sweep point on the shipped paper run, today's layout and recipe vs the new, side by side in one run.

    python bench/sweep_point.py [--run-dir checkpoints/paper] [--tiny]

A point: teacher and student at the run's T on what the run's threshold keeps (a fixed number of optimiser steps
each), then the student measured. "recipe 2, sweep v2": recipe 2 (8 epochs of batches of 128: 2,200 steps on the
paper preset) and the version-2 layout (clean, FGSM and I-FGSM on 15% of the test set, the worst case on 30% of
that). "recipe 3, sweep v3": the run's recipe (core.defences.distill.FAST_RECIPE) and the version-3 layout (clean on the
whole test set, the attacks on 10% of it, the worst case on 30% of that). Both use this code's kernels. Prints each
one's seconds (training, measurement), the ratio, the Threshold page's estimate of the new point
(core.experiments.live.point_seconds) and how far the point's time is from it. --tiny: 3% of train and test and 20
steps, so CI checks that it runs and prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.defences.distill import classifier_train_config  # noqa: E402
from core.engine.data import stratified_split  # noqa: E402
from core.engine.models import Classifier  # noqa: E402
from core.experiments.live import point_seconds  # noqa: E402
from core.experiments.run import SHIPPED_RUN, Run  # noqa: E402
from core.experiments.sweep import StudentTests, SweepConfig, distil_kept, fixed_steps, measure_student  # noqa: E402

LAYOUTS = {  # name -> (classifier recipe settings, sweep settings)
    "recipe 2, sweep v2": (classifier_train_config(), SweepConfig(test_subset=0.15, attack_test_subset=1.0)),
    "recipe 3, sweep v3": (None, SweepConfig()),  # None: the run's own recipe
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, default=SHIPPED_RUN)
    parser.add_argument("--data-root")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    run = Run.load(args.run_dir)
    splits = run.splits(args.data_root)
    train = run.poisons(splits.train).data
    kept = run.train_scores <= run.threshold
    test = splits.test
    if args.tiny:
        _, index = stratified_split(train.labels, 0.03, 0)
        train, kept = train.subset(index), kept[index]
        test = test.subset(stratified_split(test.labels, 0.03, 0)[1])
    print(
        f"{int(kept.sum())} of {len(train)} training images kept; {len(test)} test images; "
        f"{torch.get_num_threads()} threads"
    )
    rows = {}
    for name, (recipe, sweep) in LAYOUTS.items():
        experiment = run.config if recipe is None else replace(run.config, classifier_train=recipe)
        steps = 20 if args.tiny else fixed_steps(experiment, len(train))
        share = sweep.test_subset
        clean = test if share >= 1 else test.subset(stratified_split(test.labels, share, 7)[1])
        tests = StudentTests.of(clean, sweep.attack_test_subset, sweep.robust_test_subset, run.config.seed)
        started = time.perf_counter()
        _, student = distil_kept(train, kept, experiment, steps, 0)
        trained = time.perf_counter()
        measure_student(student, tests, experiment, sweep.robust_steps)
        measured = time.perf_counter()
        images = {"kept": int(kept.sum()), "test": len(tests.clean), "attack_test": len(tests.attacked)}
        images["robust_test"] = len(tests.robust)
        estimate = point_seconds(
            lambda experiment=experiment: Classifier(experiment.classifier),
            experiment.classifier_train.batch_size,
            steps,
            images,
            experiment.eval_attack.steps,
            sweep.robust_steps,
        )
        rows[name] = (steps, trained - started, measured - trained, measured - started, estimate)
    print(
        f"\n{'point':<22}{'steps':>7}{'train s':>9}{'measure s':>11}{'total s':>9}{'estimate s':>12}{'est/total':>11}"
    )
    for name, (steps, training, measuring, total, estimate) in rows.items():
        print(
            f"{name:<22}{steps:>7}{training:>9.0f}{measuring:>11.0f}{total:>9.0f}{estimate:>12.0f}"
            f"{estimate / total:>10.2f}x"
        )
    old, new = rows["recipe 2, sweep v2"][3], rows["recipe 3, sweep v3"][3]
    print(f"\nnew point / today's: {new / old:.3f} (goal <= 0.2)")


if __name__ == "__main__":
    main()
