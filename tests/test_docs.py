"""README and docs/ cannot drift from the shipped files (issue 36): every generated block equals what `python -m core
docs` makes of the files now; a changed shipped file makes the check name its block; the hand-written prose states no
measured number (settings read from the configs are allowed); README is a front page."""

import json
import re
import shutil
from dataclasses import asdict, fields, is_dataclass

import pytest

from core.reporting.docs import BLOCK, DOCUMENTS, PROJECT, outside_blocks, update

# A measured number as prose would state one: a decimal, a percentage, a duration, a ratio, a "±".
MEASURED = re.compile(
    r"(?<![\w.\-/])(\d[\d,]*\.\d+\s?%|\d+(?:\.\d+)?\s?(?:s|ms|min|minutes|hours|h)\b|\d+\.\d+x\b|\d+\.\d+|± ?\d)"
)


def setting_values() -> set[str]:
    """Every number a config or a published anchor holds, as prose writes it: 0.01, 10%, 8/255's 0.031, 76.09%."""
    from core import defences, jobs
    from core.detectors import detect
    from core.experiments import pipeline, sweep
    from core.experiments.pipeline import PAPER_RESULTS, preset

    numbers: set[float] = set()

    def collect(value) -> None:
        if is_dataclass(value):
            for field in fields(value):
                collect(getattr(value, field.name))
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers.add(float(value))

    for name in ("paper", "quick", "tiny", "compare", "sweep"):
        collect(asdict(preset(name)))
        collect(preset(name).poison.to_dict())  # with the threats' stored knobs (trigger_size, ...)
    collect(PAPER_RESULTS)
    collect(defences.DefenceConfig().to_dict())  # with the defences' stored knobs (sigma, jpeg_quality, ...)
    collect(asdict(sweep.SweepConfig()))
    numbers |= {detect.PAPER_INITIAL_THRESHOLD, detect.PAPER_INFERRED_THRESHOLD, 8 / 255, 16 / 255, 2 / 255}
    numbers |= {jobs.CANCEL_GRACE_SECONDS}
    written = set()
    for number in numbers:
        written |= {f"{number:g}", f"{number:.3f}", f"{number:.2f}", f"{number * 100:.2f}%", f"{number * 100:g}%"}
        written |= {f"{number:g} s", f"{number:g}s"}
    assert pipeline.MODEL_NAMES  # the configs were read
    return written


def test_every_generated_block_is_current():
    stale = update(write=False)
    assert not stale, f"stale generated blocks (run `python -m core docs`): {stale}"


def test_every_document_has_blocks_and_every_block_a_generator():
    from core.reporting.docs import BLOCKS

    for document in DOCUMENTS:
        text = (PROJECT / document).read_text()
        for match in BLOCK.finditer(text):
            assert match["name"] in BLOCKS or match["name"].startswith("bench:"), (document, match["name"])
    assert BLOCK.search((PROJECT / "README.md").read_text()), "README states its findings in a generated block"


def test_a_changed_shipped_file_makes_the_check_name_its_block(tmp_path):
    """A copy of the project whose compare.json holds one number changed: the check names the comparisons block."""
    for name in ("README.md", "docs"):
        (shutil.copytree if (PROJECT / name).is_dir() else shutil.copy)(PROJECT / name, tmp_path / name)
    (tmp_path / "bench").symlink_to(PROJECT / "bench")
    (tmp_path / "checkpoints").mkdir()
    for folder in (PROJECT / "checkpoints").iterdir():
        if folder.name != "compare":
            (tmp_path / "checkpoints" / folder.name).symlink_to(folder)
    (tmp_path / "checkpoints" / "compare").mkdir()
    comparison = json.loads((PROJECT / "checkpoints" / "compare" / "compare.json").read_text())
    first_threat = next(iter(comparison["runs"]["0"]))
    comparison["runs"]["0"][first_threat]["reference"]["clean_reference"]["clean_acc"] -= 0.05
    (tmp_path / "checkpoints" / "compare" / "compare.json").write_text(json.dumps(comparison))
    stale = update(tmp_path, write=False)
    assert stale == {"docs/results.md": ["comparisons"]}, stale


@pytest.mark.parametrize("document", DOCUMENTS)
def test_hand_written_prose_states_no_measured_number(document):
    allowed = setting_values()
    prose = outside_blocks((PROJECT / document).read_text())
    prose = re.sub(r"`[^`]*`", "", prose)  # code: commands, flags, file names
    prose = re.sub(r"\]\([^)]*\)", "]", prose)  # link targets
    found = []
    for number, line in ((m.group(0), prose[: m.start()].count("\n") + 1) for m in MEASURED.finditer(prose)):
        if number.replace(",", "") not in allowed and number not in allowed:
            found.append(f"line ~{line}: {number}")
    assert not found, f"{document} states measured numbers outside generated blocks: {found[:20]}"


def test_readme_is_a_front_page():
    text = (PROJECT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 260, len(lines)
    assert "make app" in "\n".join(lines[:6]) and "make test" in "\n".join(lines[:6])
    for document in DOCUMENTS[1:]:
        assert document in text, f"README links {document}"
