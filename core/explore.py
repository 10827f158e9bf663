"""What the app computes, without Streamlit: the threshold view, uploads, sample pools, the comparison table.

Everything here takes and returns plain tensors, arrays and dicts so the app can cache it by small
config values. A finished run is a core.run.Run.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from sklearn.metrics import precision_recall_curve, roc_curve

from core.data import CLASS_NAMES, IMAGE_SIZE
from core.recipe import sampling_seed
from core.registry import ATTACKS, DEFENCES
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


def example_indices(
    scores: np.ndarray, poison_mask: np.ndarray, threshold: float, per_group: int = 8, seed: int = 0
) -> dict[str, np.ndarray]:
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
    """Bytes of an image file -> uint8 (3, 32, 32) as a person would see the file: EXIF rotation applied, deep and
    float images scaled to 8 bits, transparency over white. Raises UploadError with a clear message."""
    if not data:
        raise UploadError(f"{name} is empty: upload a PNG, JPEG, PPM or WebP image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise UploadError(
                    f"{name} is {width}x{height} pixels, over the {MAX_UPLOAD_PIXELS:,}-pixel limit: resize it first"
                )
            image.load()  # decodes fully: truncated files fail here
            upright = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
            rgb = as_rgb8(upright, name).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    except UploadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise UploadError(f"{name} is not an image we can read: upload a PNG, JPEG, PPM or WebP file") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as error:  # what PIL's decoders raise
        raise UploadError(f"{name} could not be decoded ({error}); it may be truncated or corrupt") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def as_rgb8(image: Image.Image, name: str = "upload") -> Image.Image:
    """Any mode PIL opens -> 8-bit RGB. PIL's own convert("RGB") clips 16-bit grey to 255 (a 16-bit PNG comes out
    white) and float images to 0 or 1, so those are scaled here: 16-bit by 65535, 32-bit integers the same when they
    fit in 16 bits (else by their range), floats from [0, 1] when they lie in it (else by their range)."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if mode == "F" and low >= 0 and high <= 1:
            low, high = 0.0, 1.0
        elif mode != "F" and low >= 0 and high <= 65535:
            low, high = 0.0, 65535.0
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    try:
        if mode in TRANSPARENT_MODES or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")  # transparent areas look white, as in viewers
        return image.convert("RGB")
    except ValueError:
        raise UploadError(f"{name} has colour mode {mode}, which we cannot convert: save it as an RGB PNG") from None


def top_classes(
    model: torch.nn.Module, images: torch.Tensor, k: int = 5, temperature: float = 1.0
) -> list[list[tuple[str, float]]]:
    """For each image, the k most likely classes as (name, probability) at the given temperature."""
    probabilities = torch.softmax(predict(model, images) / temperature, dim=1)
    values, indices = probabilities.topk(k, dim=1)
    return [
        [(CLASS_NAMES[i], float(p)) for p, i in zip(row_values, row_indices)]
        for row_values, row_indices in zip(values.tolist(), indices.tolist())
    ]


def attack_images(
    model: torch.nn.Module, images: torch.Tensor, attack: str, eps: float, alpha: float, steps: int, seed: int = 0
) -> torch.Tensor:
    """uint8 images -> float adversarial images in [0, 1] with a registered attack, untargeted, against the
    model's own prediction."""
    x = images.float() / 255
    labels = predict(model, x).argmax(dim=1)
    return ATTACKS[attack].run(model, x, labels, eps, alpha, steps, generator=torch.Generator().manual_seed(seed))


def reconstruction_view(autoencoder: torch.nn.Module, images: torch.Tensor) -> dict:
    """For uint8 or [0, 1] images: the DAE's reconstructions, each image's MSE, and an error map as RGB in [0, 1]
    (blue: low, red: high; per-pixel squared error averaged over colour, scaled to the batch's largest)."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    reconstruction = predict(autoencoder, x)
    error = ((reconstruction - x) ** 2).mean(dim=1)
    heat = (error / (float(error.max()) or 1.0)).clamp(0, 1)
    return {
        "input": x,
        "reconstruction": reconstruction,
        "mse": ((reconstruction - x) ** 2).flatten(1).mean(dim=1),
        "error_map": torch.stack([heat, torch.zeros_like(heat), 1 - heat], dim=1),
    }


def image_verdicts(
    x: torch.Tensor, run: Run, autoencoder, student, undefended, residual_model, dae_threshold: float, k: int = 5
) -> dict:
    """Everything Your images shows for one image in [0, 1] (3, 32, 32): the DAE's view and verdict at dae_threshold,
    the noise-residual detector's verdict at the run's threshold (when the run ships one), both models' top-k."""
    from core.detect import SupervisedDetector

    x = x.float() / 255 if x.dtype == torch.uint8 else x
    view = reconstruction_view(autoencoder, x.unsqueeze(0))
    mse = float(view["mse"][0])
    verdicts = {
        "reconstruction": view["reconstruction"][0],
        "error_map": view["error_map"][0],
        "mse": mse,
        "dae_dropped": mse > dae_threshold,
        "student_top": top_classes(student, x.unsqueeze(0), k)[0],
        "undefended_top": top_classes(undefended, x.unsqueeze(0), k)[0],
    }
    if residual_model is not None:
        residual = float(SupervisedDetector(residual_model, device=torch.device("cpu")).score(x.unsqueeze(0))[0])
        verdicts.update(residual=residual, residual_flagged=residual > run.threshold_of("supervised"))
    if run.abstention and run.abstention.get("model", "filter_distillation") == "filter_distillation":
        verdicts.update(student_abstention(student, x, run.abstention))
    return verdicts


def student_abstention(student, x: torch.Tensor, abstention: dict) -> dict:
    """The student's MC-dropout verdict on one image in [0, 1] at the run's cut-off (`python -m core abstain`
    calibrated it on trusted clean images at 5% false abstentions): a softmax of 0.9998 says little on its own."""
    from core.abstain import expected_kl, mc_dropout_probabilities

    config = abstention["config"]
    probabilities = mc_dropout_probabilities(student, x.unsqueeze(0), config["passes"], config["seed"])
    mean = probabilities.mean(dim=0)[0]
    disagreement = float(expected_kl(probabilities)[0])
    return {
        "disagreement": disagreement,
        "abstain": disagreement > abstention["cutoff"],
        "mc_class": CLASS_NAMES[int(mean.argmax())],
        "mc_probability": float(mean.max()),
        "abstention_fpr": config["fpr"],
    }


def format_probability(p: float) -> str:
    """0.99984 -> '0.9998', 3e-6 -> '<1e-4': four decimals, without pretending to more."""
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def poison_preview(train, surrogate: torch.nn.Module, classes: list[int], per_class: int, config) -> dict:
    """A few training images of the chosen classes poisoned with config (seeded choice): clean, poisoned, the
    perturbation amplified to [0, 1] for display, its size, and the surrogate's accuracy before and after."""
    from core.evaluate import accuracy
    from core.poison import craft, quantise_toward

    rng = np.random.default_rng(config.seed)
    labels_np = train.labels.numpy()
    index = [int(i) for c in classes for i in rng.choice(np.flatnonzero(labels_np == c), per_class, replace=False)]
    index = torch.tensor(index, dtype=torch.long)
    clean, labels = train.images[index], train.labels[index]
    if config.threat == "perturbation":
        poisoned = quantise_toward(clean, craft(surrogate, clean, labels, config), config.eps)
    else:  # any other surrogate threat (TAP, unlearnable), applied to just these images
        from core.data import ImageSet
        from core.poison import poison_training_set

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
    from core.poison import poison_training_set

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


def sweep_steps(run: Run) -> int:
    """Optimiser steps per teacher and per student at any threshold: the run's sweep's, else the run's recipe on
    all of train (core.sweep.fixed_steps), so a point trained here is comparable with the sweep's."""
    from core.sweep import fixed_steps

    return run.sweep["config"]["steps"] if run.sweep else fixed_steps(run.config, len(run.poison_mask))


def point_images(run: Run) -> dict[str, int]:
    """How many images a point at any threshold trains and measures on (core.live.point_seconds): all of train (an
    upper bound on what is kept), and the test sets of the run's sweep, else of a default sweep."""
    from core.sweep import SweepConfig, point_image_counts

    if run.sweep:
        settings = run.sweep["config"]
        n_test = settings["n_test"]
        return {
            "kept": settings["n_train"],
            "test": n_test,
            "attack_test": settings.get("n_attack_test", n_test),
            "robust_test": settings["n_robust_test"],
        }
    return point_image_counts(len(run.poison_mask), run.results["data"]["n_test"], SweepConfig())


def sweep_robust_steps(run: Run) -> int:
    """Iterations of the adaptive attacks a point is measured with: the run's sweep's, else a default sweep's."""
    from core.sweep import SweepConfig

    return run.sweep["config"]["robust_steps"] if run.sweep else SweepConfig().robust_steps


def train_at_threshold(
    run: Run, splits, score: str, threshold: float, temperature: float, steps: int, progress=None, should_stop=None
) -> tuple[dict, torch.nn.Module]:
    """Teacher and student at T on the run's stored training samples whose `score` is at most threshold, `steps`
    optimiser steps each, measured like the sweep (its test subset, the run's paper-style attacks).
    Returns (point, student)."""
    from core.sweep import StudentTests, SweepConfig, distil_at_threshold, measure_student

    poisoned = run.poisons(splits.train)
    _, student, kept = distil_at_threshold(
        poisoned.data, run.scores_of(score), threshold, run.config, steps, temperature, progress, should_stop
    )
    if progress is not None:
        progress("measuring the student (clean, FGSM, I-FGSM, adaptive worst case)", 0, 1)
    settings = run.sweep["config"] if run.sweep else asdict(SweepConfig())
    test = student_test_subset(run, splits.test, settings["test_subset"])
    # version-2 sweeps attacked their whole test subset
    tests = StudentTests.of(
        test, settings.get("attack_test_subset", 1.0), settings["robust_test_subset"], run.config.seed
    )
    point = {
        "score": score,
        "threshold": threshold,
        "temperature": temperature,
        "steps": steps,
        "kept": int(kept.sum()),
        **measure_student(student, tests, run.config, settings["robust_steps"]),
    }
    return point, student


def mean_reconstruction_error(autoencoder: torch.nn.Module, images: torch.Tensor) -> float:
    from core.detect import reconstruction_error

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


def student_test_subset(run: Run, test, share: float = 1.0):
    """The stratified test subset the threshold sweep measured students' clean accuracy on (same seed)."""
    from core.data import stratified_split

    if share >= 1:
        return test
    _, index = stratified_split(test.labels, share, sampling_seed(run.config.seed, "sweep_test"))
    return test.subset(index)


# ---- the detector comparison (python -m core compare) --------------------------------------------

SHIPPED_COMPARISON = Path(__file__).resolve().parents[1] / "checkpoints" / "compare" / "compare.json"
# Every shipped comparison the Detectors page offers, by what it compares (the first is the default).
SHIPPED_COMPARISONS = {
    "every threat: the paper's DAE and our detectors": SHIPPED_COMPARISON,
    "backdoor: the field's detectors (spectral signatures, activation clustering)": SHIPPED_COMPARISON.parents[1]
    / "compare_backdoor"
    / "compare.json",
}
COMPARISON_COLUMNS = (
    ("auroc", "ROC AUC"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("clean_acc", "clean"),
    ("ifgsm_acc", "I-FGSM"),
    ("adaptive_acc", "worst case"),
    ("attack_success_rate", "attack success"),
)


def load_comparison(path: str | Path = SHIPPED_COMPARISON) -> dict:
    """compare.json; a missing or corrupt file raises CheckpointError saying how to make it."""
    path = Path(path)
    try:
        comparison = json.loads(path.read_text())
        comparison["summary"], comparison["runs"]  # noqa: B018 - the two keys every reader needs
    except FileNotFoundError:
        raise CheckpointError(
            f"no comparison at {path}: run `python -m core compare --seeds 3 --out {path.parent}`"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path} is corrupt or from another tool ({error}); rerun `python -m core compare`"
        ) from None
    return comparison


def _mean_std(stat: dict | None, percent: bool) -> str:
    if not stat:
        return "-"
    if percent:
        return f"{stat['mean']:.1%} ± {stat['std'] * 100:.1f}" if stat["n"] > 1 else f"{stat['mean']:.1%}"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["n"] > 1 else f"{stat['mean']:.3f}"


def comparison_rows(threat_summary: dict) -> list[dict]:
    """One row per model of a threat's summary (reference models, then each filter), numbers as 'mean ± std'."""
    from core.detect import filter_label

    detection = ("auroc", "precision", "recall")
    rows = []
    for name, metrics in threat_summary["reference"].items():
        row = {"model": name.replace("_", " "), "filter": "-"}
        for key, title in COMPARISON_COLUMNS:
            row[title] = "-" if key in detection else _mean_std(metrics.get(key), percent=True)
        rows.append(row)
    for name, quality in threat_summary["filters"].items():
        student = quality.get("student") or {}
        row = {"model": "student at T" if student else "(scored only)", "filter": filter_label(name)}
        for key, title in COMPARISON_COLUMNS:
            row[title] = (
                _mean_std(quality.get(key), percent=False)
                if key in detection
                else _mean_std(student.get(key), percent=True)
            )
        rows.append(row)
    if "attack_success_rate" not in threat_summary["reference"]["undefended"]:
        for row in rows:
            row.pop("attack success")
    return rows


# ---- the threat x defence grid (python -m core defences) -----------------------------------------

SHIPPED_DEFENCE_GRID = Path(__file__).resolve().parents[1] / "checkpoints" / "defences" / "defences.json"
# Published clean accuracies on CIFAR-10 / ResNet-18 at eps 8/255, all of train poisoned (issue 10's anchors), shown
# beside ours: different data and model, so they say what to expect, not what to match.
ANCHORS = {
    "tap": {"clean_reference": "94.7%", "none": "8.2%", "jpeg": "83.9%", "grayscale": "9.1%"},
    "unlearnable": {"none": "21.1%", "jpeg": "81.5%", "grayscale": "93.0%"},
}
REFERENCE_LABELS = {"clean_reference": "clean reference", "none": "no defence", "oracle": "oracle (poisons removed)"}
GRID_COLUMNS = (("clean_acc", "clean"), ("adaptive_acc", "worst case"), ("attack_success_rate", "attack success"))


def load_defence_grid(path: str | Path = SHIPPED_DEFENCE_GRID) -> dict | None:
    """defences.json, or None when there is none; a corrupt file raises CheckpointError saying how to remake it."""
    path = Path(path)
    try:
        grid = json.loads(path.read_text())
        grid["summary"], grid["runs"], grid["config"], grid["case_seeds"]  # noqa: B018 - the keys every reader needs
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path} is corrupt or from another tool ({error}); rerun `python -m core defences`"
        ) from None
    return grid


def case_label(grid: dict, case: str) -> str:
    """A threat case as a user reads it: 'TAP, 8/255 on 100%' from the settings the grid stored."""
    from core.registry import THREATS

    settings = grid["config"]["case_settings"][case]
    label = THREATS.label(settings["threat"]).split(":")[0]
    if settings["threat"] in ("label_flip", "backdoor"):
        return f"{label}, {settings['fraction']:.0%}"
    return f"{label}, {settings['eps'] * 255:.1f}/255 on {settings['fraction']:.0%}"


def defence_rows(case: str, case_summary: dict) -> list[dict]:
    """One row per reference model and defence of a case: 'mean ± std' over seeds, and the published anchor."""
    anchors = ANCHORS.get(case, {})
    has_asr = "attack_success_rate" in (case_summary["models"].get("none") or {})
    rows = []
    for name, metrics in case_summary["models"].items():
        row = {"model": DEFENCES.label(name) if name in DEFENCES else REFERENCE_LABELS.get(name, name)}
        for key, title in GRID_COLUMNS:
            if key != "attack_success_rate" or has_asr:
                row[title] = _mean_std((metrics or {}).get(key), percent=True) if metrics else "n/a (all poisoned)"
        row["published (CIFAR-10)"] = anchors.get(name, "")
        rows.append(row)
    return rows


def best_defence(case_summary: dict) -> tuple[str, float] | None:
    """The registered defence with the highest mean clean accuracy in a case (references excluded)."""
    scored = [
        (name, metrics["clean_acc"]["mean"])
        for name, metrics in case_summary["models"].items()
        if name in DEFENCES and metrics and metrics.get("clean_acc")
    ]
    return max(scored, key=lambda item: item[1]) if scored else None


def shipped_damage(grid: dict, threat: str) -> dict | None:
    """What the shipped grid measured for the first case of `threat`: clean accuracy of the clean reference, of no
    defence, and of the best defence."""
    for case, summary in grid["summary"].items():
        settings = grid["config"]["case_settings"].get(case, {})
        if settings.get("threat") != threat:
            continue
        models = summary["models"]
        best = best_defence(summary)
        if not (models.get("none") and models.get("clean_reference") and best):
            return None
        return {
            "case": case,
            "eps": settings["eps"],
            "fraction": settings["fraction"],
            "n_seeds": grid["case_seeds"][case],
            "preset": grid["config"]["experiment"]["preset"],
            "clean_reference": models["clean_reference"]["clean_acc"]["mean"],
            "none": models["none"]["clean_acc"]["mean"],
            "best": DEFENCES.label(best[0]),
            "best_acc": best[1],
        }
    return None


def purify_preview(autoencoder: torch.nn.Module, images: torch.Tensor, sigma: float, seed: int = 0) -> dict:
    """A few delivered training images through the purify defence, DAE(x + sigma * noise): the images, their
    purified versions, the difference amplified around grey, and the mean absolute change in grey levels."""
    from core.defences import purify

    purified = purify(autoencoder, images, sigma, seed)
    difference = purified.float() - images.float()
    scale = max(float(difference.abs().max()), 1.0)
    return {
        "images": images,
        "purified": purified,
        "amplified": (difference / (2 * scale) + 0.5).clamp(0, 1),
        "mean_change_levels": float(difference.abs().mean()),
    }


# ---- budget curves (python -m core budget) ---------------------------------------------------------

SHIPPED_BUDGET = Path(__file__).resolve().parents[1] / "checkpoints" / "budget" / "budget.json"


def load_budget(path: str | Path = SHIPPED_BUDGET) -> dict | None:
    """budget.json (threat -> curves), or None when there is none; a corrupt file raises CheckpointError. Older
    files (one defence per point; no smooth-scale axis) are read into today's shape."""
    path = Path(path)
    try:
        curves = json.loads(path.read_text())
        for curve in curves.values():
            if "defence" in curve["config"]:  # a file from before several defences per point: one defence
                name = curve["config"].pop("defence")
                curve["config"]["defences"] = [name]
                for point in curve["eps"] + curve["fraction"]:
                    point["defended"] = {name: point["defended"]}
            curve.setdefault("smooth_scale", [])  # a file from before the smooth-scale axis: per-pixel poisons
            curve["config"].setdefault("smooth_scales", [])
            for point in budget_points(curve):
                point.setdefault("smooth_scale", 1)
                [point[key] for key in ("eps", "fraction", "undefended", "clean_reference")]
                [point["defended"][name] for name in curve["config"]["defences"]]
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{path} is corrupt or from another tool ({error}); rerun `python -m core budget`"
        ) from None
    return curves


# An axis of a budget curve: the config key listing its planned values, and the chart's x title given one of its
# points (each axis holds the others at the threat's defaults: the title says at what).
BUDGET_AXES = {
    "eps": ("eps_levels", lambda point: f"eps in grey levels (on {point['fraction']:.0%} of train)"),
    "fraction": ("fractions", lambda point: f"poisoned share (eps {point['eps'] * 255:.0f}/255)"),
    "smooth_scale": (
        "smooth_scales",
        lambda point: f"smooth scale: px per cell ({point['eps'] * 255:.0f}/255, {point['fraction']:.0%})",
    ),
}


def budget_points(curve: dict) -> list[dict]:
    """Every measured point of a curve, axis after axis (the shared default point once per axis)."""
    return [point for axis in BUDGET_AXES for point in curve.get(axis, [])]


def budget_progress(curve: dict) -> tuple[int, int]:
    """(points measured, points the run set out to measure); files from before the plan was stored count as done."""
    measured = len(budget_points(curve))
    planned = sum(len(curve["config"].get(key, curve.get(axis, []))) for axis, (key, _) in BUDGET_AXES.items())
    return measured, planned
