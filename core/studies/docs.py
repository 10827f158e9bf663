"""`python -m core docs`: README and docs/ regenerated from the shipped files (core/reporting/docs.py); `--check` only
says which generated blocks are stale (exit 1), as CI does."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from core.reporting.docs import DOCUMENTS, update
from core.studies import STUDIES, DataOptions, StudySpec, option


@dataclass(frozen=True)
class DocsOptions:
    check: bool = option(False, "write nothing; exit 1 naming every stale block")
    root: Path = option(Path(__file__).resolve().parents[2], "the project folder (its checkpoints/ and documents)")


def main(options: DocsOptions, data: DataOptions) -> int:
    missing = [document for document in DOCUMENTS if not (options.root / document).is_file()]
    if missing:
        raise FileNotFoundError(f"no {', '.join(missing)} under {options.root}")
    stale = update(options.root, write=not options.check)
    for document, blocks in stale.items():
        verb = "is stale" if options.check else "regenerated"
        for name in blocks:
            print(f"{document}: block {name} {verb}", file=sys.stderr if options.check else sys.stdout)
    if options.check and stale:
        print("error: generated blocks differ from the shipped files: run `python -m core docs`", file=sys.stderr)
        return 1
    if not stale:
        print("every generated block is current")
    return 0


STUDIES.register(
    StudySpec(
        "docs",
        "README and docs/ regenerated from the shipped files (--check: name the stale blocks)",
        DocsOptions,
        main,
        needs_dataset=lambda options: True,
    )
)
