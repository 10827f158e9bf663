"""README and docs/ filled from the shipped files: every measured number they state lives in a generated block.

A block is two HTML comments around generated Markdown:

    <!-- generated: NAME (python -m core docs) -->
    ...what BLOCKS[NAME](root) returns...
    <!-- end generated -->

`python -m core docs` rewrites every block of DOCUMENTS from the files under the project root (checkpoints/,
bench/results/); `--check` rewrites nothing and names each block whose text differs (CI runs it through the tests).
Hand-written prose around the blocks explains and links; tests/test_docs.py fails when it states a measured number
outside a block. A block named `bench:PATH` is that benchmark result file, verbatim.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path

from core.detectors.detect import filter_label
from core.engine.storage import PROJECT_ROOT
from core.experiments.blind import BLIND_FILE, format_blind_settings
from core.experiments.budget import load_budget
from core.experiments.compare import SHIPPED_COMPARISONS, format_comparison, load_comparison
from core.experiments.defence_grid import SHIPPED_DEFENCE_GRIDS, load_shipped_grids
from core.experiments.run import Run
from core.reporting.findings import findings
from core.reporting.report import (
    DEFENCE_COST_FILE,
    defence_grid_markdown,
    format_abstention,
    format_robustness,
    format_smoothness,
    markdown_tables,
    report_budget,
    report_comparison,
    report_defence_grid,
    report_defence_ranking,
    report_run,
    report_sweep,
)

PROJECT = PROJECT_ROOT
DOCUMENTS = (
    "README.md",
    "docs/results.md",
    "docs/cli.md",
    "docs/benchmarks.md",
    "docs/cluster.md",
    "docs/app.md",
    "docs/extending.md",
)
BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[^ ]+) \(python -m core docs\) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
BLOCKS: dict[str, Callable[[Path], str]] = {}


def block(name: str):
    """Register a generator of the block `name`: root (the project folder) -> Markdown."""

    def register(function: Callable[[Path], str]) -> Callable[[Path], str]:
        BLOCKS[name] = function
        return function

    return register


def fenced(text: str) -> str:
    """Text a command prints, as the command prints it."""
    return f"```text\n{text.strip(chr(10))}\n```"


def generate(name: str, root: Path) -> str:
    if name.startswith("bench:"):
        return fenced((root / name.removeprefix("bench:")).read_text())
    if name not in BLOCKS:
        raise KeyError(f"unknown generated block {name!r}: choose from {', '.join(BLOCKS)} or bench:PATH")
    return BLOCKS[name](root)


def fill(text: str, root: Path, cache: dict | None = None) -> tuple[str, list[str]]:
    """The text with every block regenerated, and the names of the blocks whose content changed."""
    cache = {} if cache is None else cache
    stale = []

    def regenerate(match: re.Match) -> str:
        name = match["name"]
        if name not in cache:
            cache[name] = generate(name, root).strip("\n") + "\n"
        if cache[name] != match["body"]:
            stale.append(name)
        return match[1] + cache[name] + match[4]

    return BLOCK.sub(regenerate, text), stale


def update(root: Path = PROJECT, documents=DOCUMENTS, write: bool = True) -> dict[str, list[str]]:
    """Regenerate every block of the documents (written in place unless write is False): document -> stale blocks."""
    cache: dict[str, str] = {}
    stale = {}
    for document in documents:
        path = root / document
        text, changed = fill(path.read_text(), root, cache)
        if changed:
            stale[document] = changed
            if write:
                path.write_text(text)
    return stale


def outside_blocks(text: str) -> str:
    """The hand-written part of a document: everything but its generated blocks and code blocks."""
    text = BLOCK.sub("", text)
    return re.sub(r"```.*?```", "", text, flags=re.S)


# ---- the blocks ----------------------------------------------------------------------------------------------


def _run(root: Path, name: str):
    return Run.load(root / "checkpoints" / name)


def _findings(root: Path) -> list[dict]:
    grid_paths = [root / path.relative_to(PROJECT) for path in SHIPPED_DEFENCE_GRIDS]
    grid = load_shipped_grids([path for path in grid_paths if path.exists()])
    grid_files = tuple(str(path.parent.relative_to(root)) for path in grid_paths if path.exists())
    sweep_runs = tuple((_run(root, name), f"checkpoints/{name}") for name in ("sweep_paper", "sweep_tap"))
    return findings(_run(root, "paper"), grid, "checkpoints/paper", grid_files, sweep_runs)


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


@block("findings")
def findings_list(root: Path) -> str:
    """README's front page: each finding in one line, its seeds, and a link to its section of docs/results.md."""
    lines = []
    for finding in _findings(root):
        seeds = f"{finding['seeds']} seed{'s' if finding['seeds'] > 1 else ''}"
        lines.append(f"- **{finding['title']}** ({seeds}; [details](docs/results.md#{_anchor(finding['title'])}))")
    return "\n".join(lines)


@block("findings_full")
def findings_sections(root: Path) -> str:
    """docs/results.md's findings: what the paper claims, what the files measured, where each number comes from."""
    parts = []
    for finding in _findings(root):
        seeds = f"{finding['seeds']} seed{'s' if finding['seeds'] > 1 else ''}"
        parts.append(
            f"### {finding['title']}\n\n*{seeds}.* "
            + (f"The paper {finding['paper']}. " if finding["paper"] else "")
            + f"{finding['text']}\n\nFrom {finding['source']}."
        )
    return "\n\n".join(parts)


@block("paper_run_tables")
def paper_run_tables(root: Path) -> str:
    return markdown_tables(_run(root, "paper"))


@block("paper_run_gaps")
def paper_run_gaps(root: Path) -> str:
    return fenced(report_run(_run(root, "paper"), tables=False))


@block("paper_sweep")
def paper_sweep(root: Path) -> str:
    return fenced(report_sweep(_run(root, "paper")))


@block("sweep_presets")
def sweep_presets(root: Path) -> str:
    parts = []
    for name in ("sweep_paper", "sweep_tap"):
        run = _run(root, name)
        parts.append(f"checkpoints/{name}: {run.config.summary()}\n{report_sweep(run)}")
    return fenced("\n\n".join(parts))


@block("robustness")
def robustness(root: Path) -> str:
    run = _run(root, "paper")
    return fenced(format_robustness(run, run.robustness))


@block("abstention")
def abstention(root: Path) -> str:
    run = _run(root, "paper")
    return fenced(format_abstention(run.abstention["model"], run.abstention))


@block("detectors_paper_run")
def detectors_paper_run(root: Path) -> str:
    """Every detector scored on the paper run's training set (detectors.json)."""
    detectors = _run(root, "paper").detectors
    lines = ["| detector | ROC AUC | precision | recall |", "| --- | --- | --- | --- |"]
    for name, quality in detectors["detectors"].items():
        lines.append(
            f"| {filter_label(name)} | {quality['auroc']:.3f} | {quality['precision']:.3f} | {quality['recall']:.3f} |"
        )
    return "\n".join(lines) + (
        f"\n\n{detectors['n_poisoned']:,} poisons in {detectors['n_train']:,} training images, each detector dropping "
        "what the run's threshold rule drops."
    )


@block("comparisons")
def comparisons(root: Path) -> str:
    parts = []
    for label, path in SHIPPED_COMPARISONS.items():
        path = root / path.relative_to(PROJECT)
        comparison = load_comparison(path)
        parts.append(
            f"{path.relative_to(root)} ({label})\n{format_comparison(comparison)}\n{report_comparison(comparison)}"
        )
    return fenced("\n\n".join(parts))


@block("defence_grids")
def defence_grids(root: Path) -> str:
    paths = [root / path.relative_to(PROJECT) for path in SHIPPED_DEFENCE_GRIDS]
    grid = load_shipped_grids([path for path in paths if path.exists()])
    files = ", ".join(str(path.parent.relative_to(root)) for path in paths if path.exists())
    return f"Merged from {files}.\n\n{defence_grid_markdown(grid)}\n\n" + fenced(report_defence_grid(grid))


@block("defence_ranking")
def defence_ranking(root: Path) -> str:
    paths = [root / path.relative_to(PROJECT) for path in SHIPPED_DEFENCE_GRIDS]
    grid = load_shipped_grids([path for path in paths if path.exists()])
    files = ", ".join(str(path.parent.relative_to(root)) for path in paths if path.exists())
    cost_file = root / DEFENCE_COST_FILE
    costs = json.loads(cost_file.read_text()) if cost_file.exists() else None
    cost_source = (
        f"costs from `{DEFENCE_COST_FILE}` (`python bench/defence_cost.py --out {DEFENCE_COST_FILE}`: "
        f"{costs['preset']} preset, {costs['train_images']:,} training images, {costs['threads']} threads)"
        if costs
        else "costs not measured yet"
    )
    return (
        f"Ranked from {files} (merged; each defence read against the references trained beside it); "
        f"{cost_source}.\n\n{report_defence_ranking(grid, costs)}"
    )


@block("blind_settings")
def blind_settings(root: Path) -> str:

    # checkpoints/blind, then any later study's own folder (checkpoints/blind_i_bau: a defence added after the grid
    # that reads checkpoints/blind was made, kept apart so that grid's frozen settings stay what it used)
    paths = sorted((root / "checkpoints").glob(f"blind*/{BLIND_FILE.name}"), key=lambda path: path.parent.name)
    blocks = []
    for path in paths:
        settings = BLIND_FILE.read(path)
        config = settings["config"]
        where = f"From `{path.relative_to(root)}` ({config['preset']} preset, seed {config['seed']})."
        blocks.append(f"{where}\n\n{format_blind_settings(settings)}")
    return "\n\n".join(blocks) or "Not made yet: `python -m core blind --out checkpoints/blind`."


@block("budget")
def budget(root: Path) -> str:
    return fenced(report_budget(load_budget(root / "checkpoints" / "budget" / "budget.json")))


@block("smoothness")
def smoothness(root: Path) -> str:
    return fenced(format_smoothness(json.loads((root / "checkpoints" / "smoothness" / "smoothness.json").read_text())))


@block("cluster_cost")
def cluster_cost(root: Path) -> str:
    """Per shipped grid, its cells' own `seconds`: median and longest, and the threads each ran on where recorded (a
    cell resumed from cached models records only what it recomputed)."""
    rows = ["| file | cells | median cell | longest cell | threads per cell |", "| --- | --- | --- | --- | --- |"]
    for name in ("defences", "defences_adaptive", "backdoor_drop", "purify_eot"):
        grid = json.loads((root / "checkpoints" / name / "defences.json").read_text())
        cells = [cell for run in grid["runs"].values() for cell in run.values() if cell.get("seconds")]
        threads = sorted({str(cell["machine"]["threads"]) for cell in cells if cell.get("machine")}) or ["not recorded"]
        seconds = [cell["seconds"] for cell in cells]
        rows.append(
            f"| `checkpoints/{name}/defences.json` | {len(cells)} | {statistics.median(seconds) / 60:.0f} min | "
            f"{max(seconds) / 60:.0f} min | {', '.join(threads)} |"
        )
    comparison = json.loads((root / "checkpoints" / "compare" / "compare.json").read_text())
    cells = len(comparison["config"]["threats"]) * len(comparison["runs"])
    run = json.loads((root / "checkpoints" / "paper" / "results.json").read_text())
    return "\n".join(rows) + (
        f"\n\n`checkpoints/compare/compare.json`: {cells} cells, {comparison['seconds'] / 60:.0f} min in its last "
        f"invocation. One paper-preset run (`checkpoints/paper/results.json`): {run['seconds'] / 60:.0f} min; a "
        "paper-preset comparison cell is at least one such run plus a teacher and a student per filter."
    )
