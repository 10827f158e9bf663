"""Orthogonal projection (Sandoval-Segura et al., NeurIPS 2023, "What can we learn from unlearnable datasets?").

Class-wise poisons (OPS, LSP, CUDA's filters, error-minimising noise) are linearly separable shortcuts: a linear
model trained on the poisoned set learns them in its weights. Projecting every image onto the orthogonal complement
of those weights' span (43 directions of 3,072) removes what the linear model found and keeps the rest of the image.
The authors project the training set; here every test input is projected too (one operation on both sides, so the
classifier never sees directions it was not trained on, and adaptive attacks differentiate through it). The linear
model is fitted on the (poisoned) training set itself, so it finds a shortcut only when one is there. Cost: one plain
training plus a logistic regression (seconds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.defences import purified
from core.engine.data import NUM_CLASSES, ImageSet
from core.engine.registry import DEFENCES, DefenceSpec, Knob
from core.engine.train import to_float_images

NAME = "orthogonal_projection"
LINEAR_BATCH = 128
LINEAR_LR = 1e-2  # Adam, from zero; on a toy one-pixel shortcut 1e-3 at batch 512 fitted 40% of images, this 100%


def linear_weights(train: ImageSet, epochs: int, seed: int) -> torch.Tensor:
    """The weights (classes x pixels) of a logistic regression fitted on the mean-centred training images."""
    generator = torch.Generator().manual_seed(seed)
    x = to_float_images(train.images).flatten(1)
    x = x - x.mean(0)
    torch.manual_seed(seed)
    linear = nn.Linear(x.shape[1], NUM_CLASSES)
    nn.init.zeros_(linear.weight)  # from zero: the span is only what the data taught it
    optimiser = torch.optim.Adam(linear.parameters(), lr=LINEAR_LR)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(LINEAR_BATCH):
            loss = F.cross_entropy(linear(x[index]), train.labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return linear.weight.detach()


class Projection(nn.Module):
    """x -> mean + (I - Q Q^T)(x - mean), clamped to [0, 1]: x without the span of the linear model's weights."""

    def __init__(self, weights: torch.Tensor, mean: torch.Tensor):
        super().__init__()
        basis, _ = torch.linalg.qr(weights.T)  # pixels x classes, orthonormal columns
        self.register_buffer("basis", basis)
        self.register_buffer("mean", mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1) - self.mean
        projected = flat - (flat @ self.basis) @ self.basis.T
        return (projected + self.mean).reshape(x.shape).clamp(0, 1)


def projection_weights(train: ImageSet, epochs: int, rounds: int, seed: int) -> torch.Tensor:
    """The weights of `rounds` linear models stacked (rounds x classes, pixels): each fitted on the images with the
    earlier ones' span projected out. One round leaves part of a separable shortcut (the directions gradient descent
    found carry image content too, and a refit finds the rest: a toy one-pixel shortcut on 5 classes stayed 40-44%
    linearly separable after one round, 24% after two, the clean images' level, in 3 seeds); the authors fit one."""
    mean = to_float_images(train.images).flatten(1).mean(0)
    weights = torch.zeros(0, mean.numel())
    images = train.images
    for round_ in range(rounds):
        weights = torch.cat([weights, linear_weights(ImageSet(images, train.labels), epochs, seed + round_)])
        images = purified(Projection(weights, mean), train.images)
    return weights


def fitted_projection(train: ImageSet, context, config) -> Projection:
    """The projection fitted on this training set (cached per set and setting)."""
    epochs, rounds = config.knob(NAME, "linear_epochs"), config.knob(NAME, "rounds")
    mean = to_float_images(train.images).flatten(1).mean(0)
    key = {
        "projection": "logistic",
        "epochs": epochs,
        "rounds": rounds,
        "batch": LINEAR_BATCH,
        "lr": LINEAR_LR,
        "data": train.digest(),
        "seed": config.seed,
    }
    model = context.cached(
        "projection",
        key,
        lambda: Projection(
            torch.ones(rounds * NUM_CLASSES, mean.numel()), mean
        ),  # shapes only: the cache loads the rest
        lambda: Projection(projection_weights(train, epochs, rounds, config.seed), mean),
    )
    return model.eval()


DEFENCES.register(
    DefenceSpec(
        NAME,
        "Orthogonal projection: remove what a linear model learns",
        "Fits a logistic regression on the training set and projects every training image and every test input onto "
        "the orthogonal complement of its weights (class-wise shortcuts are linear).",
        lambda train, context, config: train,
        params=("seed",),
        input_transform=fitted_projection,
        knobs=(
            Knob("linear_epochs", 10, "passes of each logistic regression over the training set", low=1, high=100),
            Knob("rounds", 3, "linear models fitted in turn, each on what the earlier ones left", low=1, high=10),
        ),
        blind=("rounds", (1, 2, 3, 4)),
    )
)
