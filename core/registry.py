"""Registries: attacks, threat models, poison detectors, defences and studies are tables from a name to a spec.

The CLI's choices, the app's selectors, the comparison loop and the contract tests iterate these tables, so
adding an entry is one file (or function) that calls `register`, plus its test; nothing else names it.
Built-in entries register where they are defined (core/attacks.py, core/threats/, core/detect.py,
core/defences.py, core/studies/); any module placed in core/plugins/ is imported with them, so a new entry can
live there (README: Extending).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class AttackSpec:
    """An L-inf attack: `run(model, x, y, eps, alpha, steps, generator)` -> adversarial x in [0, 1]."""

    name: str
    label: str
    run: Callable[..., Any]
    iterative: bool  # uses alpha and steps (the app greys them out otherwise)


@dataclass(frozen=True)
class ThreatSpec:
    """A poisoning threat model: `apply(train, surrogate, config, progress)` -> PoisonedSet.

    metrics(model, test, config) -> dict: what the attacker wanted, measured on the test set ({} when the
    threat aims at accuracy itself). params: the PoisonConfig fields it reads (the app shows only those).
    """

    name: str
    label: str
    description: str
    apply: Callable[..., Any]
    default_fraction: float
    fraction_of: str  # what the poison fraction is a share of, for labels and help texts
    params: tuple[str, ...]
    needs_surrogate: bool = False
    metrics: Callable[..., dict] = lambda model, test, config: {}
    # PoisonConfig values this threat starts from when a user picks it (e.g. TAP at eps 8/255); the user's own
    # settings win. default_fraction is the "fraction" entry of these.
    defaults: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DetectorSpec:
    """A poison detector: `build(context)` -> an unfitted ScoreDetector (alibi-detect's fit / score /
    infer_threshold / predict). context: a core.pipeline.Prepared plus `cache` and `settings`
    (core.compare.CompareConfig). fit_on: what it is fitted on: "trusted" (the DAE's training images: detectors
    that learn a reference distribution), "calibration" (held-out trusted images: detectors that only record
    reference scores) or "training" (the poisoned training set itself, through a model trained on it: spectral
    signatures, activation clustering)."""

    name: str
    label: str
    build: Callable[..., Any]
    fit_on: str = "calibration"


@dataclass(frozen=True)
class DefenceSpec:
    """A training-time defence (core/defences.py): `apply(train, context, config)` -> the ImageSet the classifier
    trains on. adversary(config) -> a core.train.Adversary (adversarial training) or None. test_input(config) -> a
    module every input goes through at test time too (grayscale), or None. input_transform(train, context, config)
    -> a module (a purifier) that every training image goes through before training and every input at test time:
    one operation on both sides. after_training(model, train, context, config) -> the defended classifier, made from
    the one trained on the poisoned set (fine-tuning, unlearning). params: the DefenceConfig fields it reads (the app
    shows only those)."""

    name: str
    label: str
    description: str
    apply: Callable[..., Any]
    params: tuple[str, ...] = ()
    adversary: Callable[..., Any] | None = None
    test_input: Callable[..., Any] | None = None
    input_transform: Callable[..., Any] | None = None
    after_training: Callable[..., Any] | None = None


@dataclass(frozen=True)
class StudySpec:
    """A command of `python -m core` (core/studies/): `main(options, data)` -> exit code, where options is an
    instance of `options` (a frozen dataclass whose fields are the command's flags, core.studies.flag_specs) and data
    a core.studies.DataOptions (where GTSRB is). needs_dataset(options): whether GTSRB must be there first."""

    name: str
    help: str
    options: type
    main: Callable[..., int]
    needs_dataset: Callable[[Any], bool] = lambda options: True


Spec = TypeVar("Spec")


class Registry(Generic[Spec]):
    """name -> spec, in registration order. Looking a name up fails with the list of valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._specs: dict[str, Spec] = {}

    def register(self, spec: Spec) -> Spec:
        name = spec.name
        if not name or not name.replace("_", "").isalnum() or name != name.lower():
            raise ValueError(f"{self.kind} names are lower-case words joined by '_', got {name!r}")
        if name in self._specs and self._specs[name] is not spec:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._specs[name] = spec
        return spec

    def unregister(self, name: str) -> None:
        self._specs.pop(name, None)

    def __getitem__(self, name: str) -> Spec:
        load_builtins()
        try:
            return self._specs[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}: choose one of {', '.join(self._specs)}") from None

    def __contains__(self, name: object) -> bool:
        load_builtins()
        return name in self._specs

    def names(self) -> tuple[str, ...]:
        load_builtins()
        return tuple(self._specs)

    def label(self, name: str) -> str:
        return self[name].label if name in self else name

    def specs(self) -> tuple[Spec, ...]:
        load_builtins()
        return tuple(self._specs.values())


ATTACKS: Registry[AttackSpec] = Registry("attack")
THREATS: Registry[ThreatSpec] = Registry("threat model")
DETECTORS: Registry[DetectorSpec] = Registry("detector")
DEFENCES: Registry[DefenceSpec] = Registry("defence")
STUDIES: Registry[StudySpec] = Registry("study")

_loaded = False


def load_builtins() -> None:
    """Import the modules that register the built-in entries (core/studies/ included), then every module in
    core/plugins/."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in (
        "core.attacks",
        "core.threats",
        "core.detect",
        "core.training_set_detectors",
        "core.defences",
        "core.backdoor_removal",
    ):
        importlib.import_module(module)
    studies = importlib.import_module("core.studies")  # by name: core.studies imports this module
    for info in pkgutil.iter_modules(studies.__path__):
        importlib.import_module(f"core.studies.{info.name}")
    import core.plugins

    for info in pkgutil.iter_modules(core.plugins.__path__):
        importlib.import_module(f"core.plugins.{info.name}")
