"""What a hostile new user found (issue 13), each reproduced through AppTest on a copy of the shipped run: broken run
files give a message naming the file, never a traceback; shared links reproduce the view and say what they ignored;
uploads in odd formats reach the models as a person would see them."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers import app, assert_clean, on_page


def broken_copy(run_directory, tmp_path, name: str, how: str = "truncate"):
    folder = tmp_path / "broken"
    shutil.copytree(run_directory, folder)
    path = folder / name
    if how == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(1000)
    else:
        path.unlink()
    return folder


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.error, *at.sidebar.error, *at.warning, *at.sidebar.warning])


def test_your_images_with_a_truncated_student_says_which_file(run_directory, tmp_path):
    folder = broken_copy(run_directory, tmp_path, "filter_distillation.safetensors")
    at = on_page(str(folder), "pages/your_images.py")
    assert not at.exception, [e.value for e in at.exception]
    assert "filter_distillation.safetensors" in errors(at)


def test_threshold_with_truncated_detector_scores_gives_a_message(run_directory, tmp_path):
    folder = broken_copy(run_directory, tmp_path, "detector_scores.safetensors")
    at = on_page(str(folder), "pages/threshold.py")
    at.selectbox(key="score").set_value("supervised").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "detector_scores.safetensors" in errors(at)
    at.selectbox(key="score").set_value("dae").run()  # switching back works
    assert_clean(at)


def test_switching_the_score_starts_from_that_scores_run_threshold_even_from_a_link(run_directory):
    """A DAE threshold carried to MagNet dropped 78% of the training set instead of the run's 10%."""
    from core.experiments.run import Run

    run = Run.load(run_directory)
    at = app(run_directory)
    at.query_params["threshold_dae"] = "0.02314"
    at.switch_page("pages/threshold.py").run()  # opened at /threshold?threshold_dae=0.02314
    at.selectbox(key="score").set_value("magnet").run()
    assert_clean(at)
    slider, exact = at.slider(key="threshold_magnet").value, at.number_input(key="threshold_input").value
    assert slider == pytest.approx(run.threshold_of("magnet"), rel=1e-6)
    assert at.session_state["threshold"] == pytest.approx(slider)  # what Your images and Distillation read
    assert exact == pytest.approx(slider, rel=1e-9)


def test_a_shared_threshold_link_sets_the_slider_and_the_exact_value(run_directory):
    at = app(run_directory)
    at.query_params["threshold_dae"] = "0.02281"
    at.switch_page("pages/threshold.py").run()  # opened at /threshold?threshold_dae=0.02281
    assert at.slider(key="threshold_dae").value == pytest.approx(0.02281)
    assert at.number_input(key="threshold_input").value == pytest.approx(0.02281)


def test_a_link_with_a_custom_value_shows_and_uses_it(run_directory):
    """/poison?eps=0.05 showed the slider at 0.05 while the caption and preview used the preset's 0.01."""
    at = app(run_directory)
    at.query_params["eps"] = "0.05"
    at.switch_page("pages/poison.py").run()
    assert_clean(at)
    assert at.sidebar.radio(key="preset").value == "Custom"
    assert at.slider(key="eps").value == pytest.approx(0.05)
    assert any("eps 0.05 is 12.75 grey levels" in c.value for c in at.caption)


def test_an_invalid_link_value_is_reported_and_the_default_shown(run_directory):
    at = app(run_directory)
    at.query_params.update(preset="Custom", eps="lots", attack="nuke")
    at.switch_page("pages/poison.py").run()  # opened at /poison?...
    assert not at.exception
    said = " ".join(t.value for t in at.toast) + " ".join(c.value for c in at.caption)
    assert "eps=lots" in said and "attack=nuke" in said, said
    assert at.slider(key="eps").value == pytest.approx(0.01)  # the paper's default


def test_a_broken_run_folder_is_named_in_the_sidebar_with_the_real_button(run_directory, tmp_path):
    folder = broken_copy(run_directory, tmp_path, "scores.safetensors", how="delete")
    at = app(str(folder))
    at.run()
    message = " ".join(w.value for w in at.sidebar.warning)
    assert "scores.safetensors" in message and folder.name in message
    assert "shipped demo run is missing" not in message
    from tests.helpers import PAGES  # noqa: F401 - the button named exists on the Overview page

    at.switch_page("pages/overview.py").run()
    labels = [b.label for b in at.button]
    named = [label for label in labels if label in message]
    assert named, (message, labels)


def _png16(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((48, 48), value, dtype=np.uint16), "I;16").save(buffer, "PNG")
    return buffer.getvalue()


def test_odd_uploads_and_drawn_signs_through_the_page(run_directory):
    at = on_page(run_directory, "pages/your_images.py")
    at.file_uploader[0].set_value(
        [("deep.png", _png16(30000), "image/png"), ("junk.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp")]
    ).run()
    assert not at.exception
    assert "junk.webp" in errors(at)
    assert any(m.value.startswith("#### deep.png") for m in at.markdown)
    at.multiselect(key="drawn_signs").set_value(["stop_1", "speed_60_2"]).run()
    assert not at.exception
    shown = " ".join(m.value.replace("\\", "") for m in at.markdown)  # names are escaped: stop\_1.png
    assert "stop_1.png" in shown and "speed_60_2.png" in shown
    assert "MC dropout" in shown  # the student's abstention verdict beside its top-5
    cells = [str(value) for table in at.table for value in table.value.to_numpy().ravel()]
    assert all("e-" not in cell or cell == "<1e-4" for cell in cells), cells  # probabilities formatted


# ---- the CLI: one error line naming the file, before any work ---------------------------------------------------


def cli(capsys, *argv) -> tuple[int, str]:
    from core.cli import main

    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("broken", "how", "command"),
    [
        ("filter_distillation.safetensors", "truncate", ["robustness", "--test-subset", "0.01"]),
        ("scores.safetensors", "delete", ["sweep", "--points", "2", "--seeds", "1"]),
        ("results.json", "truncate", ["sweep", "--points", "2", "--seeds", "1"]),
    ],
)
def test_a_broken_run_file_stops_the_cli_before_any_work(run_directory, tmp_path, capsys, broken, how, command):
    folder = broken_copy(run_directory, tmp_path, broken, how)
    if broken == "results.json":
        (folder / broken).write_bytes(bytes(range(256)))  # not even UTF-8
    before = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    code, err = cli(capsys, command[0], "--run-dir", str(folder), *command[1:])
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1, err
    assert broken in err, err
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == before  # nothing written or retrained


def test_bad_parameters_and_global_options_after_the_subcommand(capsys, gtsrb_root, tmp_path):
    code, err = cli(capsys, "run", "--alpha", "1e9", "--out", str(tmp_path / "run"))
    assert code == 2 and "alpha must be in [0, 1]" in err
    code, err = cli(capsys, "run", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert code == 2 and "nowhere" in err, err  # accepted after the subcommand, and used
    assert not (tmp_path / "run").exists()


def test_a_threshold_out_of_range_in_a_link_is_reported(run_directory):
    from core.experiments.run import Run

    at = app(run_directory)
    at.query_params.update(threshold_dae="7", interactive_charts="maybe")
    at.switch_page("pages/threshold.py").run()
    assert_clean(at)
    said = " ".join(t.value.replace("\\", "") for t in at.toast)  # the toast escapes Markdown
    assert "threshold_dae=7" in said and "interactive_charts=maybe" in said, said
    assert at.slider(key="threshold_dae").value == pytest.approx(Run.load(run_directory).threshold, rel=1e-6)


def _links():
    """Links as the browser writes them: a choice shown through a label is in the URL as that label."""
    from core.detectors.detect import filter_label
    from core.engine.registry import ATTACKS, THREATS

    return [
        (
            "pages/distillation.py",
            {"T": "20", "distill_image": "5"},
            {("slider", "T"): 20.0, ("number_input", "distill_image"): 5},
        ),
        (
            "pages/threshold.py",
            {"score": filter_label("magnet"), "fpr": "0.1"},
            {("selectbox", "score"): "magnet", ("number_input", "fpr"): 0.1},
        ),
        (
            "pages/poison.py",
            {"threat": THREATS.label("tap"), "preset": "Custom", "eps_tap": "0.05", "steps_tap": "7"},
            {("radio", "threat"): "tap", ("slider", "eps_tap"): 0.05, ("slider", "steps_tap"): 7},
        ),
        (
            "pages/your_images.py",
            {"upload_attack": ATTACKS.label("fgsm"), "upload_eps": "0.03"},
            {("selectbox", "upload_attack"): "fgsm", ("slider", "upload_eps"): 0.03},
        ),
    ]


@pytest.mark.parametrize(("page", "link", "widgets"), _links())
def test_opening_a_link_reproduces_the_view(run_directory, page, link, widgets):
    at = app(run_directory)
    at.query_params.update(link)
    at.switch_page(page).run()
    assert_clean(at)
    assert not at.toast, [t.value for t in at.toast]  # nothing in the link was ignored
    for (kind, key), value in widgets.items():
        assert getattr(at, kind)(key=key).value == pytest.approx(value), key


def test_distillation_tables_show_no_raw_none(run_directory):
    """The paper's column is empty for four of the five models: a dash, not Streamlit's "None"."""
    at = on_page(run_directory, "pages/distillation.py")
    assert_clean(at)
    first = at.dataframe[0].value
    assert list(first["paper (adversarial)"])[:4] == ["—"] * 4
    from core.experiments.pipeline import MODEL_LABELS

    assert first.loc[MODEL_LABELS["filter_distillation"], "paper (adversarial)"].endswith("%")
    assert "filter_distillation" not in first.index  # plain labels, not code names (issue 34)


def test_a_link_value_that_cannot_be_used_changes_nothing_else(run_directory):
    """/poison?eps=lots must not switch the preset to Custom (it did: any Custom-only knob did); /detectors?eps=0.05,
    a setting of another page, must not change the sidebar; a parameter no page uses is said once and removed from
    the address."""
    at = app(run_directory)
    at.query_params["eps"] = "lots"
    at.switch_page("pages/poison.py").run()
    assert_clean(at)
    assert at.sidebar.radio(key="preset").value != "Custom"
    assert any("eps=lots" in toast.value.replace("\\", "") for toast in at.toast)

    at = app(run_directory)
    at.query_params.update(eps="0.05", frobnicate="1")
    at.switch_page("pages/detectors.py").run()
    assert_clean(at)
    assert at.sidebar.radio(key="preset").value != "Custom"
    said = " ".join(toast.value.replace("\\", "") for toast in at.toast)
    assert "eps=0.05: not a setting of this page" in said and "frobnicate=1" in said
    assert "frobnicate" not in at.query_params and "eps" not in at.query_params
