"""`python -m core run`: the whole pipeline (poison, DAE, filter, teacher, student, the five models measured), over
one or more seeds, printed beside the paper's numbers."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from core.detectors.dae import TuneConfig, config_from_params, load_study_if_any, redacted
from core.detectors.detect import ThresholdConfig
from core.engine.executor import Cell, run_cells, worker_paths
from core.engine.registry import ATTACKS, THREATS
from core.experiments.pipeline import PRESETS as PRESET_TABLE
from core.experiments.pipeline import preset
from core.experiments.run import SEEDS_FILE, Run, run_cell, seed_config, seed_dir, summarise_seeds
from core.reporting.report import format_results, format_robustness, format_seeds
from core.studies import (
    RUNS_DIR,
    STUDIES,
    DataOptions,
    ExecutorOptions,
    Stages,
    StudySpec,
    knob_flag,
    knob_option,
    note,
    option,
)
from core.studies.robustness import robustness_of

PRESETS = tuple(PRESET_TABLE)  # core.experiments.pipeline.PRESETS' names
OPTUNA_STORAGE = f"sqlite:///{RUNS_DIR}/optuna.db"


def _threat_help() -> str:
    return "threat model: " + "; ".join(f"{spec.name}: {spec.label}" for spec in THREATS.specs())


@dataclass(frozen=True)
class RunOptions(ExecutorOptions):  # with --seeds K: one cell per seed
    preset: str = option("quick", "paper (all of GTSRB) or quick (a quarter, fewer epochs)", choices=PRESETS)
    threat: str | None = option(None, _threat_help, choices=THREATS.names)
    source_class: int | None = option(None, "label_flip: the class whose labels are flipped (default 14, Stop)")
    target_class: int | None = option(None, "label_flip / backdoor: the attacker's target class (default 3, 60 km/h)")
    attack: str | None = option(None, "poisoning attack (perturbation threat)", choices=ATTACKS.names)
    eps: float | None = option(None, "L-inf radius of the poisons on the [0, 1] pixel scale (16/255 = 0.0627)")
    alpha: float | None = option(None, "step size of the iterative attacks (I-FGSM, TAP, unlearnable)")
    steps: int | None = option(None, "iterations of the iterative attacks")
    poison_seed: int | None = option(None, "the poisons' own seed (default: the run's --seed)")
    poison_fraction: float | None = option(
        None, "share poisoned, in [0, 1], of what the threat says (train split; label_flip: the source class)"
    )
    temperature: float | None = option(None, "distillation temperature T (> 0)")
    threshold: float | None = option(None, "fixed reconstruction threshold (paper's initial: 0.015)", group="threshold")
    fpr: float | None = option(
        None, "infer the threshold at this false-positive rate on trusted clean data", group="threshold"
    )
    expected_poison: float | None = option(
        None, "infer the threshold dropping this share of the train set (default 0.1)", group="threshold"
    )
    epochs: float | None = option(None, "epochs for every classifier (a fraction ends the last pass part-way)")
    dae_epochs: int | None = option(None, "epochs for the DAE")
    use_best_trial: bool = option(False, "take the DAE's hyperparameters from the Optuna study's best trial")
    storage: str = option(OPTUNA_STORAGE, "Optuna storage URL (with --use-best-trial)")
    study: str = option("dae", "Optuna study name")
    robustness: bool = option(
        False, "also run the adaptive / transfer / eps-curve evaluation (as the robustness command) on the new run"
    )
    robust_test_subset: float = option(0.08, "with --robustness: share of the test set to attack")
    seed: int = option(0, "the run's seed (every seed of its stages is derived from it: core/engine/recipe.py)")
    seeds: int = option(1, "run seeds seed..seed+K-1 (each into OUT/seed<k>) and report mean +- std")
    out: Path | None = option(
        None, "write results.json, models, poisons and scores here (default: runs/<preset>-seed<seed>)"
    )
    cache_dir: Path = option(RUNS_DIR / "cache", "trained-model cache (reused by identical reruns)")
    train_subset: float | None = option(None, "override the preset's share of the train split")
    test_subset: float | None = option(None, "override the preset's share of the test split")
    defender_epochs: int | None = option(None, "override the preset's epochs of the defender's classifier")
    # --cuda-blur 0.5, --trigger-size 5, ...: the threats' and attacks' own knobs
    knobs: tuple = knob_option("threats", "attacks")

    def __post_init__(self):
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")
        if self.seed < 0 or (self.poison_seed is not None and self.poison_seed < 0):
            raise ValueError(f"--seed and --poison-seed must be >= 0, got {self.seed}, {self.poison_seed}")
        if not 0 < self.robust_test_subset <= 1:
            raise ValueError(f"--robust-test-subset must be in (0, 1], got {self.robust_test_subset}")


def check_writable(flag: str, folder: Path) -> None:
    """Write a file in the folder, or in its nearest existing parent when it is not there yet (nothing is made), or
    raise ValueError naming the flag: an --out or --cache-dir that cannot be written fails before any work (it ended
    in a dict's repr after the surrogate trained)."""
    folder = Path(folder).absolute()
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    try:
        if existing is None or not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
        if existing != folder:  # what the command will make under it must be makeable: /proc refuses new folders
            probe = Path(tempfile.mkdtemp(dir=existing))
            probe.rmdir()
    except OSError as error:
        raise ValueError(f"{flag} {folder} cannot be written: {error.strerror or error}") from None


def experiment_of(options: RunOptions):
    """The ExperimentConfig the options describe: the preset, then the chosen threat's own defaults (TAP: eps 8/255,
    40 steps, all of train), then every option given."""
    config = preset(options.preset, seed=options.seed)
    poison = config.poison.with_threat(options.threat) if options.threat is not None else config.poison
    given = ("attack", "eps", "alpha", "steps", "source_class", "target_class")
    poison_changes = {name: getattr(options, name) for name in given}
    poison_changes["fraction"] = options.poison_fraction
    poison_seed = options.seed if options.poison_seed is None else options.poison_seed
    poison = replace(poison, seed=poison_seed, **{k: v for k, v in poison_changes.items() if v is not None})
    poison = poison.with_knobs(dict(options.knobs))
    if options.threshold is not None:
        threshold = ThresholdConfig(mode="fixed", value=options.threshold)
    elif options.fpr is not None:
        threshold = ThresholdConfig(mode="fpr", fpr=options.fpr)
    elif options.expected_poison is not None:
        threshold = ThresholdConfig(mode="expected_poison", expected_poison=options.expected_poison)
    else:
        threshold = config.threshold
    changes = {"poison": poison, "threshold": threshold}
    if options.temperature is not None:
        changes["temperature"] = options.temperature
    if options.epochs is not None:
        changes["classifier_train"] = replace(config.classifier_train, epochs=options.epochs)
    for name in ("train_subset", "test_subset", "defender_epochs"):
        if getattr(options, name) is not None:
            changes[name] = getattr(options, name)
    dae = best_trial_dae(config.dae, options.storage, options.study) if options.use_best_trial else config.dae
    if options.dae_epochs is not None:
        dae = replace(dae, train=replace(dae.train, epochs=options.dae_epochs))
    return replace(config, **changes, dae=dae)


def run_arguments(config) -> list[str]:
    """The flags of `python -m core run` that make this ExperimentConfig from its preset (experiment_of inverts it):
    what a background job runs for the app's *Run the experiment*. The preset's own other settings stay as they are;
    a temperature other than the preset's is passed on."""
    p = config.poison
    arguments = ["--preset", config.preset, "--seed", str(config.seed), "--threat", p.threat, "--attack", p.attack]
    arguments += ["--eps", repr(p.eps), "--alpha", repr(p.alpha), "--steps", str(p.steps)]
    arguments += ["--poison-fraction", repr(p.fraction), "--poison-seed", str(p.seed)]
    arguments += ["--source-class", str(p.source_class), "--target-class", str(p.target_class)]
    for spec in (*THREATS.specs(), *ATTACKS.specs()):  # the set knobs, and every stored one (as files hold them)
        for knob in spec.knobs:
            if knob.stored_as or f"{spec.name}.{knob.name}" in dict(p.knobs):
                value = p.knob(spec.name, knob.name)
                arguments += [knob_flag(spec.name, knob), str(value).lower() if isinstance(value, bool) else str(value)]
    if config.temperature != preset(config.preset).temperature:
        arguments += ["--temperature", repr(config.temperature)]
    return arguments


def best_trial_dae(dae, storage: str, study_name: str):
    """The DAE config with the Optuna study's best trial's hyperparameters (`python -m core tune` makes the study)."""
    study = load_study_if_any(TuneConfig(storage=storage, study_name=study_name))
    try:
        best = study.best_trial  # ValueError when no trial has finished
    except (AttributeError, ValueError):
        where = f"Optuna study '{study_name}' at {redacted(storage)}"
        raise ValueError(f"no finished trial in {where}; run `python -m core tune` first") from None
    return config_from_params(best.params, dae)


def main(options: RunOptions, data: DataOptions) -> int:
    for flag, folder in (("--out", options.out), ("--cache-dir", options.cache_dir)):
        if folder is not None:
            check_writable(flag, folder)
    base = experiment_of(options)
    seeds = list(range(options.seed, options.seed + options.seeds))
    paths = worker_paths(options.cache_dir, data.data_root)
    cells = []
    for seed in seeds:  # one cell per seed: in this process one after another, or as Ray tasks (--executor ray)
        config = seed_config(base, seed)
        out = str(seed_dir(options.out, config.preset, seed, len(seeds)).resolve())
        cells.append(Cell(f"seed {seed}", run_cell, {"config": config, "out": out, "download": data.download, **paths}))
        note(f"running {config.summary()}")
    with Stages() as stages:
        finished = run_cells(cells, options.executor_config(), progress=stages)
    runs = {}
    for seed, cell in zip(seeds, cells):
        run = Run.load(finished[cell.key]["directory"])
        print(format_results(run.results))
        print(f"\nresults: {Path(cell.arguments['out']) / 'results.json'}  ({run.results['seconds']:.0f} s)")
        if options.robustness:
            robust = robustness_of(run, options.robust_test_subset, 10, data, options.executor_config())
            print(format_robustness(run, robust))
        runs[str(seed)] = run
    if len(seeds) > 1:
        out = options.out or RUNS_DIR / base.preset
        print(format_seeds(seeds, summarise_seeds(base, runs, out), out))
    return 0


STUDIES.register(
    StudySpec(
        "run", "run the whole pipeline and print results beside the paper's", RunOptions, main, writes=(SEEDS_FILE,)
    )
)
