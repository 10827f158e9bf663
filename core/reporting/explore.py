"""The app's views, without Streamlit: the threshold view (counts, curves, operating point), poison previews,
sample pools, the purify preview, display formatting.

Only the app (pages/, ui/) and bench/threshold.py import this module; studies, the CLI and the rest of the engine
never do (tests/test_layout.py). A study's file reader lives beside its writer
(core.experiments.compare.load_comparison,
core.experiments.defence_grid.load_defence_grid, core.experiments.budget.load_budget, core.experiments.sweep for a run's
sweep points), an uploaded image's reading and verdicts in core.reporting.images. Everything here takes and returns
plain tensors, arrays and dicts so the app can cache it by small config values. A finished run is a
core.experiments.run.Run.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve, roc_curve

from core.attacks import cross_entropy_loss, margin_loss
from core.defences import purify
from core.detectors.detect import reconstruction_error
from core.engine.data import ImageSet
from core.engine.registry import ATTACKS, THREATS
from core.engine.train import predict
from core.experiments.evaluate import accuracy
from core.experiments.run import Run
from core.threats.poison import craft, poison_training_set, quantise_toward

# ---- the threshold view -------------------------------------------------------------------------


def threshold_counts(scores: np.ndarray, poison_mask: np.ndarray, threshold: float) -> dict:
    """The 2x2 table kept/dropped x clean/poisoned with precision, recall and F1 (fast: numpy only)."""
    dropped = scores > threshold
    dropped_poisoned = int(np.count_nonzero(dropped & poison_mask))
    dropped_clean = int(np.count_nonzero(dropped)) - dropped_poisoned
    n_poisoned = int(np.count_nonzero(poison_mask))
    kept_poisoned = n_poisoned - dropped_poisoned
    kept_clean = len(scores) - n_poisoned - dropped_clean
    n_dropped = dropped_clean + dropped_poisoned
    precision = dropped_poisoned / n_dropped if n_dropped else 0.0
    recall = dropped_poisoned / n_poisoned if n_poisoned else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "kept_clean": kept_clean,
        "kept_poisoned": kept_poisoned,
        "dropped_clean": dropped_clean,
        "dropped_poisoned": dropped_poisoned,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "kept": kept_clean + kept_poisoned,
    }


def thinned(x: np.ndarray, y: np.ndarray, max_points: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """At most max_points of a curve, evenly spaced along its length (first and last kept): what a chart needs.
    The paper run's precision-recall curve has 35,280 points; sent on every slider move it was ~1 MB of JSON."""
    step = np.abs(np.diff(x)) + np.abs(np.diff(y))
    length = np.concatenate([[0.0], np.cumsum(step)])
    if len(x) <= max_points or length[-1] == 0:
        return x, y
    index = np.unique(np.searchsorted(length, np.linspace(0, length[-1], max_points)).clip(0, len(x) - 1))
    index = np.unique(np.concatenate([[0], index, [len(x) - 1]]))
    return x[index], y[index]


def curves(scores: np.ndarray, poison_mask: np.ndarray) -> dict:
    """ROC and precision-recall curves of the score, and its ROC AUC (computed once per run and score); "roc_shown"
    and "pr_shown": the same curves thinned for drawing."""
    fpr, tpr, roc_thresholds = roc_curve(poison_mask, scores)
    precision, recall, pr_thresholds = precision_recall_curve(poison_mask, scores)
    return {
        "roc_shown": thinned(fpr, tpr),
        "pr_shown": thinned(recall, precision),
        "auroc": float(np.trapz(tpr, fpr)),
        "fpr": fpr,
        "tpr": tpr,
        "roc_thresholds": roc_thresholds,
        "precision": precision,
        "recall": recall,
        "pr_thresholds": pr_thresholds,
    }


def operating_point(scores: np.ndarray, poison_mask: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-positive rate, true-positive rate) of dropping scores above threshold."""
    dropped = scores > threshold
    clean = ~poison_mask
    fpr = float(np.count_nonzero(dropped & clean)) / max(int(np.count_nonzero(clean)), 1)
    tpr = float(np.count_nonzero(dropped & poison_mask)) / max(int(np.count_nonzero(poison_mask)), 1)
    return fpr, tpr


# ---- images ---------------------------------------------------------------------------------------


def perturbation_stats(clean: torch.Tensor, poisoned: torch.Tensor) -> dict:
    """L-inf (grey levels and [0, 1]), mean L2 ([0, 1] scale) and PSNR (dB) of uint8 image pairs."""
    difference = poisoned.float() - clean.float()
    linf = float(difference.abs().max()) if difference.numel() else 0.0
    l2 = float((difference / 255).flatten(1).norm(dim=1).mean()) if difference.numel() else 0.0
    mse = float((difference / 255).pow(2).mean()) if difference.numel() else 0.0
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    return {"linf_levels": linf, "linf": linf / 255, "l2": l2, "psnr_db": psnr}


def attack_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    attack: str,
    eps: float,
    alpha: float,
    steps: int,
    seed: int = 0,
    loss: str = "margin",
) -> torch.Tensor:
    """uint8 images -> float adversarial images in [0, 1] with a registered attack, untargeted, against the
    model's own prediction. loss "margin" (Carlini-Wagner: the adaptive objective core.attacks.robust uses; a distilled
    student's softmax is saturated at T = 1, so cross-entropy has almost no gradient and I-FGSM at eps 0.01 left
    "Stop 1.0000" unchanged) or "cross_entropy" (the paper's)."""
    x = images.float() / 255
    labels = predict(model, x).argmax(dim=1)
    objective = {"margin": margin_loss, "cross_entropy": cross_entropy_loss}[loss]
    generator = torch.Generator().manual_seed(seed)
    chosen = {"loss": objective} if attack_takes_loss(attack) else {}  # a plugin attack may have its own objective
    return ATTACKS[attack].run(model, x, labels, eps, alpha, steps, generator=generator, **chosen)


def attack_takes_loss(attack: str) -> bool:
    """Whether a registered attack's run takes a `loss` (the built-in ones do; a plugin's may not)."""
    return "loss" in inspect.signature(ATTACKS[attack].run).parameters


def format_probability(p: float) -> str:
    """0.99984 -> '0.9998', 3e-6 -> '<1e-4': four decimals, without pretending to more."""
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def poison_preview(train, surrogate: torch.nn.Module, classes: list[int], per_class: int, config) -> dict:
    """A few training images of the chosen classes poisoned with config (seeded choice): clean, poisoned, the
    perturbation amplified to [0, 1] for display, its size, and the surrogate's accuracy before and after."""
    rng = np.random.default_rng(config.seed)
    labels_np = train.labels.numpy()
    index = [int(i) for c in classes for i in rng.choice(np.flatnonzero(labels_np == c), per_class, replace=False)]
    index = torch.tensor(index, dtype=torch.long)
    clean, labels = train.images[index], train.labels[index]
    if "attack" in THREATS[config.threat].params:  # crafted with a registered attack (the paper's perturbation)
        poisoned = quantise_toward(clean, craft(surrogate, clean, labels, config), config.eps)
    else:  # any other surrogate threat (TAP, unlearnable), applied to just these images
        poisoned = poison_training_set(ImageSet(clean, labels), surrogate, replace(config, fraction=1.0)).data.images
    amplified = ((poisoned.float() - clean.float()) / max(2 * config.eps * 255, 1e-6) + 0.5).clamp(0, 1)
    return {
        "clean": clean,
        "poisoned": poisoned,
        "labels": labels,
        "amplified": amplified,
        "stats": perturbation_stats(clean, poisoned),
        "acc_before": accuracy(surrogate, clean, labels),
        "acc_after": accuracy(surrogate, poisoned, labels),
    }


def threat_preview(train, config, shown: int = 8) -> dict:
    """A threat that needs no surrogate (label flip, backdoor) applied to the whole train split, and a seeded few of
    its poisons with their old and new labels."""
    poisoned = poison_training_set(train, None, config)
    changed = torch.nonzero(poisoned.poison_mask).flatten()
    chosen = changed[torch.randperm(len(changed), generator=torch.Generator().manual_seed(config.seed))[:shown]]
    return {
        "n_poisoned": poisoned.n_poisoned,
        "n_train": len(train),
        "images": poisoned.data.images[chosen],
        "old_labels": train.labels[chosen].tolist(),
        "new_labels": poisoned.data.labels[chosen].tolist(),
    }


def applied_summary(train, poisoned) -> dict:
    """How many training images a poisoning replaced, how many differ after rounding, and the perturbation's size."""
    changed = (poisoned.data.images != train.images).flatten(1).any(dim=1)
    mask = poisoned.poison_mask
    return {
        "poisoned": poisoned.n_poisoned,
        "of": len(train),
        "actually changed": int(changed.sum()),
        **perturbation_stats(train.images[mask], poisoned.data.images[mask]),
    }


def mean_reconstruction_error(autoencoder: torch.nn.Module, images: torch.Tensor) -> float:
    return float(reconstruction_error(autoencoder, images).mean())


def as_pixels(image: torch.Tensor) -> np.ndarray:
    """uint8 (3, H, W) or float [0, 1] -> HWC uint8 for display."""
    if image.dtype != torch.uint8:
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return image.permute(1, 2, 0).numpy()


def example_pool(run: Run, train, pool_size: int = 48) -> dict:
    """A seeded pool of training indices, half poisoned, with their images as the defender received them
    (the run's stored poisons, never re-made)."""
    delivered = run.poisons(train)
    rng = np.random.default_rng(run.config.seed)
    mask = run.poison_mask.numpy()
    poisoned = np.flatnonzero(mask)
    clean = np.flatnonzero(~mask)
    half = pool_size // 2
    chosen = np.concatenate(
        [
            rng.choice(poisoned, min(half, len(poisoned)), replace=False),
            rng.choice(clean, min(pool_size - min(half, len(poisoned)), len(clean)), replace=False),
        ]
    )
    index = torch.from_numpy(np.sort(chosen))
    return {
        "index": index.numpy(),
        "clean": train.images[index],
        "delivered": delivered.data.images[index],
        "is_poisoned": run.poison_mask[index].numpy(),
        "labels": delivered.data.labels[index],
    }


# ---- defences --------------------------------------------------------------------------------------


def purify_preview(autoencoder: torch.nn.Module, images: torch.Tensor, sigma: float, seed: int = 0) -> dict:
    """A few delivered training images through the purify defence, DAE(x + sigma * noise): the images, their
    purified versions, the difference amplified around grey, and the mean absolute change in grey levels."""
    purified = purify(autoencoder, images, sigma, seed)
    difference = purified.float() - images.float()
    scale = max(float(difference.abs().max()), 1.0)
    return {
        "images": images,
        "purified": purified,
        "amplified": (difference / (2 * scale) + 0.5).clamp(0, 1),
        "mean_change_levels": float(difference.abs().mean()),
    }
