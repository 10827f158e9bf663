"""Every page through Streamlit's AppTest, on the shipped run (or $DAE_DISTILL_RUN)."""

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.engine.registry import THREATS
from tests.helpers import APP, PAGES, app, assert_clean, metric, on_page


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(run_directory, page):
    at = app(run_directory)
    at.run()
    at.switch_page(page).run()
    assert_clean(at)
    assert at.title, f"{page} shows no title"


def test_moving_the_threshold_changes_counts_and_student_accuracy(run_directory, tmp_path):
    """The page reads the run's sweep.json and interpolates between its points: on a copy of the run given a
    two-point sweep whose values the test chooses, so the test sees the values move, not only the shipped ones."""
    import json
    import shutil

    from core.experiments.run import Run
    from core.experiments.sweep import SWEEP_VERSION, accuracy_at, curves_of

    folder = tmp_path / "run"
    shutil.copytree(run_directory, folder)
    scores = Run.load(folder).train_scores
    measurements = [
        {
            "seed": 0,
            "filter": name,
            "target_share": 1 - q,
            "drop_share": 1 - q,
            "threshold": float(scores.quantile(q)),
            "precision": 0.1,
            "recall": 0.1,
            "clean_acc": acc,
            "fgsm_acc": acc / 2,
            "ifgsm_acc": acc / 3,
            "adaptive_acc": acc / 4,
        }
        for name in ("detector", "random")
        for q, acc in ((0.1, 0.5), (0.99, 0.9))
    ]
    sweep = {
        "version": SWEEP_VERSION,
        "config": {
            "steps": 10,
            "n_train": len(scores),
            "n_test": 10,
            "n_attack_test": 5,
            "n_robust_test": 2,
            "robust_steps": 2,
        },
        "measurements": measurements,
        "curves": curves_of(measurements),
    }
    (folder / "sweep.json").write_text(json.dumps(sweep))
    at = app(str(folder))
    at.run()
    at.switch_page("pages/threshold.py").run()
    assert_clean(at)
    slider = at.slider(key="threshold_dae")
    # between the two measured thresholds (outside them the page says "not measured", tested elsewhere)
    low, high = sorted(point["threshold"] for point in sweep["curves"]["detector"])
    values = {}
    for fraction in (0.2, 0.6):
        slider.set_value(low + fraction * (high - low)).run()
        assert_clean(at)
        threshold = float(slider.value)
        values[fraction] = (metric(at, "kept"), metric(at, "clean accuracy"), metric(at, "I-FGSM accuracy"))
        assert accuracy_at(sweep, threshold)["where"] == "interpolated"
        assert values[fraction][1] == f"{accuracy_at(sweep, threshold)['clean_acc']:.2%}"
    assert values[0.2][0] != values[0.6][0]  # kept count changes
    assert values[0.2][1:] != values[0.6][1:]  # the student's accuracy read from the sweep changes

    # A sweep of the older format is not shown as if it were current: the page says how to remake it.
    (folder / "sweep.json").write_text(json.dumps({"config": {"epochs": 3, "n_test": 10}, "points": []}))
    at = app(str(folder))
    at.run()
    at.switch_page("pages/threshold.py").run()
    assert_clean(at)
    assert any("older version" in warning.value for warning in at.warning)


def test_the_default_run_draws_its_shipped_sweep_with_measured_and_interpolated_points(gtsrb_root):
    """The run the app opens by default ships its measured sweep (issue 22): the Threshold page draws each filter's
    curve with a marker per measured share, and says whether the student's numbers at the slider's threshold were
    measured there or interpolated between measured points."""
    from core.experiments.run import SHIPPED_RUN, Run
    from core.experiments.sweep import accuracy_at

    sweep = Run.load(SHIPPED_RUN).sweep
    assert sweep is not None, "checkpoints/paper ships no usable sweep.json: run README's sweep command"
    detector = sorted(sweep["curves"]["detector"], key=lambda point: point["threshold"])
    assert len(detector) >= 12 and {"random", "oracle"} <= set(sweep["curves"])
    at = on_page(str(SHIPPED_RUN), "pages/threshold.py")
    assert_clean(at)
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    sweep_chart = next(chart for chart in charts if "vs share dropped" in str(chart["layout"].get("title")))
    drawn = {trace["name"]: trace for trace in sweep_chart["data"] if trace.get("mode") == "lines+markers"}
    labels = {"detector": "DAE filter", "random": "random", "oracle": "oracle"}  # the page's legend
    assert set(drawn) == {labels[name] for name in sweep["curves"]}
    for name, points in sweep["curves"].items():  # one marker per measured share
        assert drawn[labels[name]]["x"] == [point["drop_share"] for point in points]
    # zoomed to the curves (on [0, 1] the filters' 2-point differences at 98% were one flat line), every mean inside
    low, high = sweep_chart["layout"]["yaxis"]["range"]
    means = [point["mean"]["clean_acc"] for points in sweep["curves"].values() for point in points]
    assert low <= min(means) and max(means) <= high and 0.04 - 1e-9 <= high - low < 0.2, (low, high)

    def student_line(at) -> str:
        return next(m.value for m in at.markdown if m.value.startswith("**Student at this threshold**"))

    measured = detector[len(detector) // 2]
    at.number_input(key="threshold_input").set_value(measured["threshold"]).run()
    assert_clean(at)
    assert "measured at this threshold" in student_line(at)
    # the default (picture) view marks the threshold on the sweep's chart, at the share it drops
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    sweep_chart = next(chart for chart in charts if "vs share dropped" in str(chart["layout"].get("title")))
    line = next(shape for shape in sweep_chart["layout"]["shapes"] if shape.get("line", {}).get("dash") == "dash")
    assert line["x0"] == pytest.approx(measured["drop_share"], abs=1e-3)
    assert metric(at, "clean accuracy") == f"{measured['mean']['clean_acc']:.2%}"
    between = (detector[2]["threshold"] + detector[3]["threshold"]) / 2
    at.number_input(key="threshold_input").set_value(between).run()
    assert_clean(at)
    assert "interpolated between measured points" in student_line(at)
    threshold = float(at.slider(key="threshold_dae").value)
    assert metric(at, "clean accuracy") == f"{accuracy_at(sweep, threshold)['clean_acc']:.2%}"


def test_switching_the_score_changes_the_filter(run_directory):
    at = on_page(run_directory, "pages/threshold.py")
    from core.engine.registry import DETECTORS

    options = at.selectbox(key="score").options
    assert len(options) == len(DETECTORS.names())  # every registered detector, scored on this run or not
    # a registered detector missing from the run's detectors.json is offered, marked as not scored here
    scored = json.loads((Path(run_directory) / "detectors.json").read_text())["detectors"]
    unscored = [name for name in DETECTORS.names() if name not in scored]
    assert sum("not scored on this run" in option for option in options) == len(unscored)
    dae_auc = metric(at, "ROC AUC of the score")
    at.selectbox(key="score").set_value("supervised").run()
    assert_clean(at)
    assert metric(at, "ROC AUC of the score") != dae_auc
    assert float(metric(at, "ROC AUC of the score")) > 0.9  # the shipped supervised detector separates the poisons
    assert float(metric(at, "recall")) > 0.5


@pytest.mark.parametrize("threat", ["perturbation", "label_flip", "backdoor"])
def test_detectors_page_shows_each_threat_with_controls(run_directory, threat):
    at = on_page(run_directory, "pages/detectors.py")
    at.radio(key="threat").set_value(threat).run()
    assert_clean(at)
    # the defence ranking (a wrapped table) first, then the comparison's two dataframes (each fits 1280 px)
    detection, students = at.dataframe[0].value, at.dataframe[1].value
    for table in (detection, students):
        filters = " ".join(table["filter"])
        for control in ("no filter", "random filter", "oracle filter"):
            assert control in filters
    assert "ROC AUC" in detection.columns and "ROC AUC" not in students.columns
    assert ("attack success" in students.columns) == (threat != "perturbation")


def test_detectors_page_leads_with_every_defence_ranked_by_its_worst_case(run_directory):
    """Issue 38: the page opens with the ranking of the shipped grids' defences, as the generator words it."""
    from core.experiments.defence_grid import load_shipped_grids
    from core.reporting.report import ranking_table

    rows, sentence = ranking_table(load_shipped_grids())
    at = on_page(run_directory, "pages/detectors.py")
    assert_clean(at)
    assert at.header[0].value == "One defence against every poison?"
    table = at.table[0].value
    assert list(table["defence"]) == [row["defence"] for row in rows] and len(rows) >= 11  # none left out
    assert any(sentence in block.value for block in at.markdown)


def test_detectors_page_switches_to_the_backdoor_comparison_against_the_fields_detectors(run_directory):
    """The shipped backdoor comparison (spectral signatures, activation clustering) is a second file: the page
    offers it, shows its detectors beside the controls, and a threat that file lacks falls back to one it has."""
    at = on_page(run_directory, "pages/detectors.py")
    at.radio(key="threat").set_value("perturbation").run()
    from core.experiments.compare import SHIPPED_COMPARISONS

    options = at.radio(key="comparison").options
    assert options == [label for label, path in SHIPPED_COMPARISONS.items() if path.exists()]
    at.radio(key="comparison").set_value(options[1]).run()
    assert_clean(at)
    assert at.radio(key="threat").options == [THREATS.label("backdoor")] and at.radio(key="threat").value == "backdoor"
    filters = " ".join(at.dataframe[0].value["filter"])
    assert "spectral signatures" in filters.lower() and "activation clustering" in filters.lower()
    assert "oracle filter" in filters
    if len(options) > 2:  # activation clustering's ranking beside its authors' rule
        at.radio(key="comparison").set_value(options[2]).run()
        assert_clean(at)
        filters = " ".join(at.dataframe[0].value["filter"])
        assert "authors' rule" in filters and "activation clustering" in filters.lower()


@pytest.mark.parametrize("threat", ["label_flip", "backdoor"])
def test_poison_page_applies_the_other_threat_models(run_directory, threat):
    at = on_page(run_directory, "pages/poison.py")
    at.radio(key="threat").set_value(threat).run()
    assert_clean(at)
    assert any("training samples poisoned" in message.value for message in at.success)
    assert any(metric.label == "undefended: attack success" for metric in at.metric)


@pytest.mark.parametrize("threat", ["tap", "unlearnable"])
def test_poison_page_crafts_the_strong_poisons_at_their_own_budget(run_directory, threat):
    """TAP and unlearnable start from eps 8/255 (8 grey levels), not the paper's 0.01; TAP fools the surrogate it
    was crafted on toward another class, so the surrogate's accuracy on the preview falls. Four images per class (16):
    on two, one stop sign that resists decided the test (recipe-3 surrogate: 50% after on 8 images, 31% on 16)."""
    at = on_page(run_directory, "pages/poison.py")
    at.radio(key="threat").set_value(threat).run()
    at.slider(key="per_class").set_value(4).run()
    assert_clean(at)
    assert metric(at, "L-inf") == "8 levels"
    if threat == "tap":
        before = float(metric(at, "surrogate acc. before").rstrip("%"))
        after = float(metric(at, "surrogate acc. after").rstrip("%"))
        assert after < before - 50


@pytest.mark.parametrize("threat", ["ops", "cuda", "unlearnable_grayscale", "tap_jpeg"])
def test_poison_page_previews_the_poisons_robust_to_squeezing_and_the_adaptive_ones(run_directory, threat):
    """Issue 24's poisons on the Poison page: each previews without an error; OPS and CUDA have no eps to show (an
    L0 change and a blur), the adaptive ones keep their base poison's 8/255."""
    at = on_page(run_directory, "pages/poison.py")
    at.radio(key="threat").set_value(threat).run()
    assert_clean(at)
    labels = [m.label for m in at.metric]
    if threat in ("ops", "cuda"):
        assert not any(label.startswith("eps") for label in [s.label for s in at.slider])
    else:
        assert metric(at, "L-inf") == "8 levels", labels


def test_distillation_page_shows_abstention(run_directory):
    at = on_page(run_directory, "pages/distillation.py")
    assert_clean(at)
    assert any(header.value.startswith("Abstention") for header in at.subheader)
    assert not any("No abstention evaluation" in message.value for message in at.info)


def test_a_threshold_below_every_score_warns_instead_of_failing(run_directory):
    at = app(run_directory)
    at.run()
    at.switch_page("pages/threshold.py").run()
    at.slider(key="threshold_dae").set_value(at.slider(key="threshold_dae").min).run()
    assert not at.exception
    kept = metric(at, "kept")
    assert kept in ("0", "1")  # the lowest score itself may stay
    if kept == "0":
        assert any("drops every training sample" in error.value for error in at.error)
    else:
        assert any("training images are kept" in warning.value for warning in at.warning)
    at.number_input(key="threshold_input").set_value(at.slider(key="threshold_dae").max).run()
    assert not at.exception
    assert not any("training images are kept" in warning.value for warning in at.warning)


def _png(size=(40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_uploads_bad_files_get_a_message_and_the_page_keeps_working(run_directory):
    at = app(run_directory)
    at.run()
    at.switch_page("pages/your_images.py").run()
    uploader = at.file_uploader[0]
    good = _png()
    uploader.set_value(
        [
            ("notes.png", b"this is not an image", "image/png"),
            ("cut.png", good[: len(good) // 2], "image/png"),
            ("sign.png", good, "image/png"),
        ]
    ).run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "notes.png is not an image" in messages
    assert "cut.png could not be decoded" in messages
    assert any("sign.png" in m.value for m in at.markdown)  # the good upload is still analysed
    assert len(at.table) >= 2  # top-5 tables for it


def test_a_corrupt_run_gives_a_message_and_the_app_keeps_working(run_directory, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_directory, broken)
    (broken / "results.json").write_text("{ this is not json")
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["run_dir"] = str(broken)
    at.run()
    for page in ("pages/threshold.py", "pages/distillation.py", "pages/your_images.py"):
        at.switch_page(page).run()
        assert not at.exception
        assert any("corrupt" in e.value for e in at.error), page


def test_a_missing_dataset_is_explained(monkeypatch, tmp_path):
    """Needs no dataset: it is the case of a machine without one."""
    from core.experiments.run import SHIPPED_RUN

    monkeypatch.setenv("GTSRB_ROOT", str(tmp_path / "nowhere"))
    at = app(str(SHIPPED_RUN))
    at.run()
    assert not at.exception
    assert any("GTSRB not found" in e.value for e in at.sidebar.error)
    at.switch_page("pages/poison.py").run()
    assert not at.exception
    assert any("GTSRB_ROOT" in e.value for e in at.error)


def test_a_backdoor_run_renders_on_every_page(gtsrb_root, tmp_path):
    """Runs of the other threat models load like the paper's: triggers in the sample grids, attack success shown."""
    from core.experiments.pipeline import export_run, run_experiment
    from core.threats.poison import PoisonConfig
    from tests.helpers import tiny_config

    config = tiny_config(poison=PoisonConfig(threat="backdoor", fraction=0.2, target_class=3))
    results, state = run_experiment(config, tmp_path / "cache", gtsrb_root)
    export_run(results, state, tmp_path / "backdoor")
    at = app(str(tmp_path / "backdoor"))
    at.run()
    for page in ("pages/overview.py", "pages/threshold.py", "pages/distillation.py", "pages/your_images.py"):
        at.switch_page(page).run()
        assert_clean(at)


def _walk_every_page_after_every_score(run_directory, clean: bool) -> None:
    """Pick each Score option on the Threshold page, then open every page with that state in the session."""
    from core.engine.registry import DETECTORS

    at = on_page(run_directory, "pages/threshold.py")
    for option in DETECTORS.names():  # every Score the selector offers
        at.switch_page("pages/threshold.py").run()
        at.selectbox(key="score").set_value(option).run()
        for page in PAGES:
            at.switch_page(page).run()
            if clean:
                assert_clean(at)
            else:  # a damaged file may earn a message, never a traceback
                assert not at.exception, (option, page, [e.value for e in at.exception])


def test_every_page_after_every_score_on_the_shipped_run(run_directory):
    """State one page writes (the Threshold page's Score and threshold) is read safely by every other page."""
    _walk_every_page_after_every_score(run_directory, clean=True)


def test_every_page_after_every_score_on_a_run_whose_detector_scores_are_damaged(run_directory, tmp_path):
    """Issue 25's traceback: the Distillation page read a score's threshold the run no longer had."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run_directory, folder)
    (folder / "detector_scores.safetensors").write_bytes(b"not a safetensors file")
    detectors = json.loads((folder / "detectors.json").read_text())
    detectors["detectors"].pop(next(name for name in detectors["detectors"] if name != "dae"))  # one loses its entry
    (folder / "detectors.json").write_text(json.dumps(detectors))
    _walk_every_page_after_every_score(str(folder), clean=False)


def test_the_other_defences_table_shows_no_raw_values(run_directory):
    """The Threshold page's table behind a defence, from the shipped grid: readable threat cases, '-' where attack
    success does not apply or no anchor was published (it showed raw None and an empty column), the published
    column only for a defence that has anchors."""
    at = on_page(run_directory, "pages/threshold.py")
    for defence, has_anchors in (("grayscale", True), ("filter", False)):
        at.selectbox(key="defence").set_value(defence).run()
        assert_clean(at)
        table = next(frame.value for frame in at.dataframe if "threat case" in frame.value.columns)
        assert "TAP, 8/255, all of train" in set(table["threat case"])
        assert ("published (CIFAR-10)" in table.columns) == has_anchors
        cells = [str(value) for value in table.to_numpy().ravel()]
        assert not any(cell in ("None", "nan", "") for cell in cells), cells
        assert "-" in set(table["attack success"])  # TAP has none
        if has_anchors:
            assert "9.1%" in set(table["published (CIFAR-10)"]) and "-" in set(table["published (CIFAR-10)"])


def test_the_detector_table_shows_a_dash_where_a_control_has_no_detection_quality(run_directory):
    """No filter drops nothing, so it has no ROC AUC, precision or recall: a dash, not '0.000 ± 0.000'; the random and
    oracle controls keep theirs, below the detectors."""
    at = on_page(run_directory, "pages/detectors.py")
    assert_clean(at)
    table = at.dataframe[0].value
    rows = {row["filter"]: row for row in table.to_dict("records")}
    none = rows["no filter (control)"]
    assert none["ROC AUC"] == none["precision"] == none["recall"] == "-"
    assert rows["oracle filter (control)"]["precision"].startswith("1.000")
    assert list(table["filter"])[-2:] == ["random filter (control)", "oracle filter (control)"]


def test_the_poison_page_shows_the_attack_and_the_damage_of_the_setting_it_runs(run_directory):
    """Under the Paper preset the greyed Attack box reads the preset's I-FGSM (it read FGSM while the run used
    I-FGSM); switching to Custom keeps it; the measured-damage card is the grid's case for eps 0.01 on 10% (it showed
    8/255 on all of train), and a custom eps says which measured case is the closest."""
    at = on_page(run_directory, "pages/poison.py")
    at.sidebar.radio(key="preset").set_value("Paper").run()
    assert_clean(at)
    boxes = [box for box in at.selectbox if box.label == "Attack"]
    assert len(boxes) == 1 and boxes[0].disabled and boxes[0].value == "ifgsm"
    damage = next(md.value for md in at.markdown if md.value.startswith("**Measured damage** (shipped defence grid"))
    assert "I-FGSM, eps 0.01, 10% (the paper's)" in damage and "closest" not in damage
    at.sidebar.radio(key="preset").set_value("Custom").run()
    assert_clean(at)
    assert at.selectbox(key="attack").value == "ifgsm" and not at.selectbox(key="attack").disabled
    at.slider(key="eps").set_value(0.03).run()
    damage = next(md.value for md in at.markdown if md.value.startswith("**Measured damage** (shipped defence grid"))
    assert "closest" in damage and "I-FGSM, 8/255, all of train" in damage


def test_a_threat_without_a_surrogate_shows_its_knobs_and_the_grids_damage(run_directory):
    """CUDA on the Poison page: its own knobs (kernel size, blur) as widgets, its measured damage from the shipped
    second grid (it is in no comparison; the card was missing), and images captioned by their class alone when the
    threat keeps labels."""
    at = on_page(run_directory, "pages/poison.py")
    at.radio(key="threat").set_value("cuda").run()
    assert_clean(at)
    assert at.selectbox(key="threat_cuda_kernel_size").options == ["3", "5", "7"]
    assert at.number_input(key="threat_cuda_blur").value == 0.3
    damage = next(md.value for md in at.markdown if md.value.startswith("**Measured damage** (shipped defence grid"))
    assert "CUDA" in damage and "100% of train" in damage and "eps" not in damage and "closest" not in damage
    captions = [image.proto.imgs[0].caption for image in at.get("image")]
    assert len(captions) == 8 and all(caption and "→" not in caption for caption in captions)
    at.number_input(key="threat_cuda_blur").set_value(0.5).run()
    assert at.session_state["custom_poison"]["knobs"] == {"cuda.blur": 0.5}
    at.radio(key="threat").set_value("label_flip").run()  # a relabelling threat says what each label became
    captions = [image.proto.imgs[0].caption for image in at.get("image")]
    assert captions and all(caption.startswith("Stop → ") for caption in captions)


def test_the_poisons_older_parameters_are_knob_widgets_that_keep_their_links(run_directory):
    """Trigger size, craft augment, noise scope and smooth scale are knobs of their threats (Knob.stored_as): the
    widgets come from the Knob (the trigger box allows 1-16, as the config does; the slider it replaced stopped at 8),
    an adaptive TAP shows TAP's own knobs, which its crafting reads, and a link under the old names still sets them."""
    at = on_page(run_directory, "pages/poison.py")
    at.radio(key="threat").set_value("backdoor").run()
    assert_clean(at)
    trigger = at.number_input(key="trigger_size")
    assert (trigger.min, trigger.max, trigger.value) == (1, 16, 3)
    trigger.set_value(12).run()
    assert at.session_state["custom_poison"]["trigger_size"] == 12
    at.radio(key="threat").set_value("tap_jpeg").run()
    assert_clean(at)
    assert (
        at.selectbox(key="smooth_scale").options == ["1", "2", "4", "8"] and not at.checkbox(key="craft_augment").value
    )
    linked = app(run_directory)
    linked.query_params.update({"threat": "tap", "smooth_scale": "4", "craft_augment": "true"})
    linked.switch_page("pages/poison.py").run()
    assert_clean(linked)
    assert linked.session_state["preset"] == "Custom"
    poison = linked.session_state["custom_poison"]
    assert (poison["threat"], poison["smooth_scale"], poison["craft_augment"]) == ("tap", 4, True)


def test_the_teacher_chart_shows_softening_on_a_log_axis(run_directory):
    """At T = 1 the teacher's top class holds nearly all the mass (both bars looked like 1.0 on a linear axis): the
    chart is on a log axis and the caption states how much the second class gains at T."""
    at = on_page(run_directory, "pages/distillation.py")
    assert_clean(at)
    chart = next(
        json.loads(chart.proto.spec)
        for chart in at.get("plotly_chart")
        if "log scale" in str(json.loads(chart.proto.spec)["layout"].get("xaxis"))
    )
    assert chart["layout"]["xaxis"]["type"] == "log"
    at_t, at_1 = (trace["x"][-1] for trace in chart["data"])  # bars are drawn bottom-up: the top class is last
    assert at_t < at_1  # T > 1 takes mass from the top class
    assert any("The second class rises from" in caption.value for caption in at.caption)


def test_the_mc_dropout_verdict_states_its_cut_off(run_directory):
    """Your images: the MC-dropout verdict names the disagreement, the run's cut-off value and how it was set."""
    from core.experiments.run import Run

    cutoff = Run.load(run_directory).abstention["cutoff"]
    at = on_page(run_directory, "pages/your_images.py")  # GTSRB test image 0 is picked by default
    assert_clean(at)
    verdicts = [md.value for md in at.markdown if md.value.startswith("MC dropout:")]
    assert verdicts and all(f"against the cut-off {cutoff:.2g}" in verdict for verdict in verdicts)


def test_the_overview_tells_the_story_from_the_shipped_files(run_directory):
    """The Overview states what the paper claims and what was measured, each finding with its seeds and a link to
    the page that shows it, numbers read from the run's files; the model table has readable headers."""
    from core.experiments.run import Run

    run = Run.load(run_directory)
    at = on_page(run_directory, "pages/overview.py")
    assert_clean(at)
    texts = [md.value for md in at.markdown]
    titles = [text for text in texts if text.startswith("**") and "seed" in text]
    # the titles are chosen from the numbers (core.engine.stats): the paper run's gap is within noise, its AUC at chance
    assert any("do no measurable harm" in title for title in titles) and any("at chance" in title for title in titles)
    assert any("95% interval" in text for text in texts)
    assert any(f"ROC AUC {run.results['filter']['auroc']:.3f}" in text for text in texts)
    undefended = run.results["models"]["undefended"]["clean_acc"]
    assert any(f"undefended model at {undefended:.2%}" in text for text in texts)
    assert any("*The paper* reports 76.09%" in text for text in texts) == bool(run.robustness)
    assert len(at.get("page_link")) >= len(titles)
    headers = list(at.dataframe[0].value.columns)
    assert headers[:3] == ["model", "clean", "FGSM"] and not any(header.endswith("_acc") for header in headers)
    # each card names its study (issue 34: the same claim showed different numbers on different pages)
    sources = [caption.value for caption in at.caption if caption.value.startswith("From ")]
    assert len(sources) == len(titles)
    assert sum("run checkpoints/paper (preset paper" in source for source in sources) >= 2
    assert all("test images" in source for source in sources)
    if len(titles) > 3:  # the grid's cards: the folders they come from and their preset
        assert any("checkpoints/defences" in source and "preset compare" in source for source in sources)
    assert not any("`" in text and "_" in text.split("`")[1] for text in texts if text.count("`") >= 2), texts


def test_the_sidebar_picks_a_shipped_run_and_says_what_it_is_for(run_directory, tmp_path):
    """The run picker lists the shipped runs and every run folder under the app's and the command line's runs/, each
    with one line on what it is for; picking the sweep run switches every page to it, and its weak students are said
    where its numbers are shown."""
    import shutil

    from core.experiments.run import SHIPPED_RUN, run_choices

    mine = tmp_path / "runs" / "mine"
    shutil.copytree(run_directory, mine)
    choices = run_choices(tmp_path / "runs")
    assert list(choices)[:3] == [str(SHIPPED_RUN.parent / name) for name in ("paper", "sweep_paper", "sweep_tap")]
    assert str(mine) in choices and "made here" in choices[str(mine)]

    at = app(str(SHIPPED_RUN))
    at.run()
    assert_clean(at)
    picker = at.sidebar.selectbox(key="run_picker")
    assert {"checkpoints/paper", "checkpoints/sweep_paper", "checkpoints/sweep_tap"} <= set(picker.options)  # shown
    assert not at.sidebar.warning  # the paper run's students are strong
    picker.set_value(str(SHIPPED_RUN.parent / "sweep_paper")).run()
    assert_clean(at)
    assert at.session_state["run_dir"] == str(SHIPPED_RUN.parent / "sweep_paper")
    assert any("3-seed threshold sweep" in caption.value for caption in at.sidebar.caption)
    assert any("students are weak" in warning.value for warning in at.sidebar.warning)
    assert any("students are weak" in warning.value for warning in at.warning)  # the Overview's headline numbers
    at.switch_page("pages/threshold.py").run()
    assert_clean(at)
    assert any("students are weak" in warning.value for warning in at.warning)


def test_the_autoencoder_page_says_what_its_dae_is_for_and_draws_readable_views(tiny_run, tmp_path, monkeypatch):
    """The shipped DAE's settings as a table (not raw JSON); the training tab says a DAE trained there is a background
    job and what it is for; its settings survive a visit to another page; the trained DAE is listed with its loss as a
    marker per epoch (one epoch was an empty line) and offered as safetensors; the gallery shows the one picked."""
    from core import jobs

    monkeypatch.setenv("DAE_DISTILL_APP_DIR", str(tmp_path / "app"))
    at = on_page(str(tiny_run.directory), "pages/autoencoder.py")
    assert_clean(at)
    assert not at.json
    assert any("- **architecture**:" in md.value and "stride-2 stages" in md.value for md in at.markdown)
    assert any("is a background job" in caption.value for caption in at.caption)
    assert any("Error map colours: blue 0, red" in caption.value for caption in at.caption)
    next(slider for slider in at.slider if slider.label == "epochs").set_value(1).run()
    at.switch_page("pages/overview.py").run()
    at.switch_page("pages/autoencoder.py").run()
    assert next(slider for slider in at.slider if slider.label == "epochs").value == 1  # kept for the session
    at.button(key="train-dae").click().run()
    assert_clean(at)
    (job,) = jobs.list_jobs(tmp_path / "app" / "jobs")
    deadline = time.time() + 300
    while (job := jobs.read_status(tmp_path / "app" / "jobs" / job.id)).active:
        assert time.time() < deadline, job.log_tail
        time.sleep(0.2)
    assert job.state == "done", (job.error, job.log_tail)
    at.run()
    assert_clean(at)
    chart = next(json.loads(chart.proto.spec) for chart in at.get("plotly_chart") if "training MSE" in chart.proto.spec)
    assert chart["data"][0]["mode"] == "lines+markers" and len(chart["data"][0]["y"]) == 1
    assert any("safetensors" in button.proto.label for button in at.get("download_button"))
    next(button for button in at.button if button.label == "Show it in the Gallery").click().run()
    assert any("DAE picked on the Train a DAE tab" in caption.value for caption in at.caption)


def test_the_applied_poison_table_shows_formatted_values(tiny_run):
    """The Poison page's Apply summary: units and rounded values (it showed psnr_db 42.2172 and a raw index)."""
    at = on_page(str(tiny_run.directory), "pages/poison.py")
    at.button(key="apply_poison").click().run()
    assert_clean(at)
    table = next(frame.value for frame in at.dataframe if "PSNR" in frame.value.columns)
    assert table["PSNR"][0].endswith(" dB") and "psnr_db" not in table.columns
    assert all(len(str(value)) < 12 for value in table.iloc[0])


def test_run_the_experiment_says_how_long_it_will_take_here(run_directory, tmp_path, monkeypatch):
    """Issue 34: with no experiment made here yet, the Overview estimates the chosen preset's run and curve on this
    machine (core.experiments.live.experiment_seconds, timed here with the job's threads) and says so; Tiny is estimated
    shorter than Paper."""
    monkeypatch.setenv("DAE_DISTILL_APP_DIR", str(tmp_path))  # no experiment made here yet
    at = on_page(run_directory, "pages/overview.py")
    assert_clean(at)

    def estimate() -> str:
        return next(c.value for c in at.caption if "Estimated on this machine" in c.value)

    at.sidebar.radio(key="preset").set_value("Paper").run()
    paper = estimate()
    at.sidebar.radio(key="preset").set_value("Tiny").run()
    tiny = estimate()
    assert "for the run" in paper and "threshold curve (36 points)" in paper

    def minutes_of(text: str) -> float:
        import re

        value, unit = re.search(r"about ([\d.]+) (s|min|h)", text).groups()
        return float(value) * {"s": 1 / 60, "min": 1, "h": 60}[unit]

    assert minutes_of(tiny) < minutes_of(paper)
