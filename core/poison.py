"""Poisoning threat models, each a function from the clean train split to the set the defender receives.

perturbation (the paper's): replace a fraction of the training images by FGSM / I-FGSM copies.
label_flip: relabel a fraction of one source class as a target class (images untouched).
backdoor (BadNets, Gu et al. 2017): stamp a small trigger patch on a fraction of the training images of
  the other classes and relabel them as the target class; at test time the trigger steers any image
  to the target class (measured by the attack success rate, `threat_metrics`).

For perturbations, the attacker crafts the perturbations on a surrogate classifier trained on clean data, keeps the
labels, and delivers ordinary image files: the poisons are quantised back to uint8, rounding each
pixel toward its original value so the L-inf bound still holds after rounding. (Float-valued poisons
would be spotted by their non-integral pixels, a loophole no detector may use.)

The ground-truth mask says which samples were poisoned. It is only ever used to *score* a defence.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.attacks import fgsm, ifgsm, pgd
from core.data import ImageSet
from core.train import predict

ATTACKS = ("fgsm", "ifgsm", "pgd")
THREATS = ("perturbation", "label_flip", "backdoor")
# GTSRB class 14 is "Stop", class 3 "Speed limit (60km/h)": a flip with obvious real-world harm.
DEFAULT_SOURCE_CLASS, DEFAULT_TARGET_CLASS = 14, 3
# Share poisoned per threat when none is given: the paper's 10% of train for perturbations; 40% of
# the source class for label flipping (~1% of train); 5% of train for the backdoor (BadNets-typical).
DEFAULT_FRACTIONS = {"perturbation": 0.1, "label_flip": 0.4, "backdoor": 0.05}


@dataclass(frozen=True)
class PoisonConfig:
    threat: str = "perturbation"  # one of THREATS
    attack: str = "ifgsm"
    eps: float = 0.01  # L-inf radius on the [0, 1] pixel scale (the paper's 0.01 is 2.55 grey levels)
    alpha: float = 0.01  # step size of I-FGSM / PGD
    steps: int = 10
    # perturbation and backdoor: share of the train split; label_flip: share of the source class
    fraction: float = 0.1  # (the paper does not say; see README)
    seed: int = 0
    source_class: int = DEFAULT_SOURCE_CLASS  # label_flip only
    target_class: int = DEFAULT_TARGET_CLASS  # label_flip and backdoor
    trigger_size: int = 3  # backdoor: side of the square trigger in pixels, stamped in the bottom-right corner

    def __post_init__(self):
        if self.threat not in THREATS:
            raise ValueError(f"threat must be one of {', '.join(THREATS)}, got {self.threat!r}")
        if not (0 <= self.source_class < 43 and 0 <= self.target_class < 43):
            raise ValueError(f"source and target class must be GTSRB classes 0..42, got {self.source_class}, {self.target_class}")
        if self.threat == "label_flip" and self.source_class == self.target_class:
            raise ValueError("label flipping needs a source class different from the target class")
        if not 1 <= self.trigger_size <= 16:
            raise ValueError(f"trigger_size must be in 1..16 pixels, got {self.trigger_size}")
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {self.attack!r}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0 (pixel scale [0, 1]), got {self.eps}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"poison fraction must be in [0, 1], got {self.fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PoisonedSet:
    """The training set as the defender receives it, plus the ground truth for scoring only."""

    data: ImageSet  # poisoned images (uint8) and labels (changed only by label_flip and backdoor)
    poison_mask: torch.Tensor  # bool (N,): True where the sample was poisoned
    config: PoisonConfig

    @property
    def n_poisoned(self) -> int:
        return int(self.poison_mask.sum())


def choose_poison_indices(n: int, fraction: float, seed: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Exactly round(fraction * n_eligible) distinct indices among the eligible ones (default: all n), seeded."""
    pool = torch.arange(n) if eligible is None else torch.nonzero(eligible).flatten()
    count = int(round(fraction * pool.shape[0]))
    generator = torch.Generator().manual_seed(seed)
    return torch.sort(pool[torch.randperm(pool.shape[0], generator=generator)[:count]]).values


def quantise_toward(original: torch.Tensor, adversarial: torch.Tensor, eps: float) -> torch.Tensor:
    """Float adversarial images in [0, 1] -> uint8, each pixel rounded toward the original uint8 value.

    Truncating the perturbation toward zero never increases |x_adv - x|, so the eps-ball still holds.
    """
    delta = adversarial * 255.0 - original.float()
    # A float error of 1e-4 grey levels must not cost a whole level: snap near-integers first,
    # then cap at the largest whole number of levels inside the eps-ball.
    delta = torch.where((delta - delta.round()).abs() < 1e-3, delta.round(), delta)
    max_levels = float(int(eps * 255.0 + 1e-6))
    delta = torch.trunc(delta).clamp_(-max_levels, max_levels)
    return (original.float() + delta).clamp_(0, 255).to(torch.uint8)


def craft(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: PoisonConfig) -> torch.Tensor:
    """Adversarial float images in [0, 1] for uint8 images, per config (untargeted, true labels)."""
    x = images.float() / 255.0
    if config.attack == "fgsm":
        return fgsm(model, x, labels, config.eps)
    if config.attack == "ifgsm":
        return ifgsm(model, x, labels, config.eps, config.alpha, config.steps)
    return pgd(model, x, labels, config.eps, config.alpha, config.steps,
               generator=torch.Generator().manual_seed(config.seed))


def poison_training_set(train: ImageSet, surrogate: nn.Module | None, config: PoisonConfig,
                        progress=None, batch_size: int = 2048) -> PoisonedSet:
    """The training set under config.threat. Only perturbations need the attacker's surrogate.

    progress(done, total), if given, is called after each batch of crafted poisons.
    """
    if config.threat == "label_flip":
        return flip_labels(train, config)
    if config.threat == "backdoor":
        return plant_backdoor(train, config)
    if surrogate is None:
        raise ValueError("perturbation poisons are crafted on a surrogate classifier; none was given")
    chosen = choose_poison_indices(len(train), config.fraction, config.seed)
    images = train.images.clone()
    for start in range(0, chosen.shape[0], batch_size):
        index = chosen[start: start + batch_size]
        adversarial = craft(surrogate, train.images[index], train.labels[index], config)
        images[index] = quantise_toward(train.images[index], adversarial, config.eps)
        if progress is not None:
            progress(min(start + batch_size, chosen.shape[0]), chosen.shape[0])
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[chosen] = True
    return PoisonedSet(ImageSet(images, train.labels.clone()), mask, config)


def save_poisons(path, poisoned: PoisonedSet) -> None:
    """The poisoned rows as delivered (index, uint8 images, labels), atomically: a run keeps its own poisons."""
    from safetensors.torch import save_file

    from core.storage import atomic_write

    index = torch.nonzero(poisoned.poison_mask).flatten()
    payload = {"index": index, "images": poisoned.data.images[index].contiguous(),
               "labels": poisoned.data.labels[index].contiguous()}
    atomic_write(path, lambda tmp: save_file(payload, str(tmp)))


def load_poisons(path, clean: ImageSet, config: PoisonConfig) -> PoisonedSet:
    """The set the defender received: clean rows from the split, poisoned rows exactly as stored.

    Raises CheckpointError when the file is missing, corrupt, or does not fit the split."""
    from safetensors.torch import load_file

    from core.storage import CheckpointError

    try:
        stored = load_file(str(path))
        index, images, labels = stored["index"].long(), stored["images"], stored["labels"].long()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the run's poisons are stored there by `python -m core run`") from None
    except Exception as error:  # noqa: BLE001 - a corrupt file of any kind
        raise CheckpointError(f"{path} is corrupt or not a poison file of this tool ({error})") from None
    if (index.ndim != 1 or images.dtype != torch.uint8 or images.shape != (len(index), *clean.images.shape[1:])
            or labels.shape != index.shape or (len(index) and (int(index.min()) < 0 or int(index.max()) >= len(clean)))):
        raise CheckpointError(f"{path} does not fit a training split of {len(clean)} images: "
                              "GTSRB_ROOT points at another dataset than the run used, or the file is damaged")
    images_out, labels_out = clean.images.clone(), clean.labels.clone()
    images_out[index], labels_out[index] = images, labels
    mask = torch.zeros(len(clean), dtype=torch.bool)
    mask[index] = True
    return PoisonedSet(ImageSet(images_out, labels_out), mask, config)


def flip_labels(train: ImageSet, config: PoisonConfig) -> PoisonedSet:
    """Relabel round(fraction * n_source) images of the source class as the target class."""
    chosen = choose_poison_indices(len(train), config.fraction, config.seed, eligible=train.labels == config.source_class)
    labels = train.labels.clone()
    labels[chosen] = config.target_class
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[chosen] = True
    return PoisonedSet(ImageSet(train.images.clone(), labels), mask, config)


def trigger_patch(size: int) -> torch.Tensor:
    """The BadNets trigger: a size x size black-and-white checkerboard, uint8 (3, size, size)."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((rows + cols) % 2 == 0).to(torch.uint8) * 255).expand(3, size, size).clone()


def stamp_trigger(images: torch.Tensor, size: int) -> torch.Tensor:
    """A copy of uint8 images (N, 3, 32, 32) with the trigger in the bottom-right corner, one pixel in."""
    stamped = images.clone()
    stamped[:, :, -size - 1: -1, -size - 1: -1] = trigger_patch(size)
    return stamped


def plant_backdoor(train: ImageSet, config: PoisonConfig) -> PoisonedSet:
    """Stamp the trigger on round(fraction * N_other) images of the other classes and relabel them as the target."""
    chosen = choose_poison_indices(len(train), config.fraction, config.seed, eligible=train.labels != config.target_class)
    images, labels = train.images.clone(), train.labels.clone()
    images[chosen] = stamp_trigger(train.images[chosen], config.trigger_size)
    labels[chosen] = config.target_class
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[chosen] = True
    return PoisonedSet(ImageSet(images, labels), mask, config)


def threat_metrics(model: nn.Module, test: ImageSet, config: PoisonConfig) -> dict:
    """What the attacker wanted, measured on the test set (empty for perturbation poisons, which aim at
    accuracy itself).

    backdoor: attack_success_rate = share of triggered test images of other classes classified as the target.
    label_flip: attack_success_rate = share of source-class test images classified as the target class.
    """
    if config.threat == "backdoor":
        others = test.images[test.labels != config.target_class]
        predicted = predict(model, stamp_trigger(others, config.trigger_size)).argmax(dim=1)
    elif config.threat == "label_flip":
        predicted = predict(model, test.images[test.labels == config.source_class]).argmax(dim=1)
    else:
        return {}
    rate = float((predicted == config.target_class).float().mean()) if predicted.numel() else float("nan")
    return {"attack_success_rate": rate, "n_asr_test": int(predicted.numel())}
