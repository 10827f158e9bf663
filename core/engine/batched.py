"""K models of one architecture trained at once, as one batched model (torch.func: stacked weights + vmap).

The threshold sweep trains ~210 teacher + student pairs of the same small classifier, each on its own subset of
one training set and for the same number of optimiser steps. On a GPU a width-8 classifier leaves the device
mostly idle, so K of them run as one: their weights are stacked along a new first dimension, each step draws each
model's own batch (its own subset, permutation and augmentation, from its own seeded generator, in the same order
as core.engine.train.train draws them) and one vmapped forward / backward computes all K losses. SGD and the
learning-rate schedule act element-wise, so model k ends where core.engine.train.train would have taken it alone:
bench/batched.py measures the speed, tests/test_batched.py the equality (without dropout: vmap draws dropout masks from
the global generator in another order, same distribution).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from core.engine.train import LossFunction, TrainConfig, _one_cycle, default_device, random_translate, to_float_images


def train_batched(
    models: list[nn.Module],
    inputs: torch.Tensor,
    targets: list[torch.Tensor],
    subsets: list[torch.Tensor],
    loss_fn: LossFunction,
    configs: list[TrainConfig],
    steps: int,
    device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[nn.Module]:
    """Train models[k] on inputs[subsets[k]] against targets[k] (one row per subset index) for `steps` optimiser
    steps, all K at once; returns the K trained models in eval mode (new modules, the arguments are left alone).

    configs: one per model, equal but for the seed (one optimiser and schedule drive all K). progress(step, steps).
    """
    if not models or not len(models) == len(targets) == len(subsets) == len(configs):
        raise ValueError("models, targets, subsets and configs need one entry per model, at least one")
    if (
        len(
            {
                (c.batch_size, c.learning_rate, c.optimizer, c.momentum, c.weight_decay, c.schedule, c.augment)
                for c in configs
            }
        )
        != 1
    ):
        raise ValueError("batched models must share every training setting but the seed")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    config = configs[0]
    torch.manual_seed(config.seed)  # dropout masks, as core.engine.train.train seeds them (drawn in another order here)
    device = device or default_device()
    inputs = inputs.to(device)
    targets = [target.to(device) for target in targets]
    subsets = [subset.to(device) for subset in subsets]
    batch_sizes = {min(config.batch_size, len(subset)) for subset in subsets}
    if len(batch_sizes) != 1 or 0 in batch_sizes:
        raise ValueError("every subset needs at least batch_size images (one batch shape for all K)")
    batch_size = batch_sizes.pop()

    base = copy.deepcopy(models[0]).to("meta")  # the architecture; weights come from the stacked state
    params, buffers = stack_module_state([copy.deepcopy(model).to(device).train() for model in models])
    parameters = list(params.values())
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            parameters,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    scheduler = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, _one_cycle(steps)) if config.schedule == "onecycle" else None
    )

    def loss_of_one(model_params, model_buffers, x, y):
        return loss_fn(functional_call(base, (model_params, model_buffers), (x,)).float(), y)

    losses_of_all = torch.vmap(loss_of_one, in_dims=(0, 0, 0, 0), randomness="different")

    # Each model's own generator, drawn in core.engine.train.train's order: a permutation per pass, then per batch.
    generators = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]
    orders = [None] * len(models)
    cursors = [0] * len(models)
    for step in range(steps):
        xs, ys = [], []
        for k, (subset, generator) in enumerate(zip(subsets, generators)):
            used = (len(subset) // batch_size) * batch_size
            if orders[k] is None or cursors[k] >= used:
                orders[k], cursors[k] = torch.randperm(len(subset), generator=generator, device=device), 0
            rows = orders[k][cursors[k] : cursors[k] + batch_size]
            cursors[k] += batch_size
            x = to_float_images(inputs[subset[rows]])
            xs.append(random_translate(x, 2, generator) if config.augment else x)
            ys.append(to_float_images(targets[k][rows]))
        loss = losses_of_all(params, buffers, torch.stack(xs), torch.stack(ys)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if progress is not None:
            progress(step + 1, steps)

    trained = []
    for k, model in enumerate(models):
        copy_k = copy.deepcopy(model).to(device)
        copy_k.load_state_dict({name: value[k].detach() for name, value in {**params, **buffers}.items()}, strict=False)
        trained.append(copy_k.eval())
    return trained
