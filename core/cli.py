"""Command line: `python -m core <command>`, one command per study in core.engine.registry.STUDIES (core/studies/).

It parses, calls the study and returns its exit code: every subcommand and flag is generated from the table and from
each study's options dataclass (core.studies.flag_specs), so nothing here names a study or a knob. Errors end in one
`error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.engine.data import DatasetNotFoundError, require_dataset
from core.engine.executor import GridError
from core.engine.registry import STUDIES
from core.engine.storage import CheckpointError
from core.engine.train import TrainingCancelled, use_threads
from core.studies import DataOptions, flag_specs, parse_truth


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + error; we print one line
        self.exit(2, f"error: {message} (see --help)\n")


def _global_options(parser: argparse.ArgumentParser, default) -> None:
    """--data-root and --download, accepted before and after the subcommand."""
    parser.add_argument("--data-root", default=default, help="GTSRB root (default: $GTSRB_ROOT, else ./data)")
    parser.add_argument(
        "--download",
        action="store_true",
        default=default,
        help="let torchvision download GTSRB into the data root (needs internet)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=default,
        help="CPU threads to compute with (default: all; the app's jobs: one less)",
    )


def add_study_flags(parser: argparse.ArgumentParser, options_type: type) -> None:
    """One flag per field of a study's options dataclass; a group of fields becomes a mutually exclusive group,
    required when its fields say so."""
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for spec in flag_specs(options_type):
        shown_help = spec.help.replace("%", "%%")  # argparse %-formats help texts ("10%" would raise)
        if spec.group is not None:
            if spec.group not in groups:
                groups[spec.group] = parser.add_mutually_exclusive_group(required=spec.required)
            target, required = groups[spec.group], False
        else:
            target, required = parser, spec.required
        if spec.knob is not None:  # an entry's own knob: its value or unset (the entry's default)
            kind = parse_truth if spec.kind is bool else spec.kind
            metavar = None if spec.choices else spec.knob.partition(".")[2].upper()
            alone = {"nargs": "?", "const": True} if spec.kind is bool else {}  # --craft-augment alone: true
            parser.add_argument(
                spec.flag, dest=spec.name, type=kind, choices=spec.choices, metavar=metavar, help=shown_help, **alone
            )
            continue
        if spec.kind is bool:
            target.add_argument(spec.flag, dest=spec.name, action="store_true", default=spec.default, help=shown_help)
            continue
        target.add_argument(
            spec.flag,
            dest=spec.name,
            type=Path if spec.kind is Path else spec.kind,
            nargs="+" if spec.many else None,
            choices=spec.choices,
            default=list(spec.default) if spec.many and spec.default is not None else spec.default,
            required=required,
            help=shown_help,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m core", description="DAE-filtered defensive distillation on poisoned GTSRB.")
    _global_options(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for study in sorted(STUDIES.specs(), key=lambda study: study.name):
        sub = commands.add_parser(study.name, help=study.help, description=study.help)
        _global_options(sub, argparse.SUPPRESS)  # after the subcommand too, without overriding the global value
        add_study_flags(sub, study.options)
    return parser


def parse(argv: list[str]) -> tuple[str, object, DataOptions]:
    """(study name, its options, where GTSRB is) from a command line; bad values raise ValueError."""
    args = build_parser().parse_args(argv)
    study = STUDIES[args.command]
    values: dict = {}
    for spec in flag_specs(study.options):
        value = getattr(args, spec.name)
        if spec.into is not None:  # a knob: collected as ("entry.knob", value) pairs, the set ones only
            values[spec.into] = values.get(spec.into, ()) + (((spec.knob, value),) if value is not None else ())
            continue
        values[spec.name] = tuple(value) if isinstance(value, list) else value
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    return args.command, study.options(**values), DataOptions(args.data_root, bool(args.download), args.threads)


def main(argv: list[str] | None = None) -> int:
    try:
        name, options, data = parse(sys.argv[1:] if argv is None else argv)
        study = STUDIES[name]
        if data.threads is not None:
            use_threads(data.threads)
        if study.needs_dataset(options):
            require_dataset(data.data_root, data.download)
        return study.main(options, data)
    except (ValueError, TypeError, DatasetNotFoundError, CheckpointError, TrainingCancelled) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except GridError as error:  # the other cells finished and were saved
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a folder removed mid-run: every file written so far is whole (atomic)
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"error: {error.strerror or error}{where}; what was written before is kept, rerun to resume",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; finished models are cached and reused by the next run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
