"""What the app computes, without Streamlit: the threshold view, uploads, sample pools, the comparison table.

Everything here takes and returns plain tensors, arrays and dicts so the app can cache it by small
config values. A finished run is a core.run.Run.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from sklearn.metrics import precision_recall_curve, roc_curve

from core.attacks import fgsm, ifgsm
from core.data import CLASS_NAMES, IMAGE_SIZE
from core.recipe import sampling_seed
from core.run import Run
from core.storage import CheckpointError
from core.train import predict

MAX_UPLOAD_PIXELS = 4096 * 4096  # larger images are refused before decoding (decompression bombs)


class UploadError(ValueError):
    """An uploaded file that is not a usable image; the message says what to do."""


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
    return {"threshold": float(threshold), "kept_clean": kept_clean, "kept_poisoned": kept_poisoned,
            "dropped_clean": dropped_clean, "dropped_poisoned": dropped_poisoned,
            "precision": precision, "recall": recall, "f1": f1, "kept": kept_clean + kept_poisoned}


def curves(scores: np.ndarray, poison_mask: np.ndarray) -> dict:
    """ROC and precision-recall curves of the score, and its ROC AUC (computed once per run and score)."""
    fpr, tpr, roc_thresholds = roc_curve(poison_mask, scores)
    precision, recall, pr_thresholds = precision_recall_curve(poison_mask, scores)
    return {"auroc": float(np.trapz(tpr, fpr)), "fpr": fpr, "tpr": tpr, "roc_thresholds": roc_thresholds,
            "precision": precision, "recall": recall, "pr_thresholds": pr_thresholds}


def operating_point(scores: np.ndarray, poison_mask: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-positive rate, true-positive rate) of dropping scores above threshold."""
    dropped = scores > threshold
    clean = ~poison_mask
    fpr = float(np.count_nonzero(dropped & clean)) / max(int(np.count_nonzero(clean)), 1)
    tpr = float(np.count_nonzero(dropped & poison_mask)) / max(int(np.count_nonzero(poison_mask)), 1)
    return fpr, tpr


def example_indices(scores: np.ndarray, poison_mask: np.ndarray, threshold: float, per_group: int = 8,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """A few training indices per decision: kept / dropped, each a mix of clean and poisoned."""
    rng = np.random.default_rng(seed)
    dropped = scores > threshold
    groups = {}
    for name, decision in (("kept", ~dropped), ("dropped", dropped)):
        chosen = []
        for truth in (poison_mask, ~poison_mask):
            candidates = np.flatnonzero(decision & truth)
            take = min(per_group // 2, len(candidates))
            chosen.extend(rng.choice(candidates, size=take, replace=False).tolist() if take else [])
        groups[name] = np.array(sorted(chosen), dtype=np.int64)
    return groups


# ---- images ---------------------------------------------------------------------------------------

def perturbation_stats(clean: torch.Tensor, poisoned: torch.Tensor) -> dict:
    """L-inf (grey levels and [0, 1]), mean L2 ([0, 1] scale) and PSNR (dB) of uint8 image pairs."""
    difference = poisoned.float() - clean.float()
    linf = float(difference.abs().max()) if difference.numel() else 0.0
    l2 = float((difference / 255).flatten(1).norm(dim=1).mean()) if difference.numel() else 0.0
    mse = float((difference / 255).pow(2).mean()) if difference.numel() else 0.0
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    return {"linf_levels": linf, "linf": linf / 255, "l2": l2, "psnr_db": psnr}


def read_upload(data: bytes, name: str = "upload") -> torch.Tensor:
    """Bytes of an image file -> uint8 (3, 32, 32). Raises UploadError with a clear message."""
    if not data:
        raise UploadError(f"{name} is empty: upload a PNG, JPEG, PPM or WebP image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise UploadError(f"{name} is {width}x{height} pixels, over the {MAX_UPLOAD_PIXELS:,}-pixel limit: resize it first")
            image.load()  # decodes fully: truncated files fail here
            rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    except UploadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise UploadError(f"{name} is not an image we can read: upload a PNG, JPEG, PPM or WebP file") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise UploadError(f"{name} could not be decoded ({error}); it may be truncated or corrupt") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def top_classes(model: torch.nn.Module, images: torch.Tensor, k: int = 5, temperature: float = 1.0) -> list[list[tuple[str, float]]]:
    """For each image, the k most likely classes as (name, probability) at the given temperature."""
    probabilities = torch.softmax(predict(model, images) / temperature, dim=1)
    values, indices = probabilities.topk(k, dim=1)
    return [[(CLASS_NAMES[i], float(p)) for p, i in zip(row_values, row_indices)]
            for row_values, row_indices in zip(values.tolist(), indices.tolist())]


def attack_images(model: torch.nn.Module, images: torch.Tensor, attack: str, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """uint8 images -> float adversarial images in [0, 1], untargeted, against the model's own prediction."""
    x = images.float() / 255
    labels = predict(model, x).argmax(dim=1)
    if attack == "fgsm":
        return fgsm(model, x, labels, eps)
    return ifgsm(model, x, labels, eps, alpha, steps)


def example_pool(run: Run, train, pool_size: int = 48) -> dict:
    """A seeded pool of training indices, half poisoned, with their images as the defender received them
    (the run's stored poisons, never re-made)."""
    delivered = run.poisons(train)
    rng = np.random.default_rng(run.config.seed)
    mask = run.poison_mask.numpy()
    poisoned = np.flatnonzero(mask)
    clean = np.flatnonzero(~mask)
    half = pool_size // 2
    chosen = np.concatenate([rng.choice(poisoned, min(half, len(poisoned)), replace=False),
                             rng.choice(clean, min(pool_size - min(half, len(poisoned)), len(clean)), replace=False)])
    index = torch.from_numpy(np.sort(chosen))
    return {"index": index.numpy(), "clean": train.images[index], "delivered": delivered.data.images[index],
            "is_poisoned": run.poison_mask[index].numpy(), "labels": delivered.data.labels[index]}


def student_test_subset(run: Run, test, share: float = 0.15):
    """The stratified test subset the threshold sweep measured students on (same seed)."""
    from core.data import stratified_split

    _, index = stratified_split(test.labels, share, sampling_seed(run.config.seed, "sweep_test"))
    return test.subset(index)


# ---- the detector comparison (python -m core compare) --------------------------------------------

SHIPPED_COMPARISON = Path(__file__).resolve().parents[1] / "checkpoints" / "compare" / "compare.json"
COMPARISON_COLUMNS = (("auroc", "ROC AUC"), ("precision", "precision"), ("recall", "recall"), ("clean_acc", "clean"),
                      ("ifgsm_acc", "I-FGSM"), ("adaptive_acc", "worst case"), ("attack_success_rate", "attack success"))


def load_comparison(path: str | Path = SHIPPED_COMPARISON) -> dict:
    """compare.json; a missing or corrupt file raises CheckpointError saying how to make it."""
    path = Path(path)
    try:
        comparison = json.loads(path.read_text())
        comparison["summary"], comparison["runs"]  # noqa: B018 - the two keys every reader needs
    except FileNotFoundError:
        raise CheckpointError(f"no comparison at {path}: run `python -m core compare --seeds 3 --out {path.parent}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is corrupt or from another tool ({error}); rerun `python -m core compare`") from None
    return comparison


def _mean_std(stat: dict | None, percent: bool) -> str:
    if not stat:
        return "-"
    if percent:
        return f"{stat['mean']:.1%} ± {stat['std'] * 100:.1f}" if stat["n"] > 1 else f"{stat['mean']:.1%}"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["n"] > 1 else f"{stat['mean']:.3f}"


def comparison_rows(threat_summary: dict, labels: dict[str, str]) -> list[dict]:
    """One row per model of a threat's summary (reference models, then each filter), numbers as 'mean ± std'."""
    detection = ("auroc", "precision", "recall")
    rows = []
    for name, metrics in threat_summary["reference"].items():
        row = {"model": name.replace("_", " "), "filter": "-"}
        for key, title in COMPARISON_COLUMNS:
            row[title] = "-" if key in detection else _mean_std(metrics.get(key), percent=True)
        rows.append(row)
    for name, quality in threat_summary["filters"].items():
        student = quality.get("student") or {}
        row = {"model": "student at T" if student else "(scored only)", "filter": labels.get(name, name)}
        for key, title in COMPARISON_COLUMNS:
            row[title] = _mean_std(quality.get(key), percent=False) if key in detection else _mean_std(student.get(key), percent=True)
        rows.append(row)
    if "attack_success_rate" not in threat_summary["reference"]["undefended"]:
        for row in rows:
            row.pop("attack success")
    return rows
