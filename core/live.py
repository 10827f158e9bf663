"""How long a point at a threshold takes here: what the Threshold page says before it starts one.

A point (teacher and student at one threshold, measured as the sweep measures; `python -m core point`) runs as a
background job (core/jobs.py); these timings estimate it from a short timing of the run's model on this device, until
the first point trained here replaces the estimate with its own time.
"""

from __future__ import annotations

import time

import torch

from core.train import default_device


def seconds_per_step(model_factory, batch_size: int, device: torch.device | None = None, repeats: int = 3) -> float:
    """Wall time of one training step of a fresh model on this device (forward, backward, update): what the page
    multiplies by the steps a point needs to say how long it will take."""
    from core.train import TrainConfig, hard_label_loss, train

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
    for the adaptive suite (core.robust: 2 FGSM + 4 iterative attacks, 2 + 4 * robust_steps per image of
    images["robust_test"]), which also makes 7 forward passes per image."""
    from core.attacks import loss_gradient
    from core.train import predict

    device = device or default_device()
    step = seconds_per_step(model_factory, batch_size, device, repeats=5)
    model = model_factory().to(device).to(memory_format=torch.channels_last).eval()
    x = torch.rand(256, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(256, dtype=torch.long, device=device)

    def per_image(work) -> float:
        work()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(3):
            work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / (3 * len(x))

    forward = per_image(lambda: predict(model, x))
    gradient = per_image(lambda: loss_gradient(model, x, y))
    forwards = images["kept"] + images["test"] + 7 * images["robust_test"]
    gradients = (1 + attack_steps) * images["attack_test"] + (2 + 4 * robust_steps) * images["robust_test"]
    return 2 * steps * step + forwards * forward + gradients * gradient


def point_estimate(run, config) -> float:
    """core.live.point_seconds for a point of this sweep on the run (what the Threshold page shows)."""
    from core.live import point_seconds
    from core.models import Classifier
    from core.sweep import fixed_steps, point_image_counts

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
