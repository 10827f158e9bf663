"""Studies: what `python -m core <command>` runs, one module per command, in a table like the other registries.

A study is an options dataclass and a `main(options, data)` that calls the engine, writes the study's file and
prints its table (returning the exit code). The options' fields are the command's flags: the flag is the field's
name (`run_dir` -> `--run-dir`), its type comes from the annotation (`int | None`: optional; `tuple[float, ...]`:
one or more values; `bool`: a switch), its help, choices and mutually exclusive group from `option(...)`. core/cli.py
builds the command line from STUDIES and nothing else, so adding a study, or a knob on one, is one file here (or in
core/plugins/) plus its test (docs/extending.md).
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path

from tqdm import tqdm

import core.engine.registry as registry
from core.engine.executor import ExecutorConfig
from core.engine.registry import STUDIES, StudySpec
from core.experiments.run import Run, warn_if_outdated

__all__ = [
    "STUDIES",
    "StudySpec",
    "DataOptions",
    "ExecutorOptions",
    "Stages",
    "option",
    "knob_flag",
    "knob_option",
    "knobs_in",
    "flag_specs",
    "load_run",
]

RUNS_DIR = Path("runs")  # where commands write by default (relative to the working directory)


KNOB_TABLES = ("attacks", "threats", "detectors", "defences")  # the registries whose entries may own knobs


def knob_option(*tables: str):
    """A study option holding the knobs of the named registries' entries (KNOB_TABLES), as ("entry.knob", value)
    pairs: each knob of each registered entry becomes its own flag, --entry-knob (core/engine/registry.py: Knob), so a
    knob declared in an entry's spec reaches the command line with nothing else to write."""
    unknown = set(tables) - set(KNOB_TABLES)
    if unknown or not tables:
        raise ValueError(f"knob_option takes some of {KNOB_TABLES}, got {tables}")
    return field(default=(), metadata={"knobs_of": tables})


def knobs_in(settings: tuple, *tables: str) -> tuple:
    """The knob settings (("entry.knob", value) pairs) whose entry is registered in one of `tables` ("threats",
    ...)."""
    names = {name for table in tables for name in getattr(registry, table.upper()).names()}
    return tuple((name, value) for name, value in settings if name.partition(".")[0] in names)


def option(
    default=None,
    help: str | Callable[[], str] = "",
    choices: tuple | Callable[[], tuple] | None = None,
    group: str | None = None,
    required: bool = False,
):
    """A study option: its default, help text, allowed values (for both: a function returning them when they come
    from a registry that may gain entries), mutually exclusive group, and whether the flag must be given."""
    metadata = {"help": help, "choices": choices, "group": group, "required": required}
    if isinstance(default, (list, dict, set)):
        raise TypeError("study options are frozen: use a tuple for a default of several values")
    return field(default=default, metadata=metadata)


def config_flags(config_type: type):
    """A class decorator (under @dataclass) that gives a study's options every field of `config_type` declared with
    a help text (core.defences.flag): same name, type, default, help and choices. The parameter is declared once,
    in its config; `config_values(options, config_type)` hands the values back."""

    def add(cls: type) -> type:
        hints = typing.get_type_hints(config_type)
        for each in fields(config_type):
            if "help" in each.metadata:
                cls.__annotations__[each.name] = hints[each.name]
                setattr(cls, each.name, option(each.default, each.metadata["help"], each.metadata.get("choices")))
        return cls

    return add


def config_values(options, config_type: type) -> dict:
    """The values of the flags config_flags added, by field name, for config_type(**...)."""
    return {each.name: getattr(options, each.name) for each in fields(config_type) if "help" in each.metadata}


@dataclass(frozen=True)
class DataOptions:
    """Where GTSRB is, and the threads to use: the options every command accepts, before or after its name."""

    data_root: str | None = None
    download: bool = False
    threads: int | None = None


@dataclass(frozen=True)
class ExecutorOptions:
    """Where a grid's cells run (core.engine.executor): inherited by the studies that have cells."""

    executor: str = option("local", "local: in this process; ray: one task per cell", choices=("local", "ray"))
    ray_address: str | None = option(None, "'auto' or ray://host:port (default: start a Ray instance on this machine)")
    cpus_per_cell: int | None = option(None, "threads per cell under every executor (default: this machine's count)")
    gpus_per_cell: float = option(0.0, "ray: GPU share per cell (0.25: four a GPU)")

    def executor_config(self):
        return ExecutorConfig(self.executor, self.ray_address, self.cpus_per_cell, self.gpus_per_cell)


@dataclass(frozen=True)
class FlagSpec:
    """One command-line flag of a study option, as core/cli.py hands it to argparse."""

    name: str  # the field
    flag: str  # --the-field
    kind: type  # int, float, str, Path or bool (the type of each value)
    many: bool  # one or more values (a tuple field)
    default: typing.Any
    help: str
    choices: tuple | None
    group: str | None
    required: bool
    knob: str | None = None  # a knob's flag: "entry.knob", collected into the field `into` as ("entry.knob", value)
    into: str | None = None


def parse_truth(text: str) -> bool:
    """A bool knob's flag value: true / false (also yes / no, 1 / 0)."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in words:
        raise ValueError(f"expected true or false, got {text!r}")
    return words[text.lower()]


parse_truth.__name__ = "true-or-false"  # what argparse names when a value is neither


def knob_flag(entry: str, knob) -> str:
    """A knob's flag: --entry-knob (--cuda-kernel-size), or --stored-as for a knob older than knobs (--trigger-size)."""
    return "--" + (knob.stored_as or f"{entry}-{knob.name}").replace("_", "-")


def knob_flag_specs(field_name: str, tables: tuple[str, ...]) -> list[FlagSpec]:
    """One flag per knob of every entry registered in the named tables (knob_flag), default unset (the spec's)."""
    specs = []
    for table in tables:
        for entry in getattr(registry, table.upper()).specs():
            for knob in entry.knobs:
                help_text = f"{entry.label}: {knob.help} (default {knob.default})"
                specs.append(
                    FlagSpec(
                        name=f"knob:{entry.name}.{knob.name}",
                        flag=knob_flag(entry.name, knob),
                        kind=knob.kind,
                        many=False,
                        default=None,
                        help=help_text,
                        choices=knob.choices,
                        group=None,
                        required=False,
                        knob=f"{entry.name}.{knob.name}",
                        into=field_name,
                    )
                )
    return specs


def flag_specs(options_type: type) -> list[FlagSpec]:
    """The flags of a study's options dataclass: its own fields in order, then those it inherits (the executor's)."""
    hints = typing.get_type_hints(options_type)
    inherited = {each.name for base in options_type.__mro__[1:] if is_dataclass(base) for each in fields(base)}
    specs = []
    for each in sorted(fields(options_type), key=lambda each: each.name in inherited):
        meta = each.metadata
        if "knobs_of" in meta:
            specs.extend(knob_flag_specs(each.name, meta["knobs_of"]))
            continue
        kind, many = _value_type(hints[each.name], f"{options_type.__name__}.{each.name}")
        choices = meta.get("choices")
        default = None if each.default is MISSING else each.default
        specs.append(
            FlagSpec(
                name=each.name,
                flag="--" + each.name.replace("_", "-"),
                kind=kind,
                many=many,
                default=default,
                help=help_text() if callable(help_text := meta.get("help", "")) else help_text,
                choices=tuple(choices()) if callable(choices) else choices,
                group=meta.get("group"),
                required=meta.get("required", False),
            )
        )
    return specs


def _value_type(hint, where: str) -> tuple[type, bool]:
    """(type of each value, several values?) of an annotation: X, X | None, tuple[X, ...] or tuple[X, ...] | None."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(others) != 1:
            raise TypeError(f"{where}: a study option is one type, optionally | None; got {hint}")
        hint = others[0]
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: several values are written tuple[X, ...]; got {hint}")
        return _value_type(args[0], where)[0], True
    if hint not in (int, float, str, Path, bool):
        raise TypeError(f"{where}: study options are int, float, str, Path or bool (or tuples of them); got {hint}")
    return hint, False


def load_run(run_dir: Path):
    """A finished run's folder, with a note on stderr when it was made with an older recipe."""
    run = Run.load(run_dir)
    warn_if_outdated(run)
    return run


class Stages:
    """The command line's progress: one tqdm bar per stage, on stderr (the one progress shape: stage, done, total).
    Every callable in `listeners` gets the same reports (a background job's status file: core.jobs)."""

    listeners: list = []

    def __init__(self):
        self.stage, self.bar = None, None

    def __enter__(self) -> "Stages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="step", leave=True, dynamic_ncols=True, mininterval=0.5)
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        for listener in self.listeners:
            listener(stage, done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stage, self.bar = None, None


def note(message: str) -> None:
    """A line for the person at the terminal that is not part of the study's table (stderr)."""
    print(message, file=sys.stderr)
