"""Training at a threshold in the background: a job the page starts and returns from, and the page's estimate."""

import json
import os
import shutil
import time

from core.engine.models import Classifier, ClassifierConfig
from core.experiments.live import seconds_per_step


def test_seconds_per_step_times_the_steps_it_divides_by():
    """The estimate is the time of `repeats` steps over `repeats`, after one warm-up step: the model sees exactly
    1 + repeats batches of the asked size. (Its size against another model's is a timing, not a unit test; the
    CI machine once timed the 60x larger model faster.)"""
    batches = []

    def counted():
        model = Classifier(ClassifierConfig(width=4, hidden=16))
        model.register_forward_hook(lambda module, inputs, output: batches.append(len(inputs[0])))
        return model

    seconds = seconds_per_step(counted, 8, repeats=3)
    assert batches == [8, 8, 8, 8]
    assert 0 < seconds < 60


def test_the_page_is_not_blocked_while_a_point_trains_as_a_job_and_the_point_outlives_the_session(
    tiny_run, tmp_path, monkeypatch
):
    """*Train at this threshold* starts a job process and returns; the finished point is in the run's points.json and
    a new session (a restarted app) draws it."""
    from core import jobs
    from tests.helpers import app, assert_clean

    monkeypatch.setenv("DAE_DISTILL_APP_DIR", str(tmp_path / "app"))
    folder = tmp_path / "run"
    shutil.copytree(tiny_run.directory, folder)
    at = app(str(folder))
    at.run()
    at.switch_page("pages/threshold.py").run()
    assert_clean(at)
    assert any("a point takes about" in caption.value for caption in at.caption)
    at.button(key="train_in_background").click().run()
    assert_clean(at)
    found = jobs.list_jobs(tmp_path / "app" / "jobs", run_dir=str(folder))
    assert [job.kind for job in found] == ["point"], [b.label for b in at.button]
    deadline = time.time() + 300
    while (job := jobs.read_status(tmp_path / "app" / "jobs" / found[0].id)).active:
        assert time.time() < deadline, job.log_tail
        time.sleep(0.2)
    assert job.state == "done", (job.error, job.log_tail)
    status = json.loads((tmp_path / "app" / "jobs" / job.id / "status.json").read_text())
    assert status["pid"] != os.getpid()  # trained by the job's own process, not the page's
    fresh = app(str(folder))  # a new session: nothing of the first one's memory
    fresh.run()
    fresh.switch_page("pages/threshold.py").run()
    assert_clean(fresh)
    table = next(frame.value for frame in fresh.dataframe if "adaptive_acc" in frame.value.columns)
    threshold = float(at.slider(key="threshold_dae").value)
    assert list(table["threshold"]) == [threshold]
    assert 0 <= float(table["adaptive_acc"].iloc[0]) <= 1


def test_point_estimate_adds_training_and_measurement_for_the_images_of_a_point():
    """core.experiments.live.point_seconds: more optimiser steps and more attacked images each make a point cost more,
    and a point with nothing to measure costs about its training steps alone. The three estimates are counted from one
    set of timings of this machine: timed three times, a job left running by the test before once made the first
    timing 15x slower than the second (a failed run)."""
    from core.engine.train import default_device
    from core.experiments.live import per_image_seconds, point_cost, point_seconds, seconds_per_step

    def factory():
        return Classifier(ClassifierConfig(width=4, hidden=16))

    device = default_device()
    timings = (seconds_per_step(factory, 32, device, repeats=5), *per_image_seconds(factory(), device))
    nothing = {"kept": 0, "test": 0, "attack_test": 0, "robust_test": 0}
    attacked = {"kept": 2000, "test": 2000, "attack_test": 2000, "robust_test": 2000}
    short = point_cost(timings, 2, nothing, 10, 10)
    long = point_cost(timings, 400, nothing, 10, 10)
    measured = point_cost(timings, 2, attacked, 10, 10)
    assert long > short > 0  # nothing measured: the training steps alone
    assert measured > 5 * short  # 2,000 images x 11 + 42 gradients each outweigh 4 training steps
    assert 0 < point_seconds(factory, 32, 2, attacked, 10, 10, device) < float("inf")
