"""An attacker who knows the residual detector: the same L-inf budget spent on a smoother perturbation.

The supervised noise-residual detector is the only one that finds the paper's poisons (README). It looks at
high-frequency residuals, so an attacker who knows that can put the budget into low frequencies: TAP with its
perturbation on a (32 / smooth_scale)^2 grid, bilinearly upsampled. For each smooth_scale this measures the
detectors' ROC AUC on the poisoned training set (half of it poisoned, so both classes exist) and the damage: the
clean test accuracy of a classifier trained on it, beside the clean reference. Every model is cached.
"""

from __future__ import annotations

import time
from dataclasses import replace

from core.engine.storage import ResultFile
from core.engine.train import machine
from core.experiments.budget import poison_at
from core.experiments.compare import CompareConfig, build_detectors, score_detectors
from core.experiments.evaluate import accuracy
from core.experiments.pipeline import ExperimentConfig, ModelCache, prepare
from core.threats.tap import SMOOTH_SCALE

DETECTORS_MEASURED = ("supervised", "dae")

SMOOTHNESS_FILE = ResultFile("smoothness.json", "python -m core smoothness --out {folder}", ("config", "points"))


def smoothness_sweep(
    experiment: ExperimentConfig,
    scales: tuple[int, ...] = SMOOTH_SCALE.choices,
    fraction: float = 0.5,
    cache_dir="runs/cache",
    data_root=None,
    progress=None,
    steps: int
    | None = None,  # TAP steps; None: the threat's default (the step size follows, as in core.experiments.budget)
) -> dict:
    """{"config", "points": [{smooth_scale, auroc: {detector: AUC}, clean_acc, clean_reference_acc}], "seconds"}."""
    started = time.time()
    cache = ModelCache(cache_dir)
    report = progress or (lambda stage, done, total: None)
    points = []
    for number, scale in enumerate(scales):
        report("smoothness sweep", number, len(scales))
        poison = poison_at(experiment.poison, "tap", fraction=fraction, steps=steps, smooth_scale=scale)
        config = replace(experiment, poison=poison)
        prepared = prepare(config, cache, data_root, report)
        settings = CompareConfig(config, threats=("tap",), detectors=DETECTORS_MEASURED, distil=("none",))
        detectors = build_detectors(prepared, DETECTORS_MEASURED, settings, cache, report)
        _, _, quality = score_detectors(prepared, detectors, config.threshold)
        test = prepared.splits.test
        undefended, _ = prepared.classifier("undefended", prepared.poisoned.data, "undefended", prepared.poison_key)
        reference, _ = prepared.classifier(
            "clean_reference", prepared.splits.train, "clean_reference", prepared.data_key
        )
        points.append(
            {
                "smooth_scale": scale,
                "auroc": {name: quality[name]["auroc"] for name in DETECTORS_MEASURED},
                "clean_acc": accuracy(undefended, test.images, test.labels),
                "clean_reference_acc": accuracy(reference, test.images, test.labels),
                "n_poisoned": prepared.poisoned.n_poisoned,
                "n_train": len(prepared.poisoned.poison_mask),
                "n_test": len(test),
            }
        )
    report("smoothness sweep", len(scales), len(scales))
    return {
        "config": {"experiment": experiment.to_dict(), "scales": list(scales), "fraction": fraction},
        "points": points,
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
    }
