"""Registries: attacks, threat models, poison detectors, defences and studies are tables from a name to a spec.

The CLI's choices, the app's selectors, the comparison loop and the contract tests iterate these tables, so
adding an entry is one file (or function) that calls `register`, plus its test; nothing else names it.
Built-in entries register where they are defined (core/attacks/, core/threats/, core/detectors/, core/defences/,
core/studies/: every module of ENTRY_PACKAGES); any module placed in core/plugins/ is imported with them, so a
new entry can live there (docs/extending.md).
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class Knob:
    """A parameter an entry owns (a CUDA filter's size, a defence's strength): declared once, in the entry's spec, it
    becomes a value of the config the entry reads (`knobs`, set as "entry.knob"), a command-line flag
    (`--entry-knob`, core.studies) and a widget on the app's page (ui.widgets.knob_widgets). The type is the
    default's: int, float, str or bool."""

    name: str
    default: int | float | str | bool
    help: str
    low: float | None = None  # int and float knobs: the smallest and largest allowed value
    high: float | None = None
    choices: tuple | None = None  # str or int knobs: the allowed values
    # A parameter older than knobs (TAP's smooth_scale): its value sits at the top of every config's dict under this
    # name, set or not, so that the files and cache keys made before it was a knob keep theirs; its flag is
    # --stored-as and its link parameter ?stored_as=. One entry owns a stored name (Registry.register checks).
    stored_as: str | None = None

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
            raise ValueError(f"knob names are lower-case words joined by '_', got {self.name!r}")
        if not isinstance(self.default, (bool, int, float, str)):
            raise TypeError(f"knob {self.name}: the default is an int, float, str or bool, got {self.default!r}")
        self.check(self.default, self.name)

    @property
    def kind(self) -> type:
        return type(self.default)

    def check(self, value, where: str):
        """value as this knob's type, or a ValueError saying what is allowed."""
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where} is true or false, got {value!r}")
        elif kind in (int, float):
            whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not whole):
                raise ValueError(f"{where} is {'a whole number' if kind is int else 'a number'}, got {value!r}")
            value = kind(value)
            low, high = self.low, self.high
            if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"{where} must be in [{self.low}, {self.high}], got {value}")
        elif not isinstance(value, str):
            raise ValueError(f"{where} is a word, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value


def checked_knobs(settings, entries: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Knob settings ({"entry.knob": value} or (name, value) pairs) checked against the specs of the entries that may
    have them (name -> spec), sorted by name: the frozen form the configs keep. Bad names and values raise with what is
    allowed."""
    pairs = settings.items() if isinstance(settings, Mapping) else settings
    checked: dict[str, Any] = {}
    for pair in pairs:
        if isinstance(pair, str) or not isinstance(pair, Iterable) or len(tuple(pair)) != 2:
            raise ValueError(f"a knob setting is ('entry.knob', value), got {pair!r}")
        name, value = pair
        entry, _, knob_name = str(name).partition(".")
        knobs = {knob.name: knob for knob in getattr(entries.get(entry), "knobs", ())}
        if knob_name not in knobs:
            owned = [f"{owner}.{knob.name}" for owner, spec in entries.items() for knob in spec.knobs]
            raise ValueError(f"unknown knob {name!r}: knobs here are {', '.join(owned) or 'none'}")
        value = knobs[knob_name].check(value, name)
        if value != knobs[knob_name].default:  # a knob set to its default is unset: one config, one cache key
            checked[name] = value
    return tuple(sorted(checked.items()))


def knob_value(settings: tuple[tuple[str, Any], ...], spec, name: str):
    """The value of spec's knob `name` in checked settings, else the knob's default."""
    knob = next((knob for knob in spec.knobs if knob.name == name), None)
    if knob is None:
        raise KeyError(f"{spec.name} has no knob {name!r}")
    return dict(settings).get(f"{spec.name}.{name}", knob.default)


def knobs_of(settings: tuple[tuple[str, Any], ...], *names: str) -> dict[str, Any]:
    """The settings of the named entries' knobs, as the dict a config's file and cache key hold ({} when none)."""
    return {name: value for name, value in settings if name.partition(".")[0] in names}


@dataclass(frozen=True)
class AttackSpec:
    """An L-inf attack: `run(model, x, y, eps, alpha, steps, generator)` -> adversarial x in [0, 1]."""

    name: str
    label: str
    run: Callable[..., Any]
    iterative: bool  # uses alpha and steps (the app greys them out otherwise)
    knobs: tuple[Knob, ...] = ()  # keyword arguments of run, set through PoisonConfig.knobs when it crafts poisons


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
    knobs: tuple[Knob, ...] = ()  # its own parameters: apply reads them with config.knob(name, knob)
    # the threat whose crafting this one reuses through a defence (core/threats/adaptive.py): that threat's knobs
    # apply here too (the app draws them, the budget study varies them)
    adapts: str | None = None
    # (eps, steps) -> the crafting step its budget study scales with eps (None: no budget curve for it)
    step_size: Callable[[float, int], float] | None = None
    # Its cases in the defence grid (`python -m core defences`): case name -> the PoisonConfig values that differ from
    # the threat's defaults, and "adapts": (the case it adapts, the defence it knows) for a poison crafted through a
    # defence. None: one case named after the threat, at its defaults.
    grid_cases: dict | None = None


@dataclass(frozen=True)
class DetectorSpec:
    """A poison detector: `build(context)` -> an unfitted ScoreDetector (alibi-detect's fit / score /
    infer_threshold / predict). context: a core.detectors.detect.DetectorContext (the defender's DAE, classifier and
    trusted images, a model cache, the detectors' knobs). fit_on: what it is fitted on: "trusted" (the DAE's training
    images: detectors that learn a reference distribution), "calibration" (held-out trusted images: detectors that only
    record reference scores) or "training" (the poisoned training set itself, through a model trained on it: spectral
    signatures, activation clustering)."""

    name: str
    label: str
    build: Callable[..., Any]
    fit_on: str = "calibration"
    knobs: tuple[Knob, ...] = ()  # its own parameters: build reads them with context.knob(name, knob)


@dataclass(frozen=True)
class DefenceSpec:
    """A training-time defence (core/defences/): `apply(train, context, config)` -> the ImageSet the classifier
    trains on. adversary(config) -> a core.engine.train.Adversary (adversarial training) or None. test_input(config) ->
    a module every input goes through at test time too (grayscale), or None. input_transform(train, context, config)
    -> a module (a purifier) that every training image goes through before training and every input at test time:
    one operation on both sides. after_training(model, train, context, config) -> the defended classifier, made from
    the one trained on the poisoned set (fine-tuning, unlearning). params: the shared settings it reads besides its own
    knobs (seed, detector, another defence's stored knob: ft_sam reads fine_tune's epochs and lr as fine_tune_epochs
    and fine_tune_lr); its models' key holds them and its knobs (DefenceConfig.key)."""

    name: str
    label: str
    description: str
    apply: Callable[..., Any]
    params: tuple[str, ...] = ()
    adversary: Callable[..., Any] | None = None
    test_input: Callable[..., Any] | None = None
    input_transform: Callable[..., Any] | None = None
    after_training: Callable[..., Any] | None = None
    knobs: tuple[Knob, ...] = ()  # its own parameters: its functions read them with config.knob(name, knob)
    purifies_with_run_dae: bool = False  # images go through the run's DAE at sigma: the Threshold page previews it
    # (knob, values from the weakest to the strongest): the setting `python -m core blind` chooses on clean data
    # before any grid sees a poison (the strongest that costs at most its budget of clean accuracy); () = none to choose
    blind: tuple = ()


@dataclass(frozen=True)
class StudySpec:
    """A command of `python -m core` (core/studies/): `main(options, data)` -> exit code, where options is an
    instance of `options` (a frozen dataclass whose fields are the command's flags, core.studies.flag_specs) and data
    a core.studies.DataOptions (where GTSRB is). needs_dataset(options): whether GTSRB must be there first. writes:
    the result files it writes (core.engine.storage.ResultFile), each read, written and upgraded one way."""

    name: str
    help: str
    options: type
    main: Callable[..., int]
    needs_dataset: Callable[[Any], bool] = lambda options: True
    writes: tuple = ()  # the core.engine.storage.ResultFile(s) it writes, each read, written and upgraded one way


Spec = TypeVar("Spec")
# Knob.stored_as -> (the registry, the entry that owns it, the knob), filled by Registry.register: a stored name is
# one entry's in all the registries
_STORED_KNOBS: dict[str, tuple] = {}


def stored_knobs(*registries) -> dict[str, tuple[str, Knob]]:
    """The knobs with a stored name (Knob.stored_as) of the entries of these registries (THREATS and ATTACKS share
    PoisonConfig): stored name -> (the entry that owns it, the knob), in registration order."""
    load_builtins()
    return {name: (entry, knob) for name, (registry, entry, knob) in _STORED_KNOBS.items() if registry in registries}


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
        stored = {knob.stored_as: (self, name, knob) for knob in getattr(spec, "knobs", ()) if knob.stored_as}
        for stored_name in stored:
            registry, owner, _ = _STORED_KNOBS.get(stored_name, (self, name, None))
            if (registry, owner) != (self, name):
                raise ValueError(f"{name}: the stored name {stored_name!r} is the {registry.kind} {owner}'s already")
        self._specs[name] = spec
        _STORED_KNOBS.update(stored)
        return spec

    def unregister(self, name: str) -> None:
        spec = self._specs.pop(name, None)
        for knob in getattr(spec, "knobs", ()):
            _STORED_KNOBS.pop(knob.stored_as, None)

    def registered(self, name: str) -> Spec:
        """An entry registered so far, without loading the built-ins: for an entry built on another while the
        built-ins load (core/threats/adaptive.py), where loading them would import a module half-initialised."""
        return self._specs[name]

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


# The packages whose modules register entries, in the order their entries are listed (the CLI's choices, the app's
# menus): each package first (its __init__ may register entries and fix an order, as core/threats/ does), then every
# module in it, so a new entry is one new file in the right folder; core/plugins/ last, for entries kept outside.
ENTRY_PACKAGES = ("core.attacks", "core.threats", "core.detectors", "core.defences", "core.studies", "core.plugins")


def load_builtins() -> None:
    """Import every module of ENTRY_PACKAGES, which registers the built-in entries and the plugins."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in ENTRY_PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{name}.{info.name}")
