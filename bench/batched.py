"""K students at once (core.engine.batched, vmap over stacked weights) vs K trainings one after another.

    python bench/batched.py [--steps 40] [--images 3000] [--ks 1 4 16]

The sweep preset's classifier (width 8, 43 classes), batches of 128 with augmentation, each model on its own random
subset of the images (as the sweep's kept sets), on the device the engine picks (GPU when there is one). Prints the
time of both ways for each K, measured side by side in one run, and their ratio.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine.batched import train_batched  # noqa: E402
from core.engine.models import Classifier, ClassifierConfig  # noqa: E402
from core.engine.train import TrainConfig, default_device, device_description, hard_label_loss, train  # noqa: E402


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per model")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    device = default_device()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 43, (args.images,), generator=generator)
    model_config = ClassifierConfig(width=8, hidden=128)

    print(f"{args.steps} steps per model, batches of 128, {args.images:,} images, {device_description()}")
    print(f"{'K':>4}{'sequential s':>15}{'batched s':>12}{'speed-up':>10}")
    for k in args.ks:
        subsets = [torch.randperm(args.images, generator=generator)[: args.images * 3 // 4] for _ in range(k)]
        configs = [TrainConfig(batch_size=128, augment=True, seed=seed) for seed in range(k)]
        models = [Classifier(model_config) for _ in range(k)]
        train(Classifier(model_config), images[:256], labels[:256], hard_label_loss(), configs[0], device, steps=2)

        synchronise(device)
        started = time.perf_counter()
        for model, subset, config in zip(models, subsets, configs):
            train(
                copy.deepcopy(model),
                images[subset],
                labels[subset],
                hard_label_loss(),
                config,
                device,
                steps=args.steps,
            )
        synchronise(device)
        sequential = time.perf_counter() - started

        started = time.perf_counter()
        train_batched(
            models, images, [labels[s] for s in subsets], subsets, hard_label_loss(), configs, args.steps, device
        )
        synchronise(device)
        batched = time.perf_counter() - started
        print(f"{k:>4}{sequential:>15.2f}{batched:>12.2f}{sequential / batched:>9.2f}x")


if __name__ == "__main__":
    main()
