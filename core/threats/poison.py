"""Poisoning: the config, the delivered set, and what every threat model shares.

Each threat model is one file in core/threats/ registered in core.engine.registry.THREATS (perturbation: the paper's
FGSM / I-FGSM copies; label_flip; backdoor). This module holds what they share: the seeded choice of
which samples to poison, the uint8 quantiser, crafting with a registered attack, and the poisons' storage.

Perturbation poisons are delivered as ordinary image files: quantised back to uint8, rounding each pixel
toward its original value so the L-inf bound still holds after rounding. (Float-valued poisons would be
spotted by their non-integral pixels, a loophole no detector may use.)

The ground-truth mask says which samples were poisoned. It is only ever used to *score* a defence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from core.engine.data import NUM_CLASSES, ImageSet
from core.engine.registry import ATTACKS, THREATS, checked_knobs, knob_value, knobs_of, stored_knobs
from core.engine.storage import CheckpointError, atomic_write
from core.engine.train import predict

# GTSRB class 14 is "Stop", class 3 "Speed limit (60km/h)": a flip with obvious real-world harm.
DEFAULT_SOURCE_CLASS, DEFAULT_TARGET_CLASS = 14, 3


@dataclass(frozen=True)
class PoisonConfig:
    threat: str = "perturbation"  # a name in core.engine.registry.THREATS
    attack: str = "ifgsm"  # a name in core.engine.registry.ATTACKS (perturbation threats)
    eps: float = 0.01  # L-inf radius on the [0, 1] pixel scale (the paper's 0.01 is 2.55 grey levels)
    alpha: float = 0.01  # step size of I-FGSM / PGD
    steps: int = 10
    # a share of what the threat's spec says (fraction_of): the train split, the source class, ...
    fraction: float = 0.1  # (the paper does not say; see README)
    seed: int = 0
    source_class: int = DEFAULT_SOURCE_CLASS  # label_flip only
    target_class: int = DEFAULT_TARGET_CLASS  # label_flip and backdoor
    # the registered threats' and attacks' own parameters (ThreatSpec.knobs, AttackSpec.knobs), "entry.knob" -> value;
    # unset knobs take their spec's default. Files and cache keys hold only this threat's and attack's (none: no key),
    # and every stored knob (Knob.stored_as: backdoor's trigger size, TAP's smooth scale, ...) at the top level.
    knobs: tuple = ()

    def __post_init__(self):
        THREATS[self.threat], ATTACKS[self.attack]  # noqa: B018 - unknown names raise with the valid ones
        entries = {spec.name: spec for spec in (*THREATS.specs(), *ATTACKS.specs())}
        object.__setattr__(self, "knobs", checked_knobs(self.knobs, entries))
        if not (0 <= self.source_class < NUM_CLASSES and 0 <= self.target_class < NUM_CLASSES):
            raise ValueError(
                f"source and target class must be GTSRB classes 0..42, got {self.source_class}, {self.target_class}"
            )
        if self.threat == "label_flip" and self.source_class == self.target_class:
            raise ValueError("label flipping needs a source class different from the target class")
        if not 0 <= self.eps <= 1:
            raise ValueError(f"eps must be in [0, 1] (pixel scale [0, 1]; 8/255 = 0.0314), got {self.eps}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] (a step on the [0, 1] pixel scale), got {self.alpha}")
        if not 1 <= self.steps <= 10_000:
            raise ValueError(f"steps must be in 1..10000, got {self.steps}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"poison fraction must be in [0, 1], got {self.fraction}")

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["knobs"]
        stored = stored_knobs(THREATS, ATTACKS)
        data.update({name: self.knob(entry, knob.name) for name, (entry, knob) in stored.items()})
        stored_names = {f"{entry}.{knob.name}" for entry, knob in stored.values()}
        own = {
            name: value
            for name, value in knobs_of(self.knobs, self.threat, self.attack).items()
            if name not in stored_names
        }
        if own:  # configs made before knobs existed have no "knobs" key, and keep it that way
            data["knobs"] = own
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PoisonConfig":
        """The config of a to_dict (a file's, a cache key's): the stored knobs back from the top level."""
        data = dict(data)
        settings = dict(data.pop("knobs", None) or {})
        for name, (entry, knob) in stored_knobs(THREATS, ATTACKS).items():
            if name in data:
                settings[f"{entry}.{knob.name}"] = data.pop(name)
        return cls(**data, knobs=settings)

    def knob(self, entry: str, name: str):
        """The value of the knob `name` of the threat or attack `entry` (its spec's default unless set)."""
        return knob_value(self.knobs, THREATS[entry] if entry in THREATS else ATTACKS[entry], name)

    def with_knobs(self, settings: dict) -> "PoisonConfig":
        """This config with some knobs set ({"entry.knob": value}), the others as they were."""
        return replace(self, knobs={**dict(self.knobs), **settings})

    def with_threat(self, threat: str) -> "PoisonConfig":
        """This config switched to another threat, starting from that threat's defaults (its spec's `defaults`)."""
        spec = THREATS[threat]
        return replace(self, threat=threat, **{"fraction": spec.default_fraction, **spec.defaults})


def threat_knobs(threat: str) -> dict:
    """ "entry.knob" -> Knob for every knob the threat's crafting reads: its own, and those of the threat it adapts."""
    spec = THREATS[threat]
    owners = [THREATS[spec.adapts]] if spec.adapts else []
    return {f"{owner.name}.{knob.name}": knob for owner in (*owners, spec) for knob in owner.knobs}


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
    """Adversarial float images in [0, 1] for uint8 images with config's registered attack (true labels)."""
    x = images.float() / 255.0
    spec = ATTACKS[config.attack]
    own = {knob.name: config.knob(spec.name, knob.name) for knob in spec.knobs}  # the attack's keyword arguments
    return spec.run(
        model,
        x,
        labels,
        config.eps,
        config.alpha,
        config.steps,
        generator=torch.Generator().manual_seed(config.seed),
        **own,
    )


def target_success(model: nn.Module, images: torch.Tensor, target_class: int) -> dict:
    """attack_success_rate: the share of images the model classifies as the attacker's target (nan for none)."""
    predicted = predict(model, images).argmax(dim=1)
    rate = float((predicted == target_class).float().mean()) if predicted.numel() else float("nan")
    return {"attack_success_rate": rate, "n_asr_test": int(predicted.numel())}


def poison_mask(n: int, chosen: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    return mask


def poisoned_copy(
    train: ImageSet,
    config: PoisonConfig,
    new_pixels: Callable[[torch.Tensor], torch.Tensor] | None = None,
    new_labels: Callable[[torch.Tensor], torch.Tensor] | None = None,
    eligible: torch.Tensor | None = None,
) -> PoisonedSet:
    """The threats' common steps: choose round(fraction * n) images (seeded; among `eligible` when given), give them
    new_pixels(chosen) (uint8, one row per chosen index, in its order) and new_labels(chosen), and return a copy of
    the training set with its poison mask. What a threat does is those two functions."""
    chosen = choose_poison_indices(len(train), config.fraction, config.seed, eligible)
    images, labels = train.images.clone(), train.labels.clone()
    if new_pixels is not None:
        images[chosen] = new_pixels(chosen)
    if new_labels is not None:
        labels[chosen] = new_labels(chosen)
    return PoisonedSet(ImageSet(images, labels), poison_mask(len(train), chosen), config)


def poison_training_set(
    train: ImageSet, surrogate: nn.Module | None, config: PoisonConfig, progress=None
) -> PoisonedSet:
    """The training set under config.threat, as the defender receives it.

    progress(stage, done, total), if given, is called as the poisons are made."""
    spec = THREATS[config.threat]
    if spec.needs_surrogate and surrogate is None:
        raise ValueError(f"{spec.label} poisons are crafted on a surrogate classifier; none was given")
    return spec.apply(train, surrogate, config, progress)


def threat_metrics(model: nn.Module, test: ImageSet, config: PoisonConfig) -> dict:
    """What the attacker wanted, measured on the test set (e.g. attack_success_rate); {} for threats that aim
    at accuracy itself."""
    return THREATS[config.threat].metrics(model, test, config)


def save_poisons(path, poisoned: PoisonedSet) -> None:
    """The poisoned rows as delivered (index, uint8 images, labels), atomically: a run keeps its own poisons."""
    index = torch.nonzero(poisoned.poison_mask).flatten()
    payload = {
        "index": index,
        "images": poisoned.data.images[index].contiguous(),
        "labels": poisoned.data.labels[index].contiguous(),
    }
    atomic_write(path, lambda tmp: save_file(payload, str(tmp)))


def load_poisons(path, clean: ImageSet, config: PoisonConfig) -> PoisonedSet:
    """The set the defender received: clean rows from the split, poisoned rows exactly as stored.

    Raises CheckpointError when the file is missing, corrupt, or does not fit the split."""
    try:
        stored = load_file(str(path))
        index, images, labels = stored["index"].long(), stored["images"], stored["labels"].long()
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing: the run's poisons are stored there by `python -m core run`"
        ) from None
    except Exception as error:  # noqa: BLE001 - a corrupt file of any kind
        raise CheckpointError(f"{path} is corrupt or not a poison file of this tool ({error})") from None
    if (
        index.ndim != 1
        or images.dtype != torch.uint8
        or images.shape != (len(index), *clean.images.shape[1:])
        or labels.shape != index.shape
        or (len(index) and (int(index.min()) < 0 or int(index.max()) >= len(clean)))
    ):
        raise CheckpointError(
            f"{path} does not fit a training split of {len(clean)} images: "
            "GTSRB_ROOT points at another dataset than the run used, or the file is damaged"
        )
    images_out, labels_out = clean.images.clone(), clean.labels.clone()
    images_out[index], labels_out[index] = images, labels
    mask = torch.zeros(len(clean), dtype=torch.bool)
    mask[index] = True
    return PoisonedSet(ImageSet(images_out, labels_out), mask, config)
