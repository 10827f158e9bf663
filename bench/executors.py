"""The same small grid on the local executor and on a Ray instance started on this machine, side by side.

    python bench/executors.py [--cases backdoor label_flip] [--seeds 1] [--train-subset 0.04]

The defence grid (core.experiments.defence_grid) at a small size: every cell trains its models from an empty cache, once
per executor. Rows: local (cells one after another in this process), ray with the same threads per cell (the same
numbers: checked here and printed), and ray with one CPU per cell (cells side by side; other thread counts give other
floats, so its numbers are not expected to match). On one machine Ray buys nothing but its overhead; the speed-up is a
cluster's (README: "Running on a cluster").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine.data import default_root  # noqa: E402
from core.engine.executor import ExecutorConfig  # noqa: E402
from core.experiments.defence_grid import DefenceGridConfig, defence_grid  # noqa: E402
from core.experiments.pipeline import preset  # noqa: E402


def without_times(value):
    if isinstance(value, dict):
        return {key: without_times(item) for key, item in value.items() if key != "seconds"}
    return value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", default=["backdoor", "label_flip"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--train-subset", type=float, default=0.04)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    experiment = preset("compare", train_subset=args.train_subset, test_subset=0.02, defender_epochs=1)
    experiment = replace(
        experiment,
        classifier_train=replace(experiment.classifier_train, epochs=args.epochs),
        dae=replace(experiment.dae, train=replace(experiment.dae.train, epochs=1)),
    )
    config = DefenceGridConfig(
        experiment,
        cases=tuple(args.cases),
        defences=("jpeg",),
        seeds=tuple(range(args.seeds)),
        robust_test_subset=0.5,
        robust_steps=2,
    )
    threads = torch.get_num_threads()
    rows = [
        ("local", ExecutorConfig("local", cpus_per_cell=threads)),
        (f"ray, {threads} CPUs per cell", ExecutorConfig("ray", cpus_per_cell=threads)),
        ("ray, 1 CPU per cell", ExecutorConfig("ray", cpus_per_cell=1)),
    ]
    cells = len(config.cases) * len(config.seeds)
    print(
        f"defence grid, {cells} cells ({', '.join(config.cases)} x {len(config.seeds)} seed(s)), {os.cpu_count()} "
        f"cores, {threads} torch threads; every row trains from an empty cache"
    )
    results, reference = [], None
    for label, executor in rows:
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            grid = defence_grid(config, cache, str(default_root()), executor=executor)
            seconds = time.perf_counter() - started
        same = None
        if reference is None:
            reference = without_times(grid)
        else:
            same = without_times(grid) == reference
        results.append((label, seconds, same))
    local = results[0][1]
    print(f"{'executor':<26}{'wall s':>9}{'s per cell':>12}{'vs local':>10}  same JSON as local")
    for label, seconds, same in results:
        shown = "-" if same is None else ("yes" if same else "no")
        print(f"{label:<26}{seconds:>9.1f}{seconds / cells:>12.1f}{seconds / local:>9.2f}x  {shown}")
    print(json.dumps({label: round(seconds, 1) for label, seconds, _ in results}))


if __name__ == "__main__":
    main()
