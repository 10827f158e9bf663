"""`python -m core dae`: train a DAE with chosen hyperparameters on a run's own denoising pairs (its defender's
perturbed copies of its trusted images) and save it with its losses and test error; the run itself is not changed
(the Autoencoder page's *Train*, as a background job)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.detectors.dae import denoising_pairs, train_dae
from core.detectors.detect import reconstruction_error
from core.engine.models import AutoencoderConfig
from core.engine.storage import save_model
from core.studies import STUDIES, DataOptions, Stages, StudySpec, load_run, option


@dataclass(frozen=True)
class DaeOptions:
    run_dir: Path = option(None, "a run's output folder: its trusted images and defender make the pairs", required=True)
    out: Path = option(None, "folder for dae.safetensors and dae.json (losses, test error)", required=True)
    depth: int | None = option(None, "stride-2 stages (default: the run's DAE)")
    width: int | None = option(None, "channels of the first stage (default: the run's DAE)")
    latent_dim: int | None = option(None, "bottleneck size (default: the run's DAE)")
    optimizer: str | None = option(None, "sgd or adam (default: the run's DAE)", choices=("sgd", "adam"))
    learning_rate: float | None = option(None, "(default: the run's DAE)")
    momentum: float | None = option(None, "SGD momentum (default: the run's DAE)")
    epochs: int | None = option(None, "(default: the run's DAE)")
    test_images: int = option(2000, "test images the mean reconstruction error is measured on")

    def dae_config(self, base):
        """The run's DAEConfig with every option given."""
        model = {k: getattr(self, k) for k in ("depth", "width", "latent_dim") if getattr(self, k) is not None}
        train = {k: getattr(self, k) for k in ("optimizer", "learning_rate", "momentum", "epochs")}
        train = {k: v for k, v in train.items() if v is not None}
        return replace(
            base, model=AutoencoderConfig(**{**base.model.to_dict(), **model}), train=replace(base.train, **train)
        )


def main(options: DaeOptions, data: DataOptions) -> int:
    run = load_run(options.run_dir)
    config = options.dae_config(run.config.dae)  # bad values fail here, before any work
    splits = run.splits(data.data_root, data.download)
    with Stages() as stages:
        inputs, targets = denoising_pairs(run.dae_data(splits), run.classifier("defender"), config, stages)
        losses: list[float] = []

        def progress(event) -> None:
            stages(f"training DAE (epoch {event.epoch}/{event.epochs})", event.step, event.total_steps)
            if event.epoch_loss is not None:
                losses.append(event.epoch_loss)

        model, _ = train_dae(inputs, targets, config, progress)
    test_error = float(reconstruction_error(model, splits.test.images[: options.test_images]).mean())
    metrics = {"losses": losses, "mean_reconstruction_error_test": test_error, "run_dir": str(options.run_dir)}
    save_model(options.out, "dae", model, config.to_dict(), metrics)
    print(f"mean reconstruction error on {options.test_images:,} test images: {test_error:.6f}")
    print("training loss per epoch: " + ", ".join(f"{loss:.6f}" for loss in losses))
    print(f"dae: {options.out / 'dae.safetensors'}")
    return 0


STUDIES.register(
    StudySpec("dae", "train a DAE with chosen hyperparameters on a run's own denoising pairs", DaeOptions, main)
)
