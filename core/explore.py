"""What the app computes, without Streamlit: loading a finished run, the threshold view, uploads.

Everything here takes and returns plain tensors, arrays and dicts so the app can cache it by small
config values. A finished run is a folder written by `export_run` (results.json, scores.safetensors,
one safetensors + JSON per model) and optionally `sweep.json`.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file
from sklearn.metrics import precision_recall_curve, roc_curve

from core.attacks import fgsm, ifgsm
from core.data import CLASS_NAMES, IMAGE_SIZE
from core.models import Classifier, DenoisingAutoencoder
from core.pipeline import ExperimentConfig
from core.recipe import outdated_stages, sampling_seed
from core.storage import CheckpointError, load_weights
from core.train import predict

SHIPPED_RUN = Path(__file__).resolve().parents[1] / "checkpoints" / "paper"
MAX_UPLOAD_PIXELS = 4096 * 4096  # larger images are refused before decoding (decompression bombs)


class UploadError(ValueError):
    """An uploaded file that is not a usable image; the message says what to do."""


@dataclass
class RunView:
    """A finished run as read from disk."""

    directory: Path
    results: dict
    config: ExperimentConfig
    train_scores: torch.Tensor  # reconstruction error per training image
    poison_mask: torch.Tensor  # bool, ground truth: only for scoring the filter
    calibration_scores: torch.Tensor
    sweep: dict | None
    robustness: dict | None = None  # robustness.json from `python -m core robustness`, if run
    detectors: dict | None = None  # detectors.json from `python -m core detectors`, if run
    abstention: dict | None = None  # abstention.json from `python -m core abstain`, if run

    @property
    def outdated(self) -> list[str]:
        """Stages whose recipe changed since this run was made (its numbers stand; retraining from it uses the
        current recipe)."""
        return outdated_stages(self.results.get("recipe_versions"))

    def score_names(self) -> list[str]:
        """'dae' (always there) and every other detector scored on this run."""
        extra = [name for name in (self.detectors or {}).get("detectors", {}) if name != "dae"]
        return ["dae"] + [name for name in extra if (self.directory / "detector_scores.safetensors").exists()]

    def scores_of(self, name: str) -> torch.Tensor:
        """Training-set scores of a detector; 'dae' is the run's own reconstruction error."""
        if name == "dae":
            return self.train_scores
        try:
            return load_file(str(self.directory / "detector_scores.safetensors"))[name]
        except Exception as error:  # missing file, missing key, corrupt file
            raise CheckpointError(f"no '{name}' scores in {self.directory}: run `python -m core detectors "
                                  f"--run-dir {self.directory}` ({error})") from None

    def threshold_of(self, name: str) -> float:
        """The run's threshold for a detector (the same ThresholdConfig applied to its scores)."""
        if name == "dae":
            return self.threshold
        return float(self.detectors["detectors"][name]["threshold"])

    @property
    def threshold(self) -> float:
        return float(self.results["filter"]["threshold"])


def load_run(directory: str | Path = SHIPPED_RUN) -> RunView:
    """Read a run folder; a missing or corrupt file raises CheckpointError with what to do."""
    directory = Path(directory)
    results_path = directory / "results.json"
    try:
        results = json.loads(results_path.read_text())
        config = ExperimentConfig.from_dict(results["config"])
    except FileNotFoundError:
        raise CheckpointError(f"no results.json in {directory}: run `python -m core run --out {directory}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{results_path} is corrupt or from another tool ({error}); rerun the experiment") from None
    try:
        scores = load_file(str(directory / "scores.safetensors"))
    except Exception as error:
        raise CheckpointError(f"{directory / 'scores.safetensors'} is missing or corrupt ({error})") from None
    return RunView(directory, results, config, scores["train_scores"], scores["poison_mask"].bool(),
                   scores["calibration_scores"], _optional_json(directory / "sweep.json"),
                   _optional_json(directory / "robustness.json"), _optional_json(directory / "detectors.json"),
                   _optional_json(directory / "abstention.json"))


def _optional_json(path: Path) -> dict | None:
    """An optional extra of a run; a missing or corrupt one reads as absent (the app says so)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def load_classifier(run: RunView, role: str) -> Classifier:
    return load_weights(run.directory, role, Classifier(run.config.classifier)).eval()


def load_supervised_detector(run: RunView):
    """The run's noise-residual poison detector (`python -m core detectors` ships it), or None."""
    from core.detect import NoiseResidualNet

    if not (run.directory / "supervised_detector.safetensors").exists() or not run.detectors:
        return None
    width = run.detectors["settings"]["supervised"]["width"]
    return load_weights(run.directory, "supervised_detector", NoiseResidualNet(width)).eval()


def load_autoencoder(run: RunView) -> DenoisingAutoencoder:
    return load_weights(run.directory, "dae", DenoisingAutoencoder(run.config.dae.model)).eval()


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


def example_pool(run: RunView, train, pool_size: int = 48) -> dict:
    """A seeded pool of training indices, half poisoned, with their images as the defender received them
    (the run's stored poisons, never re-made)."""
    delivered = run_poisons(run, train)
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


def run_poisons(run: RunView, train):
    """The run's training set as the defender received it, from the poisons stored with the run."""
    from core.pipeline import POISONS_FILE
    from core.poison import load_poisons

    if len(train) != len(run.poison_mask):
        raise CheckpointError(f"the run has {len(run.poison_mask)} training scores but the data split has {len(train)} images: "
                              "GTSRB_ROOT points at a different dataset than the run used")
    poisoned = load_poisons(run.directory / POISONS_FILE, train, run.config.poison)
    if not torch.equal(poisoned.poison_mask, run.poison_mask):
        raise CheckpointError(f"{run.directory / POISONS_FILE} and scores.safetensors disagree on which samples are "
                              "poisoned: the run folder mixes files of two runs")
    return poisoned


def student_test_subset(run: RunView, test, share: float = 0.15):
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
