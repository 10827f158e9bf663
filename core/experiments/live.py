"""How long work takes here, before it starts: a point at a threshold (the Threshold page) and a whole experiment,
run and threshold curve (the Overview's *Run the experiment*).

A point (teacher and student at one threshold, measured as the sweep measures; `python -m core point`) runs as a
background job (core/jobs.py); these timings estimate it from a short timing of the run's model on this device, until
the first point trained here replaces the estimate with its own time. An experiment is counted the same way: every
optimiser step and input gradient of its stages times what one costs here (bench/estimate.py compares the estimate with
a measured run).
"""

from __future__ import annotations

import time

import torch

from core.attacks import loss_gradient
from core.engine.models import Classifier, DenoisingAutoencoder
from core.engine.train import TrainConfig, default_device, hard_label_loss, predict, train
from core.experiments.sweep import fixed_steps, point_image_counts


def seconds_per_step(model_factory, batch_size: int, device: torch.device | None = None, repeats: int = 3) -> float:
    """Wall time of one training step of a fresh model on this device (forward, backward, update): what the page
    multiplies by the steps a point needs to say how long it will take."""
    device = device or default_device()
    model = model_factory()
    images = torch.randint(0, 256, (batch_size * (repeats + 1), 3, 32, 32), dtype=torch.uint8)
    labels = torch.zeros(len(images), dtype=torch.long)
    config = TrainConfig(batch_size=batch_size, augment=True)
    train(model, images, labels, hard_label_loss(), config, device, steps=1)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    train(model, images, labels, hard_label_loss(), config, device, steps=repeats)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / repeats


def point_seconds(
    model_factory,
    batch_size: int,
    steps: int,
    images: dict[str, int],
    attack_steps: int,
    robust_steps: int,
    device: torch.device | None = None,
) -> float:
    """Estimated wall time of one threshold point here, from timings of this device: teacher and student `steps`
    optimiser steps each; forward passes for the soft labels (images["kept"]) and the clean accuracy
    (images["test"]); input gradients for FGSM + I-FGSM (1 + attack_steps per image of images["attack_test"]) and
    for the adaptive suite (core.attacks.robust: 2 FGSM + 4 iterative attacks, 2 + 4 * robust_steps per image of
    images["robust_test"]), which also makes 7 forward passes per image."""
    device = device or default_device()
    step = seconds_per_step(model_factory, batch_size, device, repeats=5)
    timings = (step, *per_image_seconds(model_factory(), device))
    return point_cost(timings, steps, images, attack_steps, robust_steps)


def point_cost(timings: tuple[float, float, float], steps: int, images: dict[str, int], attack_steps, robust_steps):
    """point_seconds' count, from (seconds per optimiser step, per image forward, per image input gradient)."""
    step, forward, gradient = timings
    forwards = images["kept"] + images["test"] + 7 * images["robust_test"]
    gradients = (1 + attack_steps) * images["attack_test"] + (2 + 4 * robust_steps) * images["robust_test"]
    return 2 * steps * step + forwards * forward + gradients * gradient


def per_image_seconds(model, device: torch.device) -> tuple[float, float]:
    """(forward, input gradient) seconds per image of a model here, in batches of 256 as the attacks run."""
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    x = torch.rand(256, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(256, dtype=torch.long, device=device)

    def timed(work) -> float:
        work()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(3):
            work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / (3 * len(x))

    return timed(lambda: predict(model, x)), timed(lambda: loss_gradient(model, x, y))


def autoencoder_seconds_per_step(model_factory, batch_size: int, device: torch.device) -> float:
    """Wall time of one DAE training step here (forward, MSE, backward, update)."""
    model = model_factory().to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch_size, 3, 32, 32, device=device)

    def step() -> None:
        optimiser.zero_grad()
        torch.nn.functional.mse_loss(model(x), x).backward()
        optimiser.step()

    step()
    started = time.perf_counter()
    for _ in range(3):
        step()
    return (time.perf_counter() - started) / 3


def experiment_seconds(
    config, n_official: tuple[int, int], sweep, points: int | None = None, device: torch.device | None = None
) -> dict:
    """Estimated wall time here of `python -m core run` with `config` on GTSRB's official (train, test) counts, and of
    its threshold curve `sweep` (a core.experiments.sweep.SweepConfig, one seed): {"run", "curve", "points"}. The run
    trains the surrogate, the defender, the DAE, and five models of which two are distilled (teacher and student): eight
    classifier trainings on the training set; crafts its poisons (an input gradient per image and attack step); makes
    the defender's perturbed copies; and attacks the five models on the test set. The curve: its points, each as
    point_seconds counts it (points: how many; default, the sweep's shares x filters x seeds)."""
    device = device or default_device()
    n_total = round(n_official[0] * config.train_subset)
    n_trusted = round(n_total * config.trusted_fraction)
    n_train, n_dae = n_total - n_trusted, round(n_trusted * (1 - config.calibration_fraction))
    n_test = round(n_official[1] * config.test_subset)
    train = config.classifier_train
    batch = min(train.batch_size, n_train)

    def make():
        return Classifier(config.classifier)

    step = seconds_per_step(make, batch, device)
    forward, gradient = per_image_seconds(make(), device)
    trainings = 8 * fixed_steps(config, n_train) + round(config.defender_epochs * max(1, n_dae // batch))
    poison = config.poison
    n_poisoned = round(n_train * poison.fraction)
    attacked = round(n_test * config.eval_attack.test_subset)
    dae = config.dae
    dae_copies = 1 + len(dae.defender_attacks)
    dae_steps = round(dae.train.epochs * max(1, n_dae * dae_copies // dae.train.batch_size))
    dae_step = autoencoder_seconds_per_step(lambda: DenoisingAutoencoder(dae.model), dae.train.batch_size, device)
    gradients = (
        n_poisoned * max(1, poison.steps)  # crafting the poisons on the surrogate
        + n_dae * (1 + dae.steps)  # the defender's FGSM and I-FGSM copies
        + 5 * attacked * (2 + config.eval_attack.steps)  # FGSM and I-FGSM on the five models
    )
    forwards = 5 * n_test + 2 * n_total  # clean accuracy; scoring the training set and the teacher's soft labels
    run = trainings * step + dae_steps * dae_step + gradients * gradient + forwards * forward
    points = points or len(sweep.drop_shares) * len(sweep.filters) * len(sweep.seeds)
    images = point_image_counts(n_train, n_test, sweep)
    steps = sweep.steps or fixed_steps(config, n_train)
    forwards = images["kept"] + images["test"] + 7 * images["robust_test"]
    gradients = (1 + config.eval_attack.steps) * images["attack_test"] + (2 + 4 * sweep.robust_steps) * images[
        "robust_test"
    ]
    point = 2 * steps * step + forwards * forward + gradients * gradient
    return {"run": run, "curve": points * point, "points": points}


def point_estimate(run, config) -> float:
    """core.experiments.live.point_seconds for a point of this sweep on the run (what the Threshold page shows)."""
    images = point_image_counts(len(run.poison_mask), run.results["data"]["n_test"], config)
    c = run.config
    steps = config.steps or fixed_steps(c, len(run.poison_mask))
    return point_seconds(
        lambda: Classifier(c.classifier),
        c.classifier_train.batch_size,
        steps,
        images,
        c.eval_attack.steps,
        config.robust_steps,
    )
