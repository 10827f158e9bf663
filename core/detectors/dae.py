"""The denoising autoencoder: trained on the defender's trusted set, tuned with Optuna.

Training pairs are (x -> x) for trusted clean images and (x* -> x) for the defender's own FGSM /
I-FGSM copies of them, crafted on the defender's own classifier (trained on the trusted set): the
paper's "both X and x* are fed to the DAE". The defender never sees the attacker's surrogate or the
poison mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import optuna
import torch
import torch.multiprocessing as multiprocessing
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from torch import nn

from core.engine.data import ImageSet
from core.engine.executor import GridError
from core.engine.models import AutoencoderConfig, DenoisingAutoencoder
from core.engine.recipe import sampler_seed
from core.engine.train import TrainConfig, TrainingEvent, predict, reconstruction_loss, train
from core.threats.poison import PoisonConfig, craft, quantise_toward


@dataclass(frozen=True)
class DAEConfig:
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=20,
            batch_size=128,
            learning_rate=0.2,
            optimizer="sgd",
            momentum=0.9,
            weight_decay=0.0,
        )
    )
    # The defender's own perturbed copies x*: one copy per attack listed, at this eps / alpha / steps.
    defender_attacks: tuple[str, ...] = ("fgsm", "ifgsm")
    eps: float = 0.01
    alpha: float = 0.01
    steps: int = 10

    def __post_init__(self):
        for attack in self.defender_attacks:
            PoisonConfig(attack=attack, eps=self.eps, alpha=self.alpha, steps=self.steps)  # validates

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "defender_attacks": list(self.defender_attacks),
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DAEConfig":
        return cls(
            model=AutoencoderConfig(**data["model"]),
            train=TrainConfig.from_dict(data["train"]),
            defender_attacks=tuple(data["defender_attacks"]),
            eps=data["eps"],
            alpha=data["alpha"],
            steps=data["steps"],
        )


def denoising_pairs(
    trusted: ImageSet, defender_model: nn.Module, config: DAEConfig, progress=None, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) as uint8: clean -> clean, and each defender attack's copy -> clean. progress(stage, done,
    total): crafted in chunks of `chunk` images with a report after each (the same copies for FGSM / I-FGSM, whose
    images do not interact; a random-start attack draws its starts per chunk)."""
    inputs, targets = [trusted.images], [trusted.images]
    for attack in config.defender_attacks:
        attack_config = PoisonConfig(
            attack=attack, eps=config.eps, alpha=config.alpha, steps=config.steps, fraction=1.0
        )
        if progress is None:
            adversarial = craft(defender_model, trusted.images, trusted.labels, attack_config)
        else:
            parts, n = [], len(trusted)
            for start in range(0, n, chunk):
                progress(f"crafting the defender's {attack} copies", start, n)
                part = slice(start, start + chunk)
                parts.append(craft(defender_model, trusted.images[part], trusted.labels[part], attack_config))
            progress(f"crafting the defender's {attack} copies", n, n)
            adversarial = torch.cat(parts)
        inputs.append(quantise_toward(trusted.images, adversarial, config.eps))
        targets.append(trusted.images)
    return torch.cat(inputs), torch.cat(targets)


def train_dae(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: DAEConfig,
    progress: Callable[[TrainingEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[DenoisingAutoencoder, list[float]]:
    """Train a fresh DAE on (inputs -> targets); returns it (eval mode) and its per-epoch losses."""
    torch.manual_seed(config.train.seed)
    autoencoder = DenoisingAutoencoder(config.model)
    losses = train(
        autoencoder, inputs, targets, reconstruction_loss, config.train, progress=progress, should_stop=should_stop
    )
    return autoencoder, losses


def validation_loss(autoencoder: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    reconstruction = predict(autoencoder, inputs)
    return float(((reconstruction - targets.float() / 255.0) ** 2).mean())


# ---- Optuna -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuneConfig:
    trials: int = 20
    storage: str = "sqlite:///runs/optuna.db"  # any Optuna storage URL; the study persists and resumes
    study_name: str = "dae"
    epochs_per_trial: int = 5
    validation_fraction: float = 0.2  # of the denoising pairs, held out for the objective
    seed: int = 0

    def __post_init__(self):
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if self.epochs_per_trial < 1:
            raise ValueError(f"epochs_per_trial must be >= 1, got {self.epochs_per_trial}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


def suggest_dae_config(trial, base: DAEConfig, epochs: int) -> DAEConfig:
    """The search space: architecture and SGD settings (objective: validation reconstruction MSE)."""
    model = AutoencoderConfig(
        depth=trial.suggest_int("depth", 2, 4),
        width=trial.suggest_categorical("width", [16, 32, 48]),
        latent_dim=trial.suggest_int("latent_dim", 32, 512, log=True),
    )
    training = replace(
        base.train,
        epochs=epochs,
        learning_rate=trial.suggest_float("learning_rate", 1e-3, 0.3, log=True),
        momentum=trial.suggest_float("momentum", 0.5, 0.99),
    )
    return replace(base, model=model, train=training)


def config_from_params(params: dict, base: DAEConfig) -> DAEConfig:
    """A DAEConfig from a trial's params (e.g. the study's best), keeping base's epochs."""
    model = AutoencoderConfig(depth=params["depth"], width=params["width"], latent_dim=params["latent_dim"])
    training = replace(base.train, learning_rate=params["learning_rate"], momentum=params["momentum"])
    return replace(base, model=model, train=training)


def tune(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    base: DAEConfig,
    config: TuneConfig,
    on_trial: Callable[[int, float | None], None] | None = None,
    worker: int = 0,
):
    """Run config.trials more trials of a persistent, resumable study; returns the optuna Study.

    Each trial reports its validation MSE after every epoch so the median pruner can stop bad ones. `worker` numbers
    the process when several share the study (tune_workers): each draws its own sampler seed, so two workers started
    together do not propose the same first trials.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(inputs.shape[0], generator=generator)
    n_val = max(1, int(config.validation_fraction * inputs.shape[0]))
    val_index, fit_index = order[:n_val], order[n_val:]

    study = optuna.create_study(
        study_name=config.study_name,
        storage=open_storage(config.storage),
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed(config.seed, worker, len(_completed(config)))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )

    def objective(trial) -> float:
        candidate = suggest_dae_config(trial, base, config.epochs_per_trial)
        trial.set_user_attr("config", candidate.to_dict())
        trial.set_user_attr("worker", worker)
        autoencoder_holder = {}

        def report(event: TrainingEvent) -> None:
            if event.epoch_loss is None:
                return
            value = validation_loss(autoencoder_holder["model"], inputs[val_index], targets[val_index])
            trial.report(value, event.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        torch.manual_seed(candidate.train.seed)
        autoencoder = DenoisingAutoencoder(candidate.model)
        autoencoder_holder["model"] = autoencoder
        train(autoencoder, inputs[fit_index], targets[fit_index], reconstruction_loss, candidate.train, progress=report)
        return validation_loss(autoencoder, inputs[val_index], targets[val_index])

    def callback(study, trial) -> None:
        if on_trial is not None:
            on_trial(trial.number, trial.value)

    study.optimize(objective, n_trials=config.trials, callbacks=[callback])
    return study


def worker_shares(trials: int, workers: int) -> list[int]:
    """How many of `trials` each of `workers` processes runs: the study gets exactly `trials` more, whatever the
    number of workers (a global cap, not workers x trials)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if trials < workers:
        raise ValueError(f"{trials} trials cannot keep {workers} workers busy: ask for at least as many trials")
    return [trials // workers + (index < trials % workers) for index in range(workers)]


def _tune_worker(inputs, targets, base: DAEConfig, config: TuneConfig, worker: int, threads: int, events) -> None:
    torch.set_num_threads(threads)
    try:
        tune(inputs, targets, base, config, lambda number, value: events.put(("trial", number, value)), worker)
        events.put(("done", worker, None))
    except Exception as error:  # noqa: BLE001 -- reported to the parent, which says which worker failed and why
        events.put(("failed", worker, f"{type(error).__name__}: {error}"))


def tune_workers(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    base: DAEConfig,
    config: TuneConfig,
    workers: int,
    on_trial: Callable[[int, float | None], None] | None = None,
):
    """config.trials more trials on one study, shared by `workers` processes (each its share of the trials and of
    this machine's threads; on several machines, run `tune` on each with the same --storage). Returns the study."""
    if workers == 1:
        return tune(inputs, targets, base, config, on_trial)

    open_storage(config.storage)  # fail here, once, on a bad URL, before any process starts
    load_or_create_study(config)  # created once, so that the workers do not race to create it
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    threads = max(1, torch.get_num_threads() // workers)
    processes = [
        context.Process(
            target=_tune_worker,
            args=(inputs, targets, base, replace(config, trials=share), index, threads, events),
            daemon=True,
        )
        for index, share in enumerate(worker_shares(config.trials, workers))
    ]
    for process in processes:
        process.start()
    failures, finished = [], 0
    try:
        while finished < workers:
            kind, number, value = events.get()
            if kind == "trial":
                if on_trial is not None:
                    on_trial(number, value)
            else:
                finished += 1
                if kind == "failed":
                    failures.append(f"worker {number}: {value}")
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    if failures:
        raise GridError(f"{len(failures)} of {workers} Optuna workers failed: " + "; ".join(failures))
    return load_study_if_any(config)


def open_storage(url: str):
    """What Optuna is given for a storage URL:
    - sqlite:///path.db (the default; its folder is created: a fresh checkout has no runs/),
    - journal:///path.log (an Optuna journal file: append-only, for many processes on a shared filesystem),
    - postgresql://user:password@host:port/database (through psycopg 3), for workers on many machines.
    Raises ValueError with what to do when the URL is malformed, psycopg is missing or the server does not answer."""
    if url.startswith("sqlite:///"):
        if url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return url
    if url.startswith("journal:///"):
        path = Path("/" + url.removeprefix("journal:///").lstrip("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        # deferred: psycopg and SQLAlchemy add about 0.3 s to every import of this module and only a PostgreSQL
        # storage needs them
        try:
            import psycopg  # noqa: F401 -- SQLAlchemy's postgresql+psycopg dialect needs it
            from sqlalchemy.exc import ArgumentError, OperationalError
        except ImportError:
            raise ValueError("a postgresql:// storage needs psycopg: pip install psycopg==3.3.6") from None

        dialect_url = "postgresql+psycopg://" + url.split("://", 1)[1]
        try:
            engine = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 5}}
            return RDBStorage(dialect_url, engine_kwargs=engine)
        except (OperationalError, ArgumentError) as error:
            reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
            raise ValueError(f"cannot open the Optuna storage at {redacted(url)} ({reason})") from None
    raise ValueError(
        f"unsupported Optuna storage {redacted(url)!r}: use sqlite:///file.db, journal:///path/file.log or "
        "postgresql://user:password@host:port/database"
    )


def redacted(url: str) -> str:
    """The URL with its password replaced, for messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def load_or_create_study(config: TuneConfig):
    return optuna.create_study(
        study_name=config.study_name, storage=open_storage(config.storage), load_if_exists=True, direction="minimize"
    )


def load_study_if_any(config: TuneConfig):
    """The persisted study, or None when there is none yet."""
    try:
        return optuna.load_study(study_name=config.study_name, storage=open_storage(config.storage))
    except KeyError:
        return None


def _completed(config: TuneConfig) -> list:
    """Trials already in the study (0 for a new one); seeds the sampler differently on resume."""
    study = load_study_if_any(config)
    return study.trials if study is not None else []
