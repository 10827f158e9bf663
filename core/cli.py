"""Command line: `python -m core <command>`: run, tune, sweep, robustness, detectors, abstain, compare, defences,
smoothness, budget, verify, report, data.

It parses, calls the engine and prints; the engine is imported lazily so that errors stay fast. Errors end in one
`error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.budget import BUDGET_DEFENCES
from core.compare import format_comparison
from core.defence_grid import format_defence_grid
from core.live import point_estimate
from core.poison import NOISE_SCOPES, SMOOTH_SCALES
from core.registry import ATTACKS, DEFENCES, DETECTORS, THREATS
from core.report import format_results, format_robustness, format_seeds
from core.storage import CheckpointError, write_json
from core.sweep import FILTERS, format_sweep

if TYPE_CHECKING:
    from core.pipeline import ExperimentConfig

RUNS_DIR = Path("runs")
PRESETS = ("paper", "quick", "compare", "sweep")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + error; we print one line
        self.exit(2, f"error: {message} (see --help)\n")


def _global_options(parser: argparse.ArgumentParser, default) -> None:
    """--data-root and --download, accepted before and after the subcommand."""
    parser.add_argument("--data-root", default=default, help="GTSRB root (default: $GTSRB_ROOT, else ./data)")
    parser.add_argument(
        "--download",
        action="store_true",
        default=default,
        help="let torchvision download GTSRB into the data root (needs internet)",
    )


def _executor_options(parser: argparse.ArgumentParser) -> None:
    """Where a grid's cells run (core.executor)."""
    parser.add_argument(
        "--executor", default="local", choices=("local", "ray"), help="local: in this process; ray: one task per cell"
    )
    parser.add_argument(
        "--ray-address", help="'auto' or ray://host:port (default: start a Ray instance on this machine)"
    )
    parser.add_argument(
        "--cpus-per-cell", type=int, help="threads per cell under every executor (default: this machine's count)"
    )
    parser.add_argument("--gpus-per-cell", type=float, default=0.0, help="ray: GPU share per cell (0.25: four a GPU)")


def _executor(args):
    from core.executor import ExecutorConfig

    return ExecutorConfig(args.executor, args.ray_address, args.cpus_per_cell, args.gpus_per_cell)


def _case_names() -> tuple[str, ...]:
    from core.defence_grid import CASES

    return tuple(CASES)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m core", description="DAE-filtered defensive distillation on poisoned GTSRB.")
    _global_options(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        _global_options(sub, argparse.SUPPRESS)  # after the subcommand too, without overriding the global value
        return sub

    run = command("run", "run the whole pipeline and print results beside the paper's")
    run.add_argument(
        "--preset", default="quick", choices=PRESETS, help="paper (all of GTSRB) or quick (a quarter, fewer epochs)"
    )
    run.add_argument(
        "--threat",
        choices=THREATS.names(),
        help="threat model: " + "; ".join(f"{spec.name}: {spec.label}" for spec in THREATS.specs()),
    )
    run.add_argument(
        "--source-class", type=int, help="label_flip: the class whose labels are flipped (default 14, Stop)"
    )
    run.add_argument(
        "--target-class", type=int, help="label_flip / backdoor: the attacker's target class (default 3, 60 km/h)"
    )
    run.add_argument(
        "--trigger-size", type=int, help="backdoor: side of the square trigger patch in pixels (default 3)"
    )
    run.add_argument("--attack", choices=ATTACKS.names(), help="poisoning attack (perturbation threat)")
    run.add_argument(
        "--eps",
        type=float,
        help="L-inf radius of the poisons on the [0, 1] pixel scale (up to 16/255 = 0.0627 and more)",
    )
    run.add_argument("--alpha", type=float, help="step size of the iterative attacks (I-FGSM, TAP, unlearnable)")
    run.add_argument("--steps", type=int, help="iterations of the iterative attacks")
    run.add_argument(
        "--craft-augment",
        action="store_true",
        default=None,
        help="tap: craft through random flips and +-2 px shifts (poisons that survive the victim's augmentation)",
    )
    run.add_argument(
        "--noise-scope", choices=NOISE_SCOPES, help="unlearnable: one noise per image (samplewise) or per class"
    )
    run.add_argument(
        "--poison-fraction",
        type=float,
        help="share poisoned, in [0, 1], of what the threat says (train split; label_flip: the source class)",
    )
    run.add_argument("--temperature", type=float, help="distillation temperature T (> 0)")
    threshold = run.add_mutually_exclusive_group()
    threshold.add_argument("--threshold", type=float, help="fixed reconstruction threshold (paper's initial: 0.015)")
    threshold.add_argument(
        "--fpr", type=float, help="infer the threshold at this false-positive rate on trusted clean data"
    )
    threshold.add_argument(
        "--expected-poison", type=float, help="infer the threshold dropping this share of the train set (default 0.1)"
    )
    run.add_argument(
        "--epochs", type=float, help="epochs for every classifier (a fraction ends the last pass part-way)"
    )
    run.add_argument("--dae-epochs", type=int, help="epochs for the DAE")
    run.add_argument(
        "--use-best-trial",
        action="store_true",
        help="take the DAE's hyperparameters from the Optuna study's best trial",
    )
    run.add_argument(
        "--storage", default=f"sqlite:///{RUNS_DIR}/optuna.db", help="Optuna storage URL (with --use-best-trial)"
    )
    run.add_argument("--study", default="dae", help="Optuna study name")
    run.add_argument(
        "--robustness",
        action="store_true",
        help="also run the adaptive / transfer / eps-curve evaluation (as the robustness command) on the new run",
    )
    run.add_argument(
        "--robust-test-subset", type=float, default=0.08, help="with --robustness: share of the test set to attack"
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--seeds", type=int, default=1, help="run seeds seed..seed+K-1 (each into OUT/seed<k>) and report mean +- std"
    )
    run.add_argument(
        "--out",
        type=Path,
        help="write results.json, models, poisons and scores here (default: runs/<preset>-seed<seed>)",
    )
    run.add_argument(
        "--cache-dir", type=Path, default=RUNS_DIR / "cache", help="trained-model cache (reused by identical reruns)"
    )
    run.add_argument("--train-subset", type=float, help="override the preset's share of the train split")
    run.add_argument("--test-subset", type=float, help="override the preset's share of the test split")
    run.add_argument("--defender-epochs", type=int, help="override the preset's epochs of the defender's classifier")
    _executor_options(run)  # with --seeds K: one cell per seed

    tune = command("tune", "search the DAE's hyperparameters with Optuna (persistent, resumable)")
    tune.add_argument("--trials", type=int, default=20)
    tune.add_argument("--epochs", type=int, default=5, help="epochs per trial")
    tune.add_argument(
        "--storage",
        default=f"sqlite:///{RUNS_DIR}/optuna.db",
        help="sqlite:///file.db, journal:///path/file.log or postgresql://user:password@host:port/database",
    )
    tune.add_argument(
        "--workers", type=int, default=1, help="processes sharing the study; --trials is the total over all of them"
    )
    tune.add_argument("--study", default="dae", help="study name (reusing a name resumes it)")
    tune.add_argument(
        "--preset",
        default="quick",
        choices=PRESETS,
        help="whose DAE training pairs to tune on (those a run of it uses)",
    )
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--cache-dir", type=Path, default=RUNS_DIR / "cache", help="the run's cached defender is reused")

    sweep = command(
        "sweep", "student accuracy vs drop share for the run's detector, random and oracle filters, over seeds"
    )
    sweep.add_argument("--run-dir", type=Path, required=True, help="a run's output folder (holds results.json)")
    sweep.add_argument(
        "--steps",
        type=int,
        help="optimiser steps per teacher and per student (default: the run's epochs on all of train)",
    )
    sweep.add_argument("--seeds", type=int, default=3, help="repeats 0..K-1 of every point (mean and std)")
    sweep.add_argument("--filters", nargs="+", choices=FILTERS, default=list(FILTERS), help="curves to measure")
    sweep.add_argument(
        "--points", type=int, default=24, help="drop shares evenly spread over 0..0.9 (ignored with --drop-shares)"
    )
    sweep.add_argument("--drop-shares", type=float, nargs="+", help="explicit shares of the training set to drop")
    sweep.add_argument(
        "--test-subset", type=float, default=1.0, help="share of the test set each student's clean accuracy is on"
    )
    sweep.add_argument(
        "--attack-test-subset", type=float, default=0.1, help="share of that attacked with FGSM / I-FGSM"
    )
    sweep.add_argument(
        "--robust-test-subset", type=float, default=0.3, help="share of the attacked set for the worst case"
    )
    sweep.add_argument("--robust-steps", type=int, default=10, help="iterations of the adaptive attacks")
    sweep.add_argument("--fresh", action="store_true", help="recompute every point (default: keep the file's)")
    sweep.add_argument(
        "--batch-models",
        type=int,
        default=1,
        help="train this many kept sets at once as one batched model (a GPU: 16; a CPU gains nothing)",
    )
    sweep.add_argument("--cache-dir", type=Path, default=RUNS_DIR / "cache")
    _executor_options(sweep)

    robust = command("robustness", "adaptive, transfer and eps-curve robustness of a finished run's models")
    robust.add_argument("--run-dir", type=Path, required=True, help="a run's output folder (holds results.json)")
    robust.add_argument("--test-subset", type=float, default=0.08, help="stratified share of the test set to attack")
    robust.add_argument("--steps", type=int, default=10, help="iterations of the iterative attacks")
    _executor_options(robust)  # a cell per model

    comparison = command(
        "compare", "poison detectors vs random / oracle / no-filter controls, per threat model, over seeds"
    )
    comparison.add_argument(
        "--preset", default="compare", choices=PRESETS, help="the shipped comparison used 'compare'"
    )
    comparison.add_argument(
        "--threats", nargs="+", choices=THREATS.names(), default=["perturbation", "label_flip", "backdoor"]
    )
    comparison.add_argument(
        "--detectors", nargs="+", choices=DETECTORS.names(), help="detectors to score (default: all)"
    )
    comparison.add_argument(
        "--distil",
        nargs="+",
        help="filters that also get a distilled student (default: the controls, dae and supervised)",
    )
    comparison.add_argument(
        "--seeds", type=int, default=1, help="run everything for seeds 0..K-1 and report mean +- std"
    )
    comparison.add_argument(
        "--expected-poison", type=float, help="share of the train set every detector drops (default 0.1)"
    )
    comparison.add_argument(
        "--robust-test-subset",
        type=float,
        default=0.3,
        help="share of the test set attacked for the adaptive worst case",
    )
    comparison.add_argument("--out", type=Path, default=RUNS_DIR / "compare", help="folder for compare.json")
    comparison.add_argument("--cache-dir", type=Path, default=RUNS_DIR / "cache")
    comparison.add_argument(
        "--fresh", action="store_true", help="ignore an existing compare.json in --out instead of resuming from it"
    )
    _executor_options(comparison)

    defences = command("defences", "every threat case x every training-time defence, over seeds (no distillation)")
    defences.add_argument("--preset", default="compare", choices=PRESETS, help="the shipped grid used 'compare'")
    defences.add_argument("--cases", nargs="+", choices=_case_names(), default=list(_case_names()))
    defences.add_argument(
        "--defences", nargs="+", choices=DEFENCES.names(), help="defences to train behind (default: all)"
    )
    defences.add_argument("--seeds", type=int, default=1, help="seeds 0..K-1, mean +- std over those that finish")
    defences.add_argument(
        "--detector", default="dae", choices=DETECTORS.names(), help="what filter / filter_purify use"
    )
    defences.add_argument("--sigma", type=float, default=0.1, help="purify: noise std before the DAE ([0, 1] scale)")
    defences.add_argument("--jpeg-quality", type=int, default=10, help="jpeg: PIL quality 1..95")
    defences.add_argument("--adversarial-eps", type=float, default=8 / 255, help="adversarial training: PGD radius")
    defences.add_argument("--adversarial-steps", type=int, default=3, help="adversarial training: PGD steps per batch")
    defences.add_argument("--robust-test-subset", type=float, default=0.3, help="share of test attacked (worst case)")
    defences.add_argument("--robust-steps", type=int, default=10, help="iterations of the adaptive attacks")
    defences.add_argument("--train-subset", type=float, help="override the preset's share of the train split")
    defences.add_argument("--test-subset", type=float, help="override the preset's share of the test split")
    defences.add_argument("--epochs", type=int, help="override the preset's epochs for every classifier")
    defences.add_argument("--dae-epochs", type=int, help="override the preset's DAE epochs")
    defences.add_argument(
        "--defender-epochs", type=int, help="override the preset's epochs of the defender's classifier"
    )
    defences.add_argument("--out", type=Path, default=RUNS_DIR / "defences", help="folder for defences.json")
    defences.add_argument(
        "--fresh", action="store_true", help="recompute every case (default: keep those --out holds, same settings)"
    )
    defences.add_argument("--cache-dir", type=Path, default=RUNS_DIR / "cache")
    _executor_options(defences)

    smooth = command("smoothness", "TAP spent low-pass vs the residual detector: detector AUC and damage per scale")
    smooth.add_argument("--preset", default="compare", choices=PRESETS)
    smooth.add_argument("--scales", nargs="+", type=int, default=[1, 2, 4, 8], help="grid coarseness (1: per pixel)")
    smooth.add_argument("--fraction", type=float, default=0.5, help="share of train poisoned (AUC needs clean ones)")
    smooth.add_argument("--train-subset", type=float, help="override the preset's share of the train split")
    smooth.add_argument("--steps", type=int, help="TAP steps (default: the threat's 40)")
    smooth.add_argument("--out", type=Path, default=RUNS_DIR / "smoothness", help="folder for smoothness.json")
    smooth.add_argument("--cache-dir", type=Path, default=RUNS_DIR / "cache")

    budget = command(
        "budget", "TAP / unlearnable: clean accuracy vs eps and vs poisoned fraction, undefended and defended"
    )
    budget.add_argument("--preset", default="compare", choices=PRESETS)
    budget.add_argument("--threats", nargs="+", choices=["tap", "unlearnable"], default=["tap", "unlearnable"])
    budget.add_argument("--eps-levels", nargs="+", type=float, default=[2, 4, 8, 16], help="eps in grey levels (/255)")
    budget.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.5, 1.0])
    budget.add_argument(
        "--defences", nargs="+", default=list(BUDGET_DEFENCES), choices=DEFENCES.names(), help="beside undefended"
    )
    budget.add_argument("--train-subset", type=float, help="override the preset's share of the train split")
    budget.add_argument("--steps", type=int, help="crafting steps (default: each threat's own; step size follows)")
    budget.add_argument(
        "--smooth-scales",
        nargs="+",
        type=int,
        default=[],
        choices=SMOOTH_SCALES,
        help="also measure the poison spent on a coarser grid (pixels per cell; default eps, all of train): TAP only",
    )
    budget.add_argument("--out", type=Path, default=RUNS_DIR / "budget", help="folder for budget.json")
    budget.add_argument("--cache-dir", type=Path, default=RUNS_DIR / "cache")

    detectors = command("detectors", "score every poison detector on a finished run's training set (for the app)")
    detectors.add_argument("--run-dir", type=Path, required=True, help="a run's output folder (holds results.json)")
    detectors.add_argument(
        "--supervised-epochs", type=int, default=20, help="epochs of the supervised noise-residual detector"
    )
    detectors.add_argument("--cache-dir", type=Path, default=RUNS_DIR / "cache")

    abstain = command("abstain", "MC-dropout abstention of a finished run's student: coverage and accuracy")
    abstain.add_argument("--run-dir", type=Path, required=True, help="a run's output folder (holds results.json)")
    abstain.add_argument(
        "--model", default="filter_distillation", help="which of the run's models (default: the student)"
    )
    abstain.add_argument("--passes", type=int, default=20, help="MC-dropout forward passes per input")
    abstain.add_argument("--fpr", type=float, default=0.05, help="share of trusted clean images the cut-off may reject")
    abstain.add_argument("--test-subset", type=float, default=0.15, help="stratified share of the test set to evaluate")

    verify = command(
        "verify", "recompute a stratified sample of a shipped run's numbers from its stored models and poisons"
    )
    target = verify.add_mutually_exclusive_group(required=True)
    target.add_argument("--run-dir", type=Path, help="a run's output folder (holds results.json)")
    target.add_argument("--comparison", type=Path, help="a compare.json (checks what follows from the file itself)")
    verify.add_argument(
        "--sample", type=float, default=0.1, help="stratified share of the test set to recompute accuracies on"
    )

    report = command("report", "the numbers README states about a run, computed from its files (with standard errors)")
    report.add_argument("--run-dir", type=Path, required=True, help="a run's output folder (holds results.json)")
    report.add_argument("--comparison", type=Path, help="a compare.json to report on as well")
    report.add_argument("--defences", type=Path, help="a defences.json (python -m core defences) to report on as well")
    report.add_argument("--budget", type=Path, help="a budget.json (python -m core budget) to report on as well")

    command("data", "check the dataset: where it is and how many images it holds")
    return parser


def experiment_from_args(args) -> ExperimentConfig:
    from core.detect import ThresholdConfig
    from core.pipeline import preset

    config = preset(args.preset, seed=args.seed)
    # A chosen threat starts from its own defaults (TAP: eps 8/255, 40 steps, all of train); given flags win.
    poison = config.poison.with_threat(args.threat) if args.threat is not None else config.poison
    poison_changes = {
        k: v
        for k, v in (
            ("attack", args.attack),
            ("eps", args.eps),
            ("alpha", args.alpha),
            ("steps", args.steps),
            ("fraction", args.poison_fraction),
            ("source_class", args.source_class),
            ("target_class", args.target_class),
            ("trigger_size", args.trigger_size),
            ("craft_augment", args.craft_augment),
            ("noise_scope", args.noise_scope),
        )
        if v is not None
    }
    poison = replace(poison, seed=args.seed, **poison_changes)
    if args.threshold is not None:
        threshold = ThresholdConfig(mode="fixed", value=args.threshold)
    elif args.fpr is not None:
        threshold = ThresholdConfig(mode="fpr", fpr=args.fpr)
    elif args.expected_poison is not None:
        threshold = ThresholdConfig(mode="expected_poison", expected_poison=args.expected_poison)
    else:
        threshold = config.threshold
    changes = {"poison": poison, "threshold": threshold}
    if args.temperature is not None:
        changes["temperature"] = args.temperature
    if args.epochs is not None:
        changes["classifier_train"] = replace(config.classifier_train, epochs=args.epochs)
    for name in ("train_subset", "test_subset", "defender_epochs"):
        if getattr(args, name, None) is not None:
            changes[name] = getattr(args, name)
    dae = config.dae
    if args.use_best_trial:
        from core.dae import TuneConfig, config_from_params, load_study_if_any, redacted

        study = load_study_if_any(TuneConfig(storage=args.storage, study_name=args.study))
        try:
            best = study.best_trial  # ValueError when no trial has finished
        except (AttributeError, ValueError):
            where = f"Optuna study '{args.study}' at {redacted(args.storage)}"
            raise ValueError(f"no finished trial in {where}; run `python -m core tune` first") from None
        dae = config_from_params(best.params, dae)
    if args.dae_epochs is not None:
        dae = replace(dae, train=replace(dae.train, epochs=args.dae_epochs))
    changes["dae"] = dae
    return replace(config, **changes)


class TqdmStages:
    """One tqdm bar per pipeline stage, on stderr."""

    def __init__(self):
        self.stage, self.bar = None, None

    def __enter__(self) -> "TqdmStages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage, self.bar = (
                stage,
                tqdm(total=total, desc=stage, unit="step", leave=True, dynamic_ncols=True, mininterval=0.5),
            )
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stage, self.bar = None, None


def command_run(args) -> int:
    from core.executor import Cell, run_cells, worker_paths
    from core.run import Run, run_cell, seed_config, seed_dir, summarise_seeds

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    base = experiment_from_args(args)
    seeds = list(range(args.seed, args.seed + args.seeds))
    paths = worker_paths(args.cache_dir, args.data_root)
    cells = []
    for seed in seeds:  # one cell per seed: in this process one after another, or as Ray tasks (--executor ray)
        config = seed_config(base, seed)
        out = str(seed_dir(args.out, config.preset, seed, len(seeds)).resolve())
        cells.append(Cell(f"seed {seed}", run_cell, {"config": config, "out": out, "download": args.download, **paths}))
        print(f"running {config.summary()}", file=sys.stderr)
    with TqdmStages() as stages:
        finished = run_cells(cells, _executor(args), progress=stages)
    runs = {}
    for seed, cell in zip(seeds, cells):
        run = Run.load(finished[cell.key]["directory"])
        print(format_results(run.results))
        print(f"\nresults: {Path(cell.arguments['out']) / 'results.json'}  ({run.results['seconds']:.0f} s)")
        if args.robustness:
            print(format_robustness(run, _robustness(run, args.robust_test_subset, 10, args)))
        runs[str(seed)] = run
    if len(seeds) > 1:
        out = args.out or RUNS_DIR / base.preset
        print(format_seeds(seeds, summarise_seeds(base, runs, out), out))
    return 0


def command_tune(args) -> int:
    from tqdm import tqdm

    from core.dae import TuneConfig, open_storage, redacted, tune_workers, worker_shares
    from core.pipeline import preset, tuning_pairs

    config = preset(args.preset, seed=args.seed)
    tune_config = TuneConfig(
        trials=args.trials, storage=args.storage, study_name=args.study, epochs_per_trial=args.epochs, seed=args.seed
    )
    worker_shares(args.trials, args.workers)  # a bad --workers / --trials fails before any work
    open_storage(tune_config.storage)  # so does an unreachable or malformed storage URL
    print(
        f"denoising pairs of a {args.preset} run (seed {args.seed}): the defender's own copies of its trusted images",
        file=sys.stderr,
    )
    with TqdmStages() as stages:
        inputs, targets = tuning_pairs(config, args.cache_dir, args.data_root, stages, args.download)
    with tqdm(total=args.trials, desc="Optuna trials", unit="trial") as bar:
        study = tune_workers(
            inputs,
            targets,
            config.dae,
            tune_config,
            args.workers,
            on_trial=lambda number, value: (bar.update(1), bar.set_postfix(last=value)),
        )
    best = study.best_trial
    print(f"best trial #{best.number}: validation MSE {best.value:.6f} with {best.params}")
    print(
        f"study '{study.study_name}' in {redacted(args.storage)}: {len(study.trials)} trials; "
        "use `run --use-best-trial` with the same --storage to apply"
    )
    return 0


def _load(args):
    from core.run import Run, warn_if_outdated

    run = Run.load(args.run_dir)
    warn_if_outdated(run)
    return run


def command_sweep(args) -> int:
    from core.sweep import SweepConfig, read_sweep_file, sweep_run

    run = _load(args)
    if args.points < 2:
        raise ValueError(f"--points must be >= 2, got {args.points}")
    shares = args.drop_shares or [round(0.9 * index / (args.points - 1), 4) for index in range(args.points)]
    config = SweepConfig(
        drop_shares=tuple(shares),
        filters=tuple(args.filters),
        seeds=tuple(range(args.seeds)) if args.seeds >= 1 else (),
        steps=args.steps,
        test_subset=args.test_subset,
        attack_test_subset=args.attack_test_subset,
        robust_test_subset=args.robust_test_subset,
        robust_steps=args.robust_steps,
        batch_models=args.batch_models,
    )
    out = args.run_dir / "sweep.json"
    previous = None if args.fresh else read_sweep_file(out)
    estimate = point_estimate(run, config)
    print(f"a point is estimated at {estimate:.0f} s here (the Threshold page's estimate)", file=sys.stderr)
    with TqdmStages() as stages:
        sweep = sweep_run(
            run,
            config,
            args.data_root,
            args.download,
            progress=stages,
            on_point=lambda partial: write_json(out, partial),
            previous=previous,
            executor=_executor(args),
        )
    write_json(out, sweep)
    print(format_sweep(sweep))
    print(f"sweep: {out}  ({sweep['seconds']:.0f} s)")
    return 0


def _robustness(run, test_subset: float, steps: int, args) -> dict:
    from core.run import add_robustness

    with TqdmStages() as stages:
        return add_robustness(run, test_subset, steps, args.data_root, args.download, stages, _executor(args))


def command_robustness(args) -> int:
    run = _load(args)
    print(format_robustness(run, _robustness(run, args.test_subset, args.steps, args)))
    return 0


def command_compare(args) -> int:
    from core.compare import CompareConfig, compare, finished_comparisons, load_comparison
    from core.detect import CONTROLS, ThresholdConfig
    from core.pipeline import preset

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    experiment = preset(args.preset)
    if args.expected_poison is not None:
        experiment = replace(
            experiment, threshold=ThresholdConfig(mode="expected_poison", expected_poison=args.expected_poison)
        )
    detectors = tuple(args.detectors or DETECTORS.names())
    distil = tuple(args.distil or [name for name in CONTROLS + ("dae", "supervised") if name in CONTROLS + detectors])
    config = CompareConfig(
        experiment,
        threats=tuple(args.threats),
        detectors=detectors,
        distil=distil,
        seeds=tuple(range(args.seeds)),
        robust_test_subset=args.robust_test_subset,
    )
    out = args.out / "compare.json"
    previous = None if args.fresh or not out.exists() else load_comparison(out)
    kept = finished_comparisons(config, previous)
    if any(kept.values()):
        print(f"resuming {out}: keeping {sum(map(len, kept.values()))} finished cell(s) with the same settings")
    with TqdmStages() as stages:
        comparison = compare(
            config,
            args.cache_dir,
            args.data_root,
            progress=stages,
            executor=_executor(args),
            previous=previous,
            on_cell=lambda partial: write_json(out, partial),
        )
    write_json(out, comparison)
    print(format_comparison(comparison))
    print(f"\ncomparison: {out}  ({comparison['seconds']:.0f} s)")
    return 0


def command_defences(args) -> int:
    from core.defence_grid import DefenceGridConfig, defence_grid, finished_runs, load_defence_grid
    from core.defences import DefenceConfig
    from core.pipeline import preset

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    experiment = preset(args.preset)
    overrides = {
        name: value
        for name, value in (
            ("train_subset", args.train_subset),
            ("test_subset", args.test_subset),
            ("defender_epochs", args.defender_epochs),
        )
        if value is not None
    }
    if args.epochs is not None:
        overrides["classifier_train"] = replace(experiment.classifier_train, epochs=args.epochs)
    if args.dae_epochs is not None:
        overrides["dae"] = replace(experiment.dae, train=replace(experiment.dae.train, epochs=args.dae_epochs))
    config = DefenceGridConfig(
        replace(experiment, **overrides),
        cases=tuple(args.cases),
        defences=tuple(args.defences or DEFENCES.names()),
        defence=DefenceConfig(
            detector=args.detector,
            sigma=args.sigma,
            jpeg_quality=args.jpeg_quality,
            adversarial_eps=args.adversarial_eps,
            adversarial_steps=args.adversarial_steps,
        ),
        seeds=tuple(range(args.seeds)),
        robust_test_subset=args.robust_test_subset,
        robust_steps=args.robust_steps,
    )
    out = args.out / "defences.json"
    previous = None if args.fresh else load_defence_grid(out)
    kept = finished_runs(config, previous)
    if kept:
        print(f"resuming {out}: keeping {sum(map(len, kept.values()))} finished case(s) with the same settings")
    with TqdmStages() as stages:
        grid = defence_grid(
            config,
            args.cache_dir,
            args.data_root,
            stages,
            on_case=lambda partial: write_json(out, partial),
            previous=previous,
            executor=_executor(args),
        )
    write_json(out, grid)
    print(format_defence_grid(grid))
    print(f"\ndefence grid: {out}  ({grid['seconds']:.0f} s)")
    return 0


def command_smoothness(args) -> int:
    from core.adaptive import DETECTORS_MEASURED, smoothness_sweep
    from core.pipeline import preset

    experiment = preset(args.preset)
    if args.train_subset is not None:
        experiment = replace(experiment, train_subset=args.train_subset)
    with TqdmStages() as stages:
        result = smoothness_sweep(
            experiment, tuple(args.scales), args.fraction, args.cache_dir, args.data_root, stages, steps=args.steps
        )
    write_json(args.out / "smoothness.json", result)
    print(
        f"{'smooth scale':<14}" + "".join(f"{name + ' AUC':>16}" for name in DETECTORS_MEASURED) + f"{'clean acc':>12}"
    )
    for point in result["points"]:
        aucs = "".join(f"{point['auroc'][name]:>16.3f}" for name in DETECTORS_MEASURED)
        print(f"{point['smooth_scale']:<14}{aucs}{point['clean_acc']:>12.1%}")
    reference = result["points"][0]["clean_reference_acc"]
    print(f"clean reference {reference:.1%}; smoothness: {args.out / 'smoothness.json'}  ({result['seconds']:.0f} s)")
    return 0


def command_budget(args) -> int:
    from core.budget import budget_curve
    from core.pipeline import preset
    from core.report import report_budget

    experiment = preset(args.preset)
    if args.train_subset is not None:
        experiment = replace(experiment, train_subset=args.train_subset)
    out = args.out / "budget.json"
    curves = {}
    with TqdmStages() as stages:
        for threat in args.threats:
            smooth_scales = tuple(args.smooth_scales) if "smooth_scale" in THREATS[threat].params else ()
            if args.smooth_scales and not smooth_scales:
                print(f"{threat}: no smooth-scale axis (its crafting is per pixel; only TAP's has the knob)")
            curves[threat] = budget_curve(
                experiment,
                threat,
                tuple(level / 255 for level in args.eps_levels),
                tuple(args.fractions),
                tuple(args.defences),
                steps=args.steps,
                smooth_scales=smooth_scales,
                cache_dir=args.cache_dir,
                data_root=args.data_root,
                progress=stages,
                on_point=lambda partial, threat=threat: write_json(out, {**curves, threat: partial}),
            )
            write_json(out, curves)
    print(report_budget(curves))
    print(f"\nbudget curves: {out}")
    return 0


def command_detectors(args) -> int:
    from core.run import add_detectors

    run = _load(args)
    with TqdmStages() as stages:
        summary = add_detectors(run, args.supervised_epochs, args.cache_dir, args.data_root, args.download, stages)
    print(
        f"{'detector':<22}{'ROC AUC':>9}{'precision':>11}{'recall':>8}   "
        f"({summary['n_poisoned']} poisons in {summary['n_train']})"
    )
    for name, quality in summary["detectors"].items():
        print(f"{name:<22}{quality['auroc']:>9.3f}{quality['precision']:>11.3f}{quality['recall']:>8.3f}")
    print(f"detectors: {args.run_dir / 'detectors.json'}, scores in detector_scores.safetensors")
    return 0


def command_abstain(args) -> int:
    from core.run import add_abstention

    run = _load(args)
    report = add_abstention(run, args.model, args.passes, args.fpr, args.test_subset, args.data_root, args.download)
    config = report["config"]
    print(
        f"MC dropout ({config['passes']} passes) on {args.model}: cut-off {report['cutoff']:.3g} "
        f"(fpr {config['fpr']} on {report['n_calibration']} trusted clean images)"
    )
    print(f"{'inputs':<14}{'accuracy (all)':>16}{'coverage':>10}{'accuracy (answered)':>21}")
    for name, result in report["sets"].items():
        at = result["at_cutoff"]
        print(f"{name:<14}{result['accuracy_all']:>16.2%}{at['coverage']:>10.2%}{at['accuracy']:>21.2%}")
    print(f"abstention: {args.run_dir / 'abstention.json'}")
    return 0


def command_verify(args) -> int:
    from core.verify import verify_comparison, verify_run

    if args.comparison:
        from core.compare import load_comparison

        checks, target = verify_comparison(load_comparison(args.comparison)), args.comparison
    else:
        with TqdmStages() as stages:
            checks, target = verify_run(_load(args), args.sample, args.data_root, args.download, stages), args.run_dir
    failed = [check for check in checks if not check["ok"]]
    print(f"{'check':<58}{'stored':>12}{'recomputed':>12}{'error':>11}{'tolerance':>11}  ok")
    for check in checks:
        print(
            f"{check['name']:<58}{check['stored']:>12.6g}{check['recomputed']:>12.6g}{check['error']:>11.3g}"
            f"{check['tolerance']:>11.3g}  {'yes' if check['ok'] else 'NO'}"
        )
    if failed:
        print(
            f"error: {len(failed)} of {len(checks)} numbers of {target} do not reproduce: "
            + ", ".join(check["name"] for check in failed),
            file=sys.stderr,
        )
        return 1
    print(f"verified: all {len(checks)} numbers of {target} reproduce within tolerance")
    return 0


def command_report(args) -> int:
    from core.budget import load_budget
    from core.compare import load_comparison
    from core.defence_grid import load_defence_grid
    from core.report import (
        defence_grid_markdown,
        report_budget,
        report_comparison,
        report_defence_grid,
        report_run,
        report_sweep,
    )

    # Every file named is read before the (slow) run report, so a wrong path fails at once.
    comparison = load_comparison(args.comparison) if args.comparison else None
    grid = load_defence_grid(args.defences) if args.defences else None
    if args.defences and grid is None:
        raise CheckpointError(f"no defence grid at {args.defences}: run `python -m core defences` first")
    curves = load_budget(args.budget) if args.budget else None
    if args.budget and curves is None:
        raise CheckpointError(f"no budget curves at {args.budget}: run `python -m core budget` first")
    run = _load(args)
    print(report_run(run))
    if run.sweep:
        print("\nThreshold sweep:\n" + report_sweep(run))
    if comparison is not None:
        print(report_comparison(comparison))
    if grid is not None:
        print(report_defence_grid(grid))
        print("\nREADME's table:\n" + defence_grid_markdown(grid))
    if curves is not None:
        print(report_budget(curves))
    return 0


def command_data(args) -> int:
    from core.data import default_root, load_gtsrb

    root = args.data_root or default_root()
    train, test = load_gtsrb("train", root, args.download), load_gtsrb("test", root, args.download)
    print(f"GTSRB at {root}: {len(train)} training and {len(test)} test images, {int(train.labels.max()) + 1} classes")
    return 0


COMMANDS = {
    "run": command_run,
    "tune": command_tune,
    "sweep": command_sweep,
    "robustness": command_robustness,
    "compare": command_compare,
    "defences": command_defences,
    "smoothness": command_smoothness,
    "budget": command_budget,
    "abstain": command_abstain,
    "detectors": command_detectors,
    "verify": command_verify,
    "report": command_report,
    "data": command_data,
}
NEEDS_DATASET = (
    "run",
    "tune",
    "sweep",
    "robustness",
    "compare",
    "defences",
    "smoothness",
    "budget",
    "abstain",
    "detectors",
    "verify",
    "report",
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.data import DatasetNotFoundError
    from core.executor import GridError
    from core.storage import CheckpointError
    from core.train import TrainingCancelled

    try:
        comparison_only = args.command == "verify" and args.comparison  # compare.json alone needs no images
        if args.command in NEEDS_DATASET and not comparison_only:
            from core.data import require_dataset

            require_dataset(args.data_root, args.download)
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, DatasetNotFoundError, CheckpointError, TrainingCancelled) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except GridError as error:  # the other cells finished and were saved
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; finished models are cached and reused by the next run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
