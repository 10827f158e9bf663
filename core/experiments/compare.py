"""Poison detectors compared with controls, per threat model, over seeds.

For each seed and threat model: poison the train split, build every detector from what the defender
has (trusted set, own classifier, DAE), threshold each the same way (the run's ThresholdConfig, by
default: drop the top 10% of the training set by score), and score it against the ground truth.
Then, for each filter in `distil` (detectors and the three controls: no filter, a random filter
dropping as many samples as the DAE filter, an oracle dropping exactly the poisons), train a teacher
at T and a student on what is left, and measure the student: clean accuracy, paper-style FGSM /
I-FGSM, the adaptive worst case (core.attacks.robust) and the attack success rate where the threat has one.
The clean reference and the undefended model show the damage the poisons do. Every model is cached.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.attacks.robust import RobustEvalConfig, attack_suite
from core.detectors.detect import (
    CONTROLS,
    DAEDetector,
    DetectorContext,
    ScoreDetector,
    ThresholdConfig,
    filter_label,
    oracle_drop_mask,
    random_drop_mask,
    set_detector_threshold,
    supervised_config,
)
from core.engine.data import ImageSet
from core.engine.executor import ExecutorConfig, finished_cells, run_missing_cells, worker_paths
from core.engine.recipe import sampling_seed
from core.engine.registry import DETECTORS, THREATS, checked_knobs, knob_value, stored_knobs
from core.engine.stats import mean_std, summarise
from core.engine.storage import PROJECT_ROOT, ResultFile, atomic_write, save_model
from core.engine.train import machine
from core.experiments.evaluate import filter_quality, robust_test_set, robustness
from core.experiments.pipeline import DefenderStages, ExperimentConfig, ModelCache, Prepared, distilled, prepare
from core.threats.poison import threat_metrics

# The threat models a comparison covers unless told: the paper's and the two with a measurable attack success.
DEFAULT_THREATS = ("perturbation", "label_flip", "backdoor")


@dataclass(frozen=True)
class CompareConfig:
    experiment: ExperimentConfig
    threats: tuple[str, ...] = DEFAULT_THREATS  # any names in core.engine.registry.THREATS
    detectors: tuple[str, ...] | None = None  # scored (cheap) for every threat; None: every registered detector
    distil: tuple[str, ...] | None = None  # filters that also get a teacher + student (expensive); None: all
    seeds: tuple[int, ...] = (0,)
    fractions: dict = field(default_factory=dict)  # per threat; a threat not named uses its spec's default
    robust_test_subset: float = 0.3  # share of the run's test set attacked for the adaptive worst case
    robust_steps: int = 10
    # the detectors' own parameters (DetectorSpec.knobs), "detector.knob" -> value; unset: default. Files hold the set
    # ones, MagNet's and KNN's at the top level (magnet_temperature, knn_k) and the supervised detector's as
    # "supervised": {...}, where they were before they were knobs.
    knobs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "knobs", checked_knobs(self.knobs, {spec.name: spec for spec in DETECTORS.specs()}))
        if self.detectors is None:
            object.__setattr__(self, "detectors", DETECTORS.names())
        if self.distil is None:
            object.__setattr__(self, "distil", CONTROLS + tuple(self.detectors))
        for name, allowed, values in (
            ("threat", THREATS.names(), self.threats),
            ("detector", DETECTORS.names(), self.detectors),
            ("filter", CONTROLS + DETECTORS.names(), self.distil),
        ):
            unknown = [value for value in values if value not in allowed]
            if unknown or not values:
                raise ValueError(f"unknown or missing {name} {unknown}: choose from {', '.join(allowed)}")
        missing = [name for name in self.distil if name in DETECTORS.names() and name not in self.detectors]
        if missing:
            raise ValueError(f"cannot distil behind detectors that are not scored: {missing}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct and at least one")
        if not 0 < self.robust_test_subset <= 1 or self.robust_steps < 1:
            raise ValueError("robust_test_subset must be in (0, 1] and robust_steps >= 1")
        fractions = {threat: THREATS[threat].default_fraction for threat in self.threats}
        fractions.update(self.fractions)
        for threat, fraction in fractions.items():
            if threat not in THREATS or not 0 < fraction <= 1:
                raise ValueError(f"poison fraction for {threat!r} must be in (0, 1], got {fraction}")
        object.__setattr__(self, "fractions", fractions)

    def experiment_for(self, threat: str, seed: int) -> ExperimentConfig:
        poison = replace(self.experiment.poison, threat=threat, seed=seed, fraction=self.fractions[threat])
        return replace(self.experiment, seed=seed, poison=poison)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["experiment"] = self.experiment.to_dict()
        stored = stored_knobs(DETECTORS)
        data.update(
            {name: knob_value(self.knobs, DETECTORS[entry], knob.name) for name, (entry, knob) in stored.items()}
        )
        data["supervised"] = asdict(supervised_config(self.knobs))
        written = {f"{entry}.{knob.name}" for entry, knob in stored.values()}
        own = {name: value for name, value in self.knobs if name not in written and not name.startswith("supervised.")}
        del data["knobs"]
        if own:  # grids made before knobs existed have no "knobs" key (and keep their cells on a rerun)
            data["knobs"] = own
        return data


def build_detectors(
    prepared: DefenderStages,
    names: tuple[str, ...],
    config: CompareConfig,
    cache: ModelCache,
    report=None,
    poisoned_model=None,
) -> dict[str, ScoreDetector]:
    """Every named detector from the registry, fitted as its spec says: on the defender's trusted images, or (fit_on
    "training") on the poisoned training set through poisoned_model() (default: the run's undefended classifier)."""
    if poisoned_model is None and getattr(prepared, "classifier", None) is not None:  # a run being trained

        def poisoned_model():
            return prepared.classifier("undefended", prepared.poisoned.data, "undefended", prepared.poison_key)[0]

    fit_sets = {
        "trusted": prepared.dae_data.images,
        "calibration": prepared.calibration.images,
        "training": prepared.poisoned.data.images,
    }
    context = DetectorContext(
        prepared.detector.autoencoder,
        prepared.defender,
        prepared.dae_data,
        prepared.dae_config,
        prepared.artifacts["defender"],
        cache,
        report=report,
        poisoned_model=poisoned_model,
        knobs=config.knobs,
    )
    detectors: dict[str, ScoreDetector] = {}
    for name in names:
        spec = DETECTORS[name]
        detector = spec.build(context)
        detector.fit(fit_sets[spec.fit_on])
        detectors[name] = detector
    return detectors


def score_detectors(
    prepared: DefenderStages, detectors: dict[str, ScoreDetector], threshold_config: ThresholdConfig, report=None
) -> tuple[dict, dict, dict]:
    """Each detector thresholded per threshold_config on the (poisoned) training set.

    Returns (scores, drop masks, filter quality against the ground truth), each keyed by detector name."""
    images, mask = prepared.poisoned.data.images, prepared.poisoned.poison_mask
    scores, drops, quality = {}, {}, {}
    for number, (name, detector) in enumerate(detectors.items()):
        if report:
            report("scoring detectors", number, len(detectors))
        threshold = set_detector_threshold(detector, threshold_config, prepared.calibration.images, images)
        # expected_poison mode: infer_threshold has just scored the training set; reuse those scores
        scores[name] = detector.val_scores if threshold_config.mode == "expected_poison" else detector.score(images)
        drops[name] = scores[name] > threshold
        quality[name] = filter_quality(scores[name], drops[name], mask, threshold)
    return scores, drops, quality


def prepared_from_run(run, data_root=None, download: bool = False, progress=None) -> DefenderStages:
    """The defender's stages of a finished run, rebuilt whole from its shipped models (nothing is retrained)."""
    splits = run.splits(data_root, download)
    calibration = run.calibration(splits)
    detector = DAEDetector(run.autoencoder())
    detector.fit(calibration.images)
    return DefenderStages(
        splits=splits,
        poisoned=run.poisons(splits.train),
        defender=run.classifier("defender"),
        dae_data=run.dae_data(splits),
        calibration=calibration,
        detector=detector,
        train_scores=run.train_scores,
        threshold=run.threshold,
        dae_config=run.config.dae,
        artifacts=dict(run.results["artifacts"]),
    )


def score_run(
    run, config: CompareConfig, cache: ModelCache, data_root=None, download: bool = False, progress=None
) -> dict:
    """Every detector on a finished run's training set: writes detector_scores.safetensors and
    detectors.json into the run folder (the app's Threshold page switches between these scores)."""
    prepared = prepared_from_run(run, data_root, download, progress)
    detectors = build_detectors(
        prepared, config.detectors, config, cache, progress, poisoned_model=lambda: run.classifier("undefended")
    )
    scores, _, quality = score_detectors(prepared, detectors, run.config.threshold, progress)
    if "supervised" in detectors:  # shipped with the run so the app can judge uploads with it
        save_model(
            run.directory,
            "supervised_detector",
            detectors["supervised"].model,
            {"role": "supervised_detector", "supervised": asdict(supervised_config(config.knobs))},
            quality["supervised"],
        )
    payload = {name: value.float().contiguous() for name, value in scores.items()}
    atomic_write(run.directory / "detector_scores.safetensors", lambda tmp: save_file(payload, str(tmp)))
    summary = {
        "threshold": run.config.threshold.to_dict(),
        "n_train": len(prepared.poisoned.poison_mask),
        "n_poisoned": prepared.poisoned.n_poisoned,
        "detectors": quality,
        "settings": {
            "magnet_temperature": knob_value(config.knobs, DETECTORS["magnet"], "temperature"),
            "knn_k": knob_value(config.knobs, DETECTORS["knn_latent"], "k"),
            "supervised": asdict(supervised_config(config.knobs)),
        },
    }
    DETECTORS_FILE.write(run.directory / "detectors.json", summary)
    return summary


def _mask_digest(mask: torch.Tensor) -> str:
    return hashlib.sha256(mask.to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def _student_metrics(
    model, prepared: Prepared, experiment: ExperimentConfig, robust_test: ImageSet, robust_config: RobustEvalConfig
) -> dict:
    paper_style = robustness(model, prepared.splits.test, experiment.eval_attack)
    adaptive = attack_suite(model, robust_test, robust_config.eps, robust_config, transfer_from=prepared.surrogate)
    return {
        **paper_style,
        "adaptive_acc": adaptive["worst_case"],
        **threat_metrics(model, prepared.splits.test, experiment.poison),
    }


def compare_one(
    config: CompareConfig, threat: str, seed: int, cache: ModelCache, data_root=None, report=None, should_stop=None
) -> dict:
    """One threat model at one seed: {"poison", "reference": {clean_reference, undefended}, "filters": {...}}."""
    report = report or (lambda stage, done, total: None)
    experiment = config.experiment_for(threat, seed)
    prepared = prepare(experiment, cache, data_root, report, should_stop)
    poisoned, mask = prepared.poisoned, prepared.poisoned.poison_mask
    robust_test = robust_test_set(prepared.splits.test, config.robust_test_subset, seed)
    robust_config = RobustEvalConfig(
        eps=experiment.eval_attack.eps, steps=config.robust_steps, temperature=experiment.temperature, seed=seed
    )

    def measure(model):
        return _student_metrics(model, prepared, experiment, robust_test, robust_config)

    clean_reference, _ = prepared.classifier(
        "clean_reference", prepared.splits.train, "clean_reference", prepared.data_key
    )
    undefended, _ = prepared.classifier("undefended", poisoned.data, "undefended", prepared.poison_key)
    reference = {"clean_reference": measure(clean_reference), "undefended": measure(undefended)}

    # Scores and drop masks of every detector, then the controls (same count as the DAE filter).
    detectors = build_detectors(prepared, config.detectors, config, cache, report)
    _, drops, filters = score_detectors(prepared, detectors, experiment.threshold, report)
    n_drop = int((prepared.train_scores > prepared.threshold).sum())
    control_drops = {
        "none": torch.zeros(len(mask), dtype=torch.bool),
        "random": random_drop_mask(len(mask), n_drop, sampling_seed(seed, "random_filter")),
        "oracle": oracle_drop_mask(mask),
    }
    for name, dropped in control_drops.items():
        # Controls have no score; their "score" is the drop decision itself (AUC ~0.5 / 1.0 by construction).
        drops[name] = dropped
        filters[name] = filter_quality(dropped.float(), dropped, mask, float("nan"))
        if name == "none":
            filters[name]["auroc"] = None

    for number, name in enumerate(config.distil):
        report("distilling behind each filter", number, len(config.distil))
        kept = poisoned.data.subset(torch.nonzero(~drops[name]).flatten())
        upstream = {"poison": prepared.poison_key, "filter": name, "dropped": _mask_digest(drops[name])}
        _, student, _, _ = distilled(
            experiment, cache, prepared, f"compare_{name}", kept, "compare", upstream, report, should_stop
        )
        filters[name].update(student=measure(student), n_kept=len(kept))
    report("distilling behind each filter", len(config.distil), len(config.distil))
    return {
        "poison": {
            "threat": threat,
            "fraction": experiment.poison.fraction,
            "n_poisoned": poisoned.n_poisoned,
            "n_train": len(mask),
            "n_drop": n_drop,
        },
        "n_test": len(prepared.splits.test),
        "n_robust_test": len(robust_test),
        "reference": reference,
        "filters": filters,
    }


def compare_cell(config: CompareConfig, threat: str, seed: int, cache_dir: str, data_root: str, progress=None) -> dict:
    """One (seed, threat) cell of the comparison for core.engine.executor: a pure function of its arguments."""
    return compare_one(config, threat, seed, ModelCache(cache_dir), data_root, progress)


def finished_comparisons(config: CompareConfig, previous: dict | None) -> dict[str, dict]:
    """The (seed, threat) results of an earlier comparison that this one can keep: the seeds and threats it asks
    for, made with the same settings in every other respect (experiment, detectors, filters, robust evaluation) and
    the same poisoned fraction for the threat. A comparison with other settings keeps nothing."""
    return finished_cells(config.to_dict(), previous, "threats", "fractions")


def compare(
    config: CompareConfig,
    cache_dir="runs/cache",
    data_root=None,
    progress=None,
    executor: ExecutorConfig | None = None,
    previous: dict | None = None,
    on_cell=None,
) -> dict:
    """Every threat at every seed (cells run by `executor`: in this process by default, or on Ray), then mean and
    standard deviation over seeds of each number. `previous` (an earlier result, e.g. the saved file) gives the
    cells already finished under the same settings, which are kept rather than recomputed; on_cell(partial result)
    is called after each cell, so a caller can save what is done and a stopped comparison resumes from its file."""
    started = time.time()
    runs = finished_comparisons(config, previous)
    kept_seconds = previous.get("seconds", 0.0) if any(runs.values()) else 0.0

    def result() -> dict:
        ordered = {  # seeds and threats in the config's order, whatever order the cells finished in
            str(seed): {threat: runs[str(seed)][threat] for threat in config.threats if threat in runs[str(seed)]}
            for seed in config.seeds
            if runs.get(str(seed))
        }
        summary = {  # each threat over the seeds that finished it: a comparison stopped part-way still summarises
            threat: summarise(
                {seed: {threat: results[threat]} for seed, results in ordered.items() if threat in results}
            )[threat]
            for threat in config.threats
            if any(threat in results for results in ordered.values())
        }
        return {
            "config": config.to_dict(),
            "runs": ordered,
            "summary": summary,
            "seconds": round(kept_seconds + time.time() - started, 1),  # including the sessions of kept cells
            "machine": machine(),  # of the session that wrote the file
        }

    run_missing_cells(
        compare_cell,
        config,
        "threat",
        config.threats,
        runs,
        worker_paths(cache_dir, data_root),
        executor,
        progress,
        lambda: on_cell and on_cell(result()),
    )
    return result()


SHIPPED_COMPARISON = PROJECT_ROOT / "checkpoints" / "compare" / "compare.json"


# Every shipped comparison the Detectors page offers, by what it compares (the first is the default).
SHIPPED_COMPARISONS = {
    "every threat: the paper's DAE and our detectors": SHIPPED_COMPARISON,
    "backdoor: the field's detectors (spectral signatures, activation clustering)": SHIPPED_COMPARISON.parents[1]
    / "compare_backdoor"
    / "compare.json",
    "backdoor: activation clustering's ranking and its authors' rule (size and silhouette)": SHIPPED_COMPARISON.parents[
        1
    ]
    / "compare_backdoor_rule"
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


DETECTORS_FILE = ResultFile(
    "detectors.json", "python -m core detectors --run-dir {folder}", ("threshold", "detectors", "settings")
)
COMPARISON_FILE = ResultFile("compare.json", "python -m core compare --seeds 3 --out {folder}", ("summary", "runs"))


def load_comparison(path: str | Path = SHIPPED_COMPARISON) -> dict:
    """compare.json; a missing or corrupt file raises CheckpointError saying how to make it."""
    return COMPARISON_FILE.read(path, missing_ok=False)


def comparison_rows(threat_summary: dict) -> list[dict]:
    """One row per model of a threat's summary (reference models, then each filter), numbers as 'mean ± std'."""
    detection = ("auroc", "precision", "recall")
    rows = []
    for name, metrics in threat_summary["reference"].items():
        row = {"model": name.replace("_", " "), "filter": "-"}
        for key, title in COMPARISON_COLUMNS:
            row[title] = "-" if key in detection else mean_std(metrics.get(key), percent=True)
        rows.append(row)
    for name, quality in threat_summary["filters"].items():
        student = quality.get("student") or {}
        row = {"model": "student at T" if student else "(scored only)", "filter": filter_label(name)}
        for key, title in COMPARISON_COLUMNS:
            if key in detection:  # no filter drops nothing: it has no detection quality (was "0.000 ± 0.000")
                row[title] = "-" if name == "none" else mean_std(quality.get(key), percent=False)
            else:
                row[title] = mean_std(student.get(key), percent=True)
        rows.append(row)
    if "attack_success_rate" not in threat_summary["reference"]["undefended"]:
        for row in rows:
            row.pop("attack success")
    return rows


def format_comparison(comparison: dict) -> str:
    """Per threat: the clean reference and undefended model, then each filter's detection quality and
    its student's accuracies, as mean +- std over seeds."""
    summary = comparison["summary"]
    n_seeds = len(comparison["runs"])

    def cell(stat, percent=True, width=16):
        return f"{mean_std(stat, percent):>{width}}"

    lines = []
    for threat, result in summary.items():
        has_asr = "attack_success_rate" in result["reference"]["undefended"]
        header = f"{'':<22}" + "".join(
            f"{title:>16}" for title in ("ROC AUC", "precision", "recall", "clean", "I-FGSM", "worst case")
        )
        header += f"{'attack success':>16}" if has_asr else ""
        lines += [
            "",
            f"== {threat} ({n_seeds} seed{'s' if n_seeds > 1 else ''}; students at T, accuracies on the test set) ==",
            header,
        ]
        rows = [(name, None, metrics) for name, metrics in result["reference"].items()]
        rows += [(f"filter: {name}", quality, quality.get("student")) for name, quality in result["filters"].items()]
        for label, quality, student in rows:
            line = f"{label:<22}"
            line += "".join(
                cell(quality.get(key) if quality else None, percent=False) for key in ("auroc", "precision", "recall")
            )
            line += "".join(
                cell(student.get(key) if student else None) for key in ("clean_acc", "ifgsm_acc", "adaptive_acc")
            )
            if has_asr:
                line += cell(student.get("attack_success_rate") if student else None)
            lines.append(line)
    return "\n".join(lines)
