"""One training loop for every model (classifiers at any temperature, the denoising autoencoder).

In the style of airbench: the whole dataset lives as one tensor on the device, batches are drawn by
a seeded index permutation, augmentation happens on the device, no DataLoader in the hot loop. The
loss is passed in, so hard labels, soft labels at temperature T and reconstruction MSE all train here.
Any uint8 batch (images) is turned into floats in [0, 1] on the fly.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (model, x in [0, 1], targets) -> x the model trains on instead (adversarial training: PGD examples of the model
# as it is at that step). Not a TrainConfig field: the caller keys the cache with what the adversary does.
Adversary = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def default_device() -> torch.device:
    """CUDA when there is one, else CPU; DAE_DISTILL_DEVICE overrides (e.g. 'cpu' on a GPU box)."""
    name = os.environ.get("DAE_DISTILL_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_description() -> str:
    """'CPU' or 'GPU (<name>)': where runs train, for people."""
    device = default_device()
    return f"GPU ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "CPU"


def machine() -> dict:
    """Where a result was computed, for the file that holds it (README quotes wall times with it): threads (CPU
    floats differ between thread counts), the device, the processor, its cores and torch's version."""
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            processor = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "threads": torch.get_num_threads(),
        "device": device_description(),
        "processor": processor,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }


def eval_batch_size(device: torch.device) -> int:
    """Images per batch for forward passes and attacks: 256 on a CPU, 1024 on a GPU. On 2 CPU cores a batch that
    fits the caches is faster (width-24 classifier, channels_last: 1,788 vs 1,733 images/s forward and 710 vs 451
    with the input gradient, at 256 vs 1024; contiguous batches of 1024 ran at 673 and 282)."""
    return 1024 if device.type == "cuda" else 256


def to_float_images(batch: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; float tensors pass through."""
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 10  # passes over the data; a fraction ends the last pass part-way (recipe 3: 1.5)
    batch_size: int = 128
    learning_rate: float = 0.05
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # "onecycle" (warm up, then anneal) or "constant"
    augment: bool = False  # random +-2 px translations; only for classifiers (targets are not images)
    seed: int = 0
    # Classifier recipe 3's knobs; their defaults are recipe 2's loop, and keys omit them at those defaults
    # (train_key), so the models of a config that does not use them keep their cache keys.
    warmup_share: float = 0.25  # of the optimiser steps spent warming the one-cycle rate up, linearly
    label_smoothing: float = (
        0.0  # hard-label losses only (core.defences.distill.train_classifier); soft labels are soft
    )
    ema_decay: float = 0.0  # > 0: the model ends with an exponential moving average of its weights and buffers

    def __post_init__(self):
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("onecycle", "constant"):
            raise ValueError(f"schedule must be 'onecycle' or 'constant', got {self.schedule!r}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError("momentum must be in [0, 1) and weight_decay >= 0")
        if not 0 < self.warmup_share < 1:
            raise ValueError(f"warmup_share must be in (0, 1), got {self.warmup_share}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no averaging), got {self.ema_decay}")

    def to_dict(self) -> dict:
        """Every field, but recipe 3's knobs only where they are set: the cache keys and stored configs of configs
        that leave them at recipe 2's values (the compare and sweep presets) stay what they were."""
        return {
            name: value
            for name, value in asdict(self).items()
            if name not in RECIPE_3_DEFAULTS or value != RECIPE_3_DEFAULTS[name]
        }

    key = to_dict

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """A stored config under the current recipe: retired fields (drop_last: runs before classifier recipe 2
        stored `false`) are ignored, so whatever is trained from an old run skips partial batches."""
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})


RECIPE_3_DEFAULTS = {"warmup_share": 0.25, "label_smoothing": 0.0, "ema_decay": 0.0}


# The one progress shape every long computation reports in: progress(stage, done, total). The CLI hangs tqdm bars on
# it (one per stage), the app a progress bar, the executor forwards it from workers.
Progress = Callable[[str, int, int], None]


def use_threads(threads: int) -> None:
    """Compute with this many CPU threads from now on (the CLI's --threads; a background job's setting)."""
    torch.set_num_threads(threads)


@dataclass
class TrainingEvent:
    """What the loop reports after every batch (callers turn it into Progress: stage, event.step, event.total_steps)."""

    epoch: int  # 1-based
    epochs: int
    step: int  # batches done so far, over all epochs
    total_steps: int
    loss: float  # this batch
    epoch_loss: float | None = None  # mean over the epoch, set on its last batch


class TrainingCancelled(RuntimeError):
    """Raised inside train() when should_stop() returned True; the model keeps its partial weights."""


# ---- losses -------------------------------------------------------------------------------------

# Both temperature losses are multiplied by T: the gradient w.r.t. the logits is then
# softmax(logits / T) - target, as large as in ordinary training. Without it every gradient shrinks
# by 1/T and a teacher at T = 5 is badly undertrained in the same epochs (measured: 84% vs 97%
# training accuracy after 4 epochs on a quarter of GTSRB). At T = 1 both are the usual cross-entropy.


def hard_label_loss(temperature: float = 1.0, label_smoothing: float = 0.0) -> LossFunction:
    """T * cross-entropy of softmax(logits / T) against integer labels (T = 1: the usual classifier), the labels
    smoothed by label_smoothing (Szegedy et al. 2016: the true class gets 1 - s + s / K, every class s / K)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return lambda logits, labels: (
        temperature * F.cross_entropy(logits / temperature, labels, label_smoothing=label_smoothing)
    )


def soft_label_loss(temperature: float) -> LossFunction:
    """T * cross-entropy of softmax(logits / T) against probability vectors (defensive distillation)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return lambda logits, soft: -temperature * (soft * F.log_softmax(logits / temperature, dim=1)).sum(dim=1).mean()


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output, target)


# ---- augmentation -------------------------------------------------------------------------------


def random_translate(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random (dx, dy) in [-max_shift, max_shift], edges replicated."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    shifts = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator, device=generator.device)
    rows = (shifts[0][:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (shifts[1][:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


# ---- the loop -----------------------------------------------------------------------------------


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
    )


def _one_cycle(total_steps: int, warmup_share: float = 0.25) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over the first quarter, then linear decay to zero."""
    warmup = max(1, int(warmup_share * total_steps))
    decay = max(1, total_steps - warmup)
    return lambda step: (step + 1) / warmup if step < warmup else max(0.0, (total_steps - step) / decay)


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics (Polyak averaging; airbench
    and timm's ModelEmaV2 do the same). The decay ramps up as (1 + t) / (10 + t), so the first steps' random
    weights are forgotten quickly; integer buffers (batch norm's counters) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.state = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.state[name].lerp_(value.detach(), 1 - decay)
            else:
                self.state[name].copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)


def train(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFunction,
    config: TrainConfig,
    device: torch.device | None = None,
    progress: Callable[[TrainingEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    adversary: Adversary | None = None,
    steps: int | None = None,
) -> list[float]:
    """Train model in place on (inputs, targets); returns the mean loss of each epoch.

    inputs: (N, 3, 32, 32) uint8 or float images. targets: labels, soft labels or images (uint8 ok).
    adversary: if given, each (augmented) batch is replaced by adversary(model, batch, targets) before the step.
    steps: exactly this many optimiser steps (passes over fresh permutations until they are done, the schedule
    spread over them) instead of config.epochs passes: models trained on sets of different sizes then get the same
    amount of training (the threshold sweep). Not a TrainConfig field, so the cache keys of runs made without it
    keep their values; callers that use it key their results with it.
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets differ in length: {inputs.shape[0]} vs {targets.shape[0]}")
    if inputs.shape[0] == 0:
        raise ValueError("nothing to train on: the training set is empty (did the filter drop every sample?)")
    device = device or default_device()
    use_cuda = device.type == "cuda"
    torch.manual_seed(config.seed)  # weight-independent randomness inside modules (dropout)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model.to(device).to(memory_format=torch.channels_last)
    inputs, targets = inputs.to(device), targets.to(device)

    n = inputs.shape[0]
    batch_size = min(config.batch_size, n)
    # Each epoch's last partial batch is skipped (a fresh permutation each epoch, so every sample is still
    # used). A batch of 3 samples left over made batch norm's running statistics useless: students on
    # 7,939 images (7,939 % 128 = 3) lost 30-50 points of test accuracy (classifier recipe 2).
    steps_per_epoch = n // batch_size
    used = steps_per_epoch * batch_size  # samples seen per epoch
    total_steps = max(1, round(steps_per_epoch * config.epochs)) if steps is None else steps
    epochs = -(-total_steps // steps_per_epoch)  # the last pass may stop part-way
    optimizer = _make_optimizer(model, config)
    scheduler = None
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _one_cycle(total_steps, config.warmup_share))
    average = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda)

    was_training = model.training
    model.train()
    epoch_losses: list[float] = []
    step = 0
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=generator, device=device)
            running = torch.zeros((), device=device)
            epoch_used = min(used, (total_steps - step) * batch_size)
            for batch_start in range(0, epoch_used, batch_size):
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(f"training cancelled at epoch {epoch}, step {step}/{total_steps}")
                index = order[batch_start : batch_start + batch_size]
                x = to_float_images(inputs[index])
                y = to_float_images(targets[index])
                if config.augment:
                    x = random_translate(x, 2, generator)
                if adversary is not None:
                    x = adversary(model, x, y).detach()
                x = x.contiguous(memory_format=torch.channels_last)
                with autocast:
                    output = model(x)
                loss = loss_fn(output.float(), y)  # losses in fp32
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if average is not None:
                    average.update(model)
                step += 1
                running += loss.detach() * index.shape[0]
                if progress is not None:
                    last = batch_start + batch_size >= epoch_used
                    epoch_loss = (running / epoch_used).item() if last else None
                    progress(TrainingEvent(epoch, epochs, step, total_steps, loss.item(), epoch_loss))
            epoch_losses.append((running / epoch_used).item())
    finally:
        model.train(was_training)
    if average is not None:
        average.copy_to(model)
    model.eval()
    return epoch_losses


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Model outputs (logits, or reconstructions for the DAE) in eval mode, batched (default: eval_batch_size),
    returned on the CPU."""
    # where the model lives: a fixed filter (a projection, a low-pass) has buffers and no parameters
    device = device or next(iter([*model.parameters(), *model.buffers()]), torch.zeros(0)).device
    batch_size = batch_size or eval_batch_size(device)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = to_float_images(images[start : start + batch_size].to(device))
            outputs.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return torch.empty(0)
    return torch.cat(outputs)
