"""I-BAU (Zeng et al., ICLR 2022, "Adversarial unlearning of backdoors via implicit hypergradient").

A backdoor is a small pattern the model obeys whatever the image. I-BAU solves min over the weights of max over one
perturbation delta (shared by every image, L2 norm at most 10) of the loss on clean images carrying it: each round
finds the perturbation that most changes the model's predictions on the trusted images, then unlearns it, following
the implicit hypergradient, which also counts how the best perturbation moves when the weights do (a fixed point of
the inner step's Jacobian, K iterations). Anchor: GTSRB, one round on 5,000 clean images: 97.81% clean / 100% attack
success -> 98.57% / 9.82% (the authors' notebook). Here: the defender's trusted images (a few hundred at the compare
preset, far fewer than the anchor's 5,000), the authors' batch, step sizes and K; `rounds` is the knob `python -m
core blind` chooses. Cost: per round, one pass to find the perturbation and one of K + 3 gradient computations per
batch, over the small trusted set.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from core.engine.registry import DEFENCES, DefenceSpec, Knob
from core.engine.train import to_float_images

NAME = "i_bau"
BATCH = 100  # images per unlearning step (the authors')
PERTURBATION_NORM = 10.0  # the universal perturbation's L2 ball, on [0, 1] pixels (the authors' GTSRB notebook)
PERTURBATION_LR = 1.0  # Adam on the perturbation, one pass over the trusted images (the notebook's)
PENALTY = 0.001  # on ||delta||^2 in the perturbation's objective (the authors')
INNER_STEP = 0.1  # the fixed-point map: one gradient step of the perturbation's objective (the authors')
FIXED_POINT_ITERATIONS = 5  # K (the authors')
OUTER_LR = 0.001  # Adam on the weights (the authors')
PERTURBED_SHARE = 0.01  # of each unlearning batch that carries the perturbation (the authors'; at least one image)


def perturbation_objective(model: nn.Module, delta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor):
    """What the perturbation minimises: minus the loss it causes on `labels`, plus a small L2 penalty."""
    return -F.cross_entropy(model((images + delta).clamp(0, 1)), labels) + PENALTY * delta.pow(2).sum()


def universal_perturbation(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """One perturbation that moves the model away from its own predictions on every image, within the L2 ball."""
    delta = torch.zeros_like(images[:1], requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=PERTURBATION_LR)
    for start in range(0, images.shape[0], BATCH):
        batch = images[start : start + BATCH]
        with torch.no_grad():
            predicted = model(batch).argmax(1)
        optimiser.zero_grad()
        perturbation_objective(model, delta, batch, predicted).backward()
        optimiser.step()
    delta = delta.detach()
    return delta * min(1.0, PERTURBATION_NORM / (float(delta.norm()) + 1e-12))


def hypergradient(model, weights, delta, inner, batch, generator) -> None:
    """Set each weight's .grad to the outer loss's total derivative: its direct gradient plus the implicit term through
    the best perturbation, v^T d(map)/d(weights) where v solves v = v^T d(map)/d(delta) + d(outer)/d(delta)."""
    images, labels = batch
    delta = delta.clone().requires_grad_(True)
    carrying = torch.zeros(images.shape[0], 1, 1, 1, device=images.device)
    count = max(1, int(images.shape[0] * PERTURBED_SHARE))
    carrying[torch.randperm(images.shape[0], generator=generator)[:count].to(images.device)] = 1.0
    outer = F.cross_entropy(model((images + carrying * delta).clamp(0, 1)), labels)
    outer_delta, *outer_weights = torch.autograd.grad(outer, [delta, *weights], allow_unused=True)
    objective = perturbation_objective(model, delta, *inner)
    mapped = delta - INNER_STEP * torch.autograd.grad(objective, delta, create_graph=True)[0]
    v = torch.zeros_like(delta)
    for _ in range(FIXED_POINT_ITERATIONS):
        v = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)[0] + outer_delta
    implicit = torch.autograd.grad(mapped, weights, grad_outputs=v, allow_unused=True)
    for weight, direct, through in zip(weights, outer_weights, implicit):
        weight.grad = sum(part for part in (direct, through) if part is not None) + torch.zeros_like(weight)


def unlearn(model: nn.Module, train_set, context, config) -> nn.Module:
    """A copy of `model` unlearnt for `rounds` rounds on the trusted images (in eval mode, as the authors')."""
    if context.trusted is None:
        raise ValueError("I-BAU needs the defender's trusted clean images")
    unlearnt = copy.deepcopy(model).eval()
    device = next(unlearnt.parameters()).device
    images = to_float_images(context.trusted.images).to(device)
    labels = context.trusted.labels.to(device)
    weights = [weight for weight in unlearnt.parameters() if weight.requires_grad]
    optimiser = torch.optim.Adam(weights, lr=OUTER_LR)
    generator = torch.Generator().manual_seed(config.seed)
    inner = (images[:BATCH], labels[:BATCH])  # the authors' inner objective reads the first batch
    for _ in range(config.knob(NAME, "rounds")):
        delta = universal_perturbation(unlearnt, images)
        for start in range(0, images.shape[0], BATCH):
            optimiser.zero_grad()
            hypergradient(
                unlearnt,
                weights,
                delta,
                inner,
                (images[start : start + BATCH], labels[start : start + BATCH]),
                generator,
            )
            optimiser.step()
    return unlearnt.eval()


DEFENCES.register(
    DefenceSpec(
        NAME,
        "I-BAU: unlearn the universal perturbation the model obeys",
        "The classifier trained on the poisoned set, unlearnt on the defender's trusted clean images: each round finds "
        "one perturbation that changes its predictions everywhere and trains it away (implicit hypergradient).",
        lambda train, context, config: train,
        params=("seed",),
        after_training=unlearn,
        knobs=(
            Knob("rounds", 5, "unlearning rounds: find a perturbation, unlearn it (the authors' 5)", low=1, high=20),
        ),
        blind=("rounds", (1, 2, 3, 5, 8)),
    )
)
