"""A run: the one object for an experiment's results on disk, and everything done to a finished run.

`train_run` trains (or reloads from the model cache), evaluates and exports a run folder; `Run.load` reads one
back; the follow-ups (`add_robustness`, `add_detectors`, `add_abstention`, `core.experiments.sweep.sweep_run`,
`core.experiments.verify.verify_run`) read its stored models and poisons and write their JSON beside it. Nothing here
re-crafts a run's poisons or retrains its models.

A run folder: results.json, scores.safetensors (per-sample DAE scores, poison mask), poisons.safetensors (the
poisoned rows as delivered), one <role>.safetensors + <role>.json per model, and the follow-ups' sweep.json,
robustness.json, detectors.json (+ detector_scores.safetensors, supervised_detector), abstention.json.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from core.attacks import ifgsm, margin_loss, pgd
from core.attacks.robust import RobustEvalConfig, robust_report
from core.detectors.abstain import AbstainConfig, abstention_report
from core.detectors.detect import NoiseResidualNet
from core.engine.data import GTSRBSplits, ImageSet, load_splits, stratified_split
from core.engine.executor import Cell, run_cells
from core.engine.models import Classifier, DenoisingAutoencoder
from core.engine.recipe import outdated_stages, sampling_seed
from core.engine.stats import summarise
from core.engine.storage import PROJECT_ROOT, CheckpointError, ResultFile, load_weights, write_json
from core.engine.train import Progress
from core.experiments.compare import DETECTORS_FILE, CompareConfig, score_run
from core.experiments.evaluate import robust_test_set
from core.experiments.pipeline import (
    MODEL_NAMES,
    POISONS_FILE,
    ExperimentConfig,
    ModelCache,
    export_run,
    run_experiment,
)
from core.experiments.sweep import POINTS_FILE, SWEEP_FILE, usable_sweep
from core.threats.poison import PoisonedSet, load_poisons, quantise_toward

SHIPPED_RUN = PROJECT_ROOT / "checkpoints" / "paper"


def project_path(path) -> str:
    """A path as reports print it: relative to the project when inside it (checkpoints/paper), else as given; the
    same text on every checkout, so generated documents do not depend on where the project lives."""
    try:
        return Path(path).resolve().relative_to(SHIPPED_RUN.parents[1]).as_posix()
    except ValueError:
        return str(path)


# The sweep presets' runs: stronger poisons than the paper's, each with a 3-seed threshold sweep
SHIPPED_SWEEP_RUNS = tuple(SHIPPED_RUN.parent / name for name in ("sweep_paper", "sweep_tap"))
# The shipped runs a user can open, with what each is for (the app's run picker lists these, then the user's own).
SHIPPED_RUNS = {
    "paper": "The paper's setting on all of GTSRB (one seed): reported in docs/results.md, with its sweep.",
    "sweep_paper": "The paper's threat on a tenth of GTSRB with narrow models and a complete 3-seed threshold sweep.",
    "sweep_tap": "TAP on half of a tenth of GTSRB with narrow models and a complete 3-seed threshold sweep.",
}
WEAK_STUDENT = 0.9  # clean accuracy under which a run's students are called weak where their numbers are shown


def run_choices(*roots: Path) -> dict[str, str]:
    """Folder -> one line on what it is for: the shipped runs, then every run folder (one holding results.json) under
    the given roots (the app's and the command line's runs/), newest first."""
    checkpoints = SHIPPED_RUN.parent
    choices = {str(checkpoints / name): about for name, about in SHIPPED_RUNS.items() if (checkpoints / name).is_dir()}
    found = [path.parent for root in roots if root.is_dir() for path in root.glob("*/results.json")]
    for folder in sorted(found, key=lambda path: path.stat().st_mtime, reverse=True):
        choices.setdefault(
            str(folder), "A run made here (the Overview's *Run the experiment*, or `python -m core run`)."
        )
    return choices


def weak_students_note(run: "Run") -> str | None:
    """A sentence for where a run's student numbers are shown, when its students are weak (the sweep runs' small
    models: 55-60% clean), else None."""
    clean = run.results["models"]["filter_distillation"]["clean_acc"]
    if clean >= WEAK_STUDENT:
        return None
    return (
        f"This run's students are weak ({clean:.1%} clean for the paper's student): read its curves' shapes against "
        "the random and oracle controls, not their level."
    )


@dataclass
class Run:
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
    points: list[dict] = field(default_factory=list)  # points.json: single thresholds trained (`python -m core point`)

    @classmethod
    def load(cls, directory: str | Path = SHIPPED_RUN) -> "Run":
        """Read a run folder; a missing or corrupt file raises CheckpointError naming it and what to do."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"{directory} is a file, not a run folder (one holding results.json)")
        results_path = directory / "results.json"
        try:
            results = json.loads(results_path.read_text())
            config = ExperimentConfig.from_dict(results["config"])
        except FileNotFoundError:
            raise CheckpointError(
                f"no results.json in {directory}: run `python -m core run --out {directory}`"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{results_path} is corrupt or from another tool ({error}); rerun the experiment"
            ) from None
        try:
            scores = load_file(str(directory / "scores.safetensors"))
            train_scores, mask, calibration = (
                scores["train_scores"],
                scores["poison_mask"].bool(),
                scores["calibration_scores"],
            )
        except Exception as error:  # noqa: BLE001 - missing, truncated, wrong keys
            raise CheckpointError(f"{directory / 'scores.safetensors'} is missing or corrupt ({error})") from None
        return cls(
            directory,
            results,
            config,
            train_scores,
            mask,
            calibration,
            usable_sweep(_optional_json(directory / "sweep.json", SWEEP_FILE)),  # an older sweep's format: none
            _optional_json(directory / "robustness.json", ROBUSTNESS_FILE),
            _optional_json(directory / "detectors.json", DETECTORS_FILE),
            _optional_json(directory / "abstention.json", ABSTENTION_FILE),
            (_optional_json(directory / POINTS_FILE.name, POINTS_FILE) or {}).get("points", []),
        )

    # ---- what the run is ----

    @property
    def threshold(self) -> float:
        return float(self.results["filter"]["threshold"])

    @property
    def outdated(self) -> list[str]:
        """Stages whose recipe changed since this run was made: its numbers stand for the recipe it was made with;
        anything trained from it uses the current recipe."""
        return outdated_stages(self.results.get("recipe_versions"))

    def outdated_note(self) -> str | None:
        stages = self.outdated
        if not stages:
            return None
        return (
            f"run {self.directory} was made with an older recipe of {', '.join(stages)}: its numbers are those of "
            "that recipe; anything trained from it now uses the current one (rerun `python -m core run` to refresh)"
        )

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
        except Exception as error:  # noqa: BLE001 - missing file, missing key, corrupt file
            raise CheckpointError(
                f"no usable '{name}' scores in {self.directory / 'detector_scores.safetensors'} ({error}): run "
                f"`python -m core detectors --run-dir {self.directory}` to score them again"
            ) from None

    def threshold_of(self, name: str) -> float:
        """The run's threshold for a detector (the same ThresholdConfig applied to its scores)."""
        if name == "dae":
            return self.threshold
        try:
            return float(self.detectors["detectors"][name]["threshold"])
        except (KeyError, TypeError, ValueError):  # not scored on this run, or a damaged detectors.json
            raise CheckpointError(
                f"this run has no usable threshold for '{name}' in {self.directory / 'detectors.json'}: run "
                f"`python -m core detectors --run-dir {self.directory}` to score it"
            ) from None

    # ---- what it stores ----

    def classifier(self, role: str) -> Classifier:
        model = load_weights(self.directory, role, Classifier(self.config.classifier)).eval()
        return model.to(memory_format=torch.channels_last)  # as trained; attacks and predict run in this layout

    def autoencoder(self) -> DenoisingAutoencoder:
        return load_weights(self.directory, "dae", DenoisingAutoencoder(self.config.dae.model)).eval()

    def supervised_detector(self):
        """The run's noise-residual poison detector (`python -m core detectors` ships it), or None."""
        if not (self.directory / "supervised_detector.safetensors").exists() or not self.detectors:
            return None
        width = self.detectors["settings"]["supervised"]["width"]
        return load_weights(self.directory, "supervised_detector", NoiseResidualNet(width)).eval()

    def splits(self, data_root=None, download: bool = False) -> GTSRBSplits:
        """The run's train / trusted / test split of GTSRB (same seed and subsets)."""
        c = self.config
        return load_splits(data_root, c.trusted_fraction, c.seed, c.train_subset, c.test_subset, download)

    def poisons(self, train: ImageSet) -> PoisonedSet:
        """The training set as the defender received it, from the poisons stored with the run."""
        if len(train) != len(self.poison_mask):
            raise CheckpointError(
                f"the run has {len(self.poison_mask)} training scores but the data split has {len(train)} "
                "images: GTSRB_ROOT points at a different dataset than the run used"
            )
        poisoned = load_poisons(self.directory / POISONS_FILE, train, self.config.poison)
        if not torch.equal(poisoned.poison_mask, self.poison_mask):
            raise CheckpointError(
                f"{self.directory / POISONS_FILE} and scores.safetensors disagree on which samples are "
                "poisoned: the run folder mixes files of two runs"
            )
        return poisoned

    def calibration(self, splits: GTSRBSplits) -> ImageSet:
        """The trusted images held out of DAE training (no model of the run trained on them)."""
        return splits.trusted.subset(self._trusted_parts(splits)[1])

    def dae_data(self, splits: GTSRBSplits) -> ImageSet:
        """The trusted images the run's defender and DAE trained on."""
        return splits.trusted.subset(self._trusted_parts(splits)[0])

    def _trusted_parts(self, splits: GTSRBSplits):
        return stratified_split(
            splits.trusted.labels,
            self.config.calibration_fraction,
            sampling_seed(self.config.seed, "calibration_split"),
        )

    def check_models(self, roles=MODEL_NAMES) -> None:
        """Load every named model once so a missing or truncated file fails before any long work starts."""
        for role in roles:
            self.classifier(role)


def load_run(directory: str | Path = SHIPPED_RUN) -> Run:
    return Run.load(directory)


# A run's follow-ups: one ResultFile each (core.engine.storage), written by the study that makes it.
ROBUSTNESS_FILE = ResultFile(
    "robustness.json", "python -m core robustness --run-dir {folder}", ("config", "n_test", "models")
)
ABSTENTION_FILE = ResultFile(
    "abstention.json", "python -m core abstain --run-dir {folder}", ("config", "cutoff", "sets")
)
SEEDS_FILE = ResultFile("seeds.json", "python -m core run --seeds 3 --out {folder}", ("config", "seeds", "summary"))


def _optional_json(path: Path, file: ResultFile | None = None) -> dict | None:
    """An optional extra of a run; a missing or corrupt one reads as absent (the app says so)."""
    try:
        return (file or ResultFile(path.name, "")).read(path)
    except CheckpointError:
        return None


# ---- training ------------------------------------------------------------------------------------


def train_run(
    config: ExperimentConfig,
    out: str | Path,
    cache_dir: str | Path,
    data_root=None,
    download: bool = False,
    progress: Progress | None = None,
    should_stop=None,
) -> Run:
    """Train (or reload from the cache), evaluate and export a run to `out`; returns it as read back."""
    results, state = run_experiment(
        config, cache_dir, data_root, progress=progress, should_stop=should_stop, download=download
    )
    export_run(results, state, out)
    return Run.load(out)


def run_cell(
    config: ExperimentConfig, out: str, cache_dir: str, data_root: str, download: bool = False, progress=None
) -> dict:
    """One seed of `run --seeds K` as a cell for core.engine.executor: trains and exports the run to `out` (a path every
    worker sees) and returns where it is; the caller reads it back with Run.load."""
    train_run(config, out, cache_dir, data_root, download, progress)
    return {"directory": out}


def seed_config(base: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The same experiment at another seed: the split, the poisons and every model re-drawn."""
    return replace(base, seed=seed, poison=replace(base.poison, seed=seed))


def seed_dir(out: Path, preset: str, seed: int, n_seeds: int) -> Path:
    """Where one seed's run goes: OUT (or runs/<preset>-seed<k>) alone, OUT/seed<k> among several."""
    if n_seeds > 1:
        return Path(out or Path("runs") / preset) / f"seed{seed}"
    return Path(out or Path("runs") / f"{preset}-seed{seed}")


def summarise_seeds(base: ExperimentConfig, runs: dict[str, Run], out: Path) -> dict:
    """Mean +- std over seeds of every model's and the filter's numbers, written to OUT/seeds.json."""
    summary = summarise(
        {seed: {"models": run.results["models"], "filter": run.results["filter"]} for seed, run in runs.items()}
    )
    SEEDS_FILE.write(
        Path(out) / "seeds.json", {"config": base.to_dict(), "seeds": [int(seed) for seed in runs], "summary": summary}
    )
    return summary


# ---- follow-ups on a finished run ------------------------------------------------------------------


def add_robustness(
    run: Run,
    test_subset: float,
    steps: int,
    data_root=None,
    download: bool = False,
    progress: Progress | None = None,
    executor=None,
) -> dict:
    """Adaptive, transfer and eps-curve robustness of the run's five models: robustness.json, and adaptive_acc /
    zero_grad_fraction / eps_curve beside the paper-style numbers in results.json. `executor` (core.engine.executor)
    runs the five models' evaluations: in this process by default, or on Ray."""
    run.check_models((*MODEL_NAMES, "surrogate"))
    test = robust_test_set(run.splits(data_root, download).test, test_subset, run.config.seed)
    config = RobustEvalConfig(
        eps=run.config.eval_attack.eps, steps=steps, temperature=run.config.temperature, seed=run.config.seed
    )
    surrogate = run.classifier("surrogate")
    shared = {"test": test, "config": config, "surrogate": surrogate}
    cells = [Cell(name, robustness_cell, {**shared, "model": run.classifier(name)}) for name in MODEL_NAMES]
    reports = run_cells(cells, executor, progress=progress)  # a cell per model: here, or as Ray tasks
    reports = {name: reports[name] for name in MODEL_NAMES}
    robustness = {"config": config.to_dict(), "n_test": len(test), "models": reports}
    ROBUSTNESS_FILE.write(run.directory / "robustness.json", robustness)
    # Also beside the paper-style numbers in results.json, where readers of a run look first.
    for name, report in reports.items():
        run.results["models"][name].update(
            adaptive_acc=report["adaptive_acc"],
            zero_grad_fraction=report["zero_grad_fraction"],
            eps_curve=report["eps_curve"],
            adaptive_n_test=len(test),
        )
    write_json(run.directory / "results.json", run.results)
    run.robustness = robustness
    return robustness


def robustness_cell(model, test, config, surrogate, progress=None) -> dict:
    """One model's robustness report (core.attacks.robust.robust_report) as a cell for core.engine.executor."""
    return robust_report(model, test, config, transfer_from=surrogate, progress=progress, stage="robustness")


def add_detectors(
    run: Run,
    knobs: tuple,
    cache_dir,
    data_root=None,
    download: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Every registered detector on the run's stored training set: detectors.json, detector_scores.safetensors and
    the supervised detector's weights in the run folder."""
    run.check_models(("surrogate", "defender"))
    config = CompareConfig(run.config, knobs=knobs)
    summary = score_run(run, config, ModelCache(cache_dir), data_root, download, progress)
    run.detectors = summary
    return summary


def add_abstention(
    run: Run, model_name: str, passes: int, fpr: float, test_subset: float, data_root=None, download: bool = False
) -> dict:
    """MC-dropout abstention of one of the run's models, calibrated on trusted clean images no model trained on,
    measured on clean, I-FGSM and margin-PGD test images (rounded to 8 bits like everything the model sees)."""
    if model_name not in MODEL_NAMES:
        raise ValueError(f"--model must be one of {', '.join(MODEL_NAMES)}, got {model_name!r}")
    if not 0 < test_subset <= 1:
        raise ValueError(f"--test-subset must be in (0, 1], got {test_subset}")
    config = AbstainConfig(passes=passes, fpr=fpr, seed=0)
    model = run.classifier(model_name)
    splits = run.splits(data_root, download)
    calibration = run.calibration(splits)
    test = robust_test_set(splits.test, test_subset, run.config.seed)
    x, attack = test.images.float() / 255, run.config.eval_attack

    def as_images(adversarial):  # attacked inputs as uint8 images, like everything the model sees
        return ImageSet(quantise_toward(test.images, adversarial, attack.eps), test.labels)

    inputs = {
        "clean": test,
        "ifgsm": as_images(ifgsm(model, x, test.labels, attack.eps, attack.alpha, attack.steps)),
        "pgd_margin": as_images(
            pgd(
                model,
                x,
                test.labels,
                attack.eps,
                attack.eps / 4,
                10,
                loss=margin_loss,
                generator=torch.Generator().manual_seed(run.config.seed),
            )
        ),
    }
    report = abstention_report(model, calibration, inputs, config)
    report.update(model=model_name, n_test=len(test))
    ABSTENTION_FILE.write(run.directory / "abstention.json", report)
    run.abstention = report
    return report


def warn_if_outdated(run: Run) -> None:
    """The CLI's one-line notice for a run made with an older recipe (not an error: its files still load)."""
    note = run.outdated_note()
    if note:
        print(f"note: {note}", file=sys.stderr)
