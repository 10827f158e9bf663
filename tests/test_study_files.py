"""One pattern for a study's file (core.engine.storage.ResultFile, listed in each StudySpec's `writes`): every shipped
file reads through it, and any bytes in its place read as a dict or as a CheckpointError that names the command that
remakes it."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.engine.registry import STUDIES
from core.engine.storage import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
FILES = {file.name: file for study in STUDIES.specs() for file in study.writes}


def test_the_studies_that_write_results_declare_their_files():
    assert {"compare.json", "defences.json", "budget.json", "sweep.json", "smoothness.json"} <= set(FILES)
    assert {"robustness.json", "detectors.json", "abstention.json", "seeds.json"} <= set(FILES)


def test_every_shipped_result_file_reads_through_its_study():
    shipped = [path for path in (ROOT / "checkpoints").rglob("*.json") if path.name in FILES]
    assert len(shipped) >= 15, shipped  # the grids, sweeps and the paper run's follow-ups
    for path in shipped:
        data = FILES[path.name].read(path)
        assert isinstance(data, dict) and data, path


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_missing_result_file_is_none_or_says_how_to_make_it(name, tmp_path):
    file = FILES[name]
    assert file.read(tmp_path / name) is None
    with pytest.raises(CheckpointError, match="run `python -m core "):
        file.read(tmp_path / name, missing_ok=False)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(FILES)),
    content=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
            ),
            max_leaves=10,
        ).map(lambda value: json.dumps(value).encode()),
    ),
)
def test_any_bytes_in_a_result_files_place_read_or_say_what_to_rerun(name, content, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    try:
        data = FILES[name].read(path)
    except CheckpointError as error:
        assert "is corrupt or from another tool" in str(error) and "rerun `python -m core " in str(error)
        return
    assert isinstance(data, dict)


def test_a_result_file_is_written_whole(tmp_path):
    file = FILES["compare.json"]
    file.write(tmp_path / "compare.json", {"summary": {}, "runs": {}})
    assert file.read(tmp_path / "compare.json") == {"summary": {}, "runs": {}}
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write leaves no temporary file
