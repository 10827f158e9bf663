"""`python -m core verify`: recompute a stratified sample of a finished run's headline numbers from the models and
poisons stored with it, and say which do not reproduce.

Checks, each with its tolerance (stated here and printed):
- poisons: the stored poisoned rows fit the data split, stay inside the eps-ball, and match results.json's counts;
- DAE scores: the stored DAE rescores a stratified sample of the stored training set to within 1e-6 (MSE);
  the stored threshold follows from the stored scores by the run's rule; the filter counts and ROC AUC follow
  from scores and threshold exactly;
- one more detector: the shipped noise-residual detector rescores a sample to within 1e-3 (logit units) and its
  ROC AUC in detectors.json follows from the stored scores exactly;
- accuracies: each model's stored per-image record (clean, FGSM, I-FGSM) averages to results.json's number
  exactly, and the model, re-attacked on a stratified sample of the test set, is right on the same images: at
  most 0.2% of the sample may disagree for clean accuracy and 1% under attack (sign-gradient attacks flip on
  float noise where a gradient component is near zero; on the machine type that made the run none should).
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from core.detectors.detect import SupervisedDetector, infer_threshold_from_scores, reconstruction_error
from core.engine.data import stratified_split
from core.engine.recipe import sampling_seed
from core.engine.registry import THREATS
from core.engine.stats import summarise
from core.engine.storage import CheckpointError
from core.engine.train import predict
from core.experiments.evaluate import attack_test_index, correct_per_image, filter_quality
from core.experiments.pipeline import EVALUATION_FILE, MODEL_NAMES
from core.experiments.run import Run

SCORE_TOLERANCE = 1e-6  # absolute, per-image DAE MSE
DETECTOR_TOLERANCE = 1e-3  # absolute, noise-residual detector logit difference
EXACT = 1e-9  # numbers that follow from stored files by arithmetic
DISAGREEMENT_TOLERANCE = {"clean_acc": 0.002, "fgsm_acc": 0.01, "ifgsm_acc": 0.01}  # share of sampled test images


def check(name: str, stored: float, recomputed: float, tolerance: float, error: float | None = None) -> dict:
    """One verified number: ok when |error| <= tolerance (error defaults to recomputed - stored)."""
    error = recomputed - stored if error is None else error
    return {
        "name": name,
        "stored": float(stored),
        "recomputed": float(recomputed),
        "tolerance": tolerance,
        "error": float(error),
        "ok": bool(abs(error) <= tolerance),
    }


def verify_run(run: Run, sample: float = 0.1, data_root=None, download: bool = False, progress=None) -> list[dict]:
    """Every check above; returns them as dicts (name, stored, recomputed, tolerance, error, ok)."""
    if not 0 < sample <= 1:
        raise ValueError(f"--sample must be in (0, 1], got {sample}")
    report = progress or (lambda stage, done, total: None)
    results, config = run.results, run.config
    splits = run.splits(data_root, download)
    poisoned = run.poisons(splits.train)
    checks = []

    # Poisons: counts and the eps-ball.
    changed = (poisoned.data.images.int() - splits.train.images.int()).abs().flatten(1).amax(dim=1)
    checks.append(check("poisons: number poisoned", results["poison"]["n_poisoned"], poisoned.n_poisoned, EXACT))
    checks.append(
        check(
            "poisons: largest change (grey levels)",
            results["poison"]["linf_levels"],
            int(changed[poisoned.poison_mask].max()) if poisoned.n_poisoned else 0,
            EXACT,
        )
    )
    if "attack" in THREATS[config.poison.threat].params:  # poisons crafted with an attack, quantised toward the image
        allowed = int(config.poison.eps * 255 + 1e-6)
        checks.append(
            check("poisons: inside the eps-ball (levels over)", 0, max(0, int(changed.max()) - allowed), EXACT)
        )
        checks.append(
            check(
                "poisons: clean rows untouched (rows changed)",
                0,
                int((changed[~poisoned.poison_mask] > 0).sum()),
                EXACT,
            )
        )

    # DAE scores, threshold, filter counts and AUC.
    _, train_sample = stratified_split(splits.train.labels, sample, sampling_seed(config.seed, "verify"))
    report("verify: DAE scores", 0, 1)
    rescored = reconstruction_error(run.autoencoder(), poisoned.data.images[train_sample])
    stored = run.train_scores[train_sample]
    worst = float((rescored - stored).abs().max())
    checks.append(check(f"DAE scores: {len(train_sample)} training images (max |diff|)", 0.0, worst, SCORE_TOLERANCE))
    report("verify: DAE scores", 1, 1)
    threshold = _threshold_from_scores(run)
    checks.append(check("threshold from the stored scores", run.threshold, threshold, EXACT * max(1.0, run.threshold)))
    dropped = run.train_scores > run.threshold
    quality = filter_quality(run.train_scores, dropped, run.poison_mask, run.threshold)
    for key in ("kept_clean", "kept_poisoned", "dropped_clean", "dropped_poisoned", "auroc"):
        checks.append(check(f"filter {key}", results["filter"][key], quality[key], EXACT))

    # One more detector: the shipped supervised noise-residual detector.
    checks += _detector_checks(run, poisoned.data.images, train_sample)

    # Accuracies: stored per-image records, and a stratified test sample re-attacked.
    records = _per_image_records(run)
    _, test_sample = stratified_split(splits.test.labels, sample, sampling_seed(config.seed, "verify"))
    test = splits.test.subset(test_sample)
    # The attacks ran on a stratified share of the test set: re-attack as many of those images as the clean sample
    # holds (positions into the attacked records).
    attack_index = attack_test_index(splits.test.labels, config.eval_attack.test_subset, config.seed)
    attack_share = min(1.0, len(test_sample) / len(attack_index))
    _, attack_sample = stratified_split(
        splits.test.labels[attack_index], attack_share, sampling_seed(config.seed, "verify")
    )
    for number, name in enumerate(MODEL_NAMES):
        report("verify: accuracies", number, len(MODEL_NAMES))
        model = run.classifier(name)
        recomputed = correct_per_image(model, splits.test.subset(attack_index[attack_sample]), config.eval_attack)
        recomputed["clean_acc"] = predict(model, test.images).argmax(dim=1) == test.labels
        for key, correct in recomputed.items():
            record = records[f"{name}/{key}"]
            sample_of = test_sample if key == "clean_acc" else attack_sample
            checks.append(
                check(
                    f"{name} {key}: record vs results.json",
                    results["models"][name][key],
                    float(record.float().mean()),
                    EXACT,
                )
            )
            disagree = float((record[sample_of] != correct).float().mean())
            checks.append(
                check(
                    f"{name} {key}: {len(correct)} test images",
                    float(record[sample_of].float().mean()),
                    float(correct.float().mean()),
                    DISAGREEMENT_TOLERANCE[key],
                    error=disagree,
                )
            )
    report("verify: accuracies", len(MODEL_NAMES), len(MODEL_NAMES))
    return checks


def _threshold_from_scores(run: Run) -> float:
    """The run's threshold rule applied to its stored scores (alibi-detect's infer_threshold semantics)."""
    rule = run.config.threshold
    if rule.mode == "fixed":
        return rule.value
    if rule.mode == "fpr":
        return infer_threshold_from_scores(run.calibration_scores, rule.fpr)
    return infer_threshold_from_scores(run.train_scores, rule.expected_poison)


def _per_image_records(run: Run) -> dict[str, torch.Tensor]:
    path = run.directory / EVALUATION_FILE
    try:
        return {key: value.bool() for key, value in load_file(str(path)).items()}
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing: runs made before per-image records were stored cannot be verified; "
            f"rerun `python -m core run --out {run.directory}`"
        ) from None
    except Exception as error:  # noqa: BLE001 - truncated or foreign file
        raise CheckpointError(
            f"{path} is corrupt ({error}); rerun `python -m core run --out {run.directory}`"
        ) from None


def _detector_checks(run: Run, train_images: torch.Tensor, sample: torch.Tensor) -> list[dict]:
    if not run.detectors or "supervised" not in run.score_names():
        return []
    model = run.supervised_detector()
    if model is None:
        return []
    stored = run.scores_of("supervised")
    rescored = SupervisedDetector(model, device=torch.device("cpu")).score(train_images[sample])
    quality = run.detectors["detectors"]["supervised"]
    dropped = stored > quality["threshold"]
    recomputed_auc = filter_quality(stored, dropped, run.poison_mask, quality["threshold"])["auroc"]
    return [
        check(
            f"supervised detector scores: {len(sample)} images (max |diff|)",
            0.0,
            float((rescored - stored[sample]).abs().max()),
            DETECTOR_TOLERANCE,
        ),
        check("supervised detector ROC AUC from stored scores", quality["auroc"], recomputed_auc, EXACT),
        check(
            "supervised detector: poisons dropped",
            quality["dropped_poisoned"],
            int(np.count_nonzero(dropped.numpy() & run.poison_mask.numpy())),
            EXACT,
        ),
    ]


def verify_comparison(comparison: dict) -> list[dict]:
    """compare.json ships no models (recomputing a cell retrains ~12 classifiers: `python -m core compare`); what
    follows from the file itself is checked: every mean +- std follows from the per-seed runs, and every control
    drops what it claims (oracle: exactly the poisons; random: as many as the DAE filter; none: nothing)."""
    checks = []
    recomputed = summarise(comparison["runs"])
    mismatched = _count_mismatches(comparison["summary"], recomputed)
    checks.append(check("summary = mean / std of the per-seed runs (numbers differing)", 0, mismatched, EXACT))
    for seed, threats in comparison["runs"].items():
        for threat, cell in threats.items():
            poison, filters = cell["poison"], cell["filters"]
            where = f"seed {seed} {threat}"
            checks.append(check(f"{where}: oracle recall", 1.0, filters["oracle"]["recall"], EXACT))
            checks.append(check(f"{where}: oracle precision", 1.0, filters["oracle"]["precision"], EXACT))
            if "n_kept" in filters["random"]:
                checks.append(
                    check(
                        f"{where}: random filter keeps n_train - n_drop",
                        poison["n_train"] - poison["n_drop"],
                        filters["random"]["n_kept"],
                        EXACT,
                    )
                )
            if "n_kept" in filters["none"]:
                checks.append(
                    check(f"{where}: no filter keeps everything", poison["n_train"], filters["none"]["n_kept"], EXACT)
                )
    return checks


def _count_mismatches(stored, recomputed) -> int:
    if isinstance(stored, dict) and isinstance(recomputed, dict):
        if set(stored) != set(recomputed):
            return 1 + sum(_count_mismatches(stored[key], recomputed[key]) for key in set(stored) & set(recomputed))
        return sum(_count_mismatches(stored[key], recomputed[key]) for key in stored)
    if isinstance(stored, float) and isinstance(recomputed, float):
        return int(abs(stored - recomputed) > EXACT)
    return int(stored != recomputed)
