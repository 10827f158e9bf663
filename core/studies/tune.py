"""`python -m core tune`: search the DAE's hyperparameters with Optuna (a persistent, resumable study that several
processes can share)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from core.detectors.dae import TuneConfig, denoising_pairs, open_storage, redacted, tune_workers, worker_shares
from core.experiments.pipeline import preset, tuning_pairs
from core.studies import RUNS_DIR, STUDIES, DataOptions, Stages, StudySpec, load_run, option
from core.studies.run import OPTUNA_STORAGE, PRESETS


@dataclass(frozen=True)
class TuneOptions:
    trials: int = option(20, "trials in all (over every worker)")
    epochs: int = option(5, "epochs per trial")
    storage: str = option(
        OPTUNA_STORAGE, "sqlite:///file.db, journal:///path/file.log or postgresql://user:password@host:port/database"
    )
    workers: int = option(1, "processes sharing the study; --trials is the total over all of them")
    study: str = option("dae", "Optuna study name")
    preset: str = option("quick", "whose DAE training pairs to tune on (those a run of it uses)", choices=PRESETS)
    seed: int = option(0, "the run's seed whose pairs are tuned on, and the sampler's")
    cache_dir: Path = option(RUNS_DIR / "cache", "the run's cached defender is reused")
    run_dir: Path | None = option(None, "tune on this finished run's own pairs (its DAE's settings), not a preset's")


def main(options: TuneOptions, data: DataOptions) -> int:
    run = load_run(options.run_dir) if options.run_dir else None  # a missing run fails before any work
    config = run.config if run else preset(options.preset, seed=options.seed)
    tune_config = TuneConfig(
        trials=options.trials,
        storage=options.storage,
        study_name=options.study,
        epochs_per_trial=options.epochs,
        seed=options.seed,
    )
    worker_shares(options.trials, options.workers)  # a bad --workers / --trials fails before any work
    open_storage(tune_config.storage)  # so does an unreachable or malformed storage URL
    print(
        f"denoising pairs of {options.run_dir or f'a {options.preset} run (seed {options.seed})'}: the defender's own "
        "copies of its trusted images",
        file=sys.stderr,
    )
    with Stages() as stages:
        if run:
            splits = run.splits(data.data_root, data.download)
            inputs, targets = denoising_pairs(run.dae_data(splits), run.classifier("defender"), config.dae, stages)
        else:
            inputs, targets = tuning_pairs(config, options.cache_dir, data.data_root, stages, data.download)
    with tqdm(total=options.trials, desc="Optuna trials", unit="trial") as bar:
        study = tune_workers(
            inputs,
            targets,
            config.dae,
            tune_config,
            options.workers,
            on_trial=lambda number, value: (bar.update(1), bar.set_postfix(last=value)),
        )
    best = study.best_trial
    print(f"best trial #{best.number}: validation MSE {best.value:.6f} with {best.params}")
    print(
        f"study '{study.study_name}' in {redacted(options.storage)}: {len(study.trials)} trials; "
        "use `run --use-best-trial` with the same --storage to apply"
    )
    return 0


STUDIES.register(
    StudySpec("tune", "search the DAE's hyperparameters with Optuna (persistent, resumable)", TuneOptions, main)
)
