"""Training at a threshold in the background: the queue, and a page that is not blocked while it trains."""

import shutil
import threading
import time

from core.live import LiveTrainer, seconds_per_step
from core.models import Classifier, ClassifierConfig


def wait_until_idle(trainer: LiveTrainer, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while trainer.busy():
        assert time.time() < deadline, "the background trainer did not finish"
        time.sleep(0.1)


def test_submit_returns_at_once_and_jobs_run_in_order_one_at_a_time():
    release = threading.Event()
    order, running = [], []

    def train_point(job, progress):
        running.append(job.threshold)
        assert len([j for j in trainer.jobs() if j.state == "running"]) == 1  # one at a time
        progress("training teacher", 1, 2)
        release.wait(timeout=30)
        order.append(job.threshold)
        if job.threshold == 3.0:
            raise ValueError("this threshold drops every training sample")
        return {"clean_acc": job.threshold / 10, "kept": 5}

    trainer = LiveTrainer(train_point)
    started = time.perf_counter()
    first = trainer.submit("run", "dae", 1.0, 10)
    trainer.submit("run", "dae", 2.0, 10)
    trainer.submit("run", "dae", 3.0, 10)
    assert time.perf_counter() - started < 1.0  # submitting does not train
    assert trainer.submit("run", "dae", 1.0, 10) is first  # the same point is not queued twice
    deadline = time.time() + 10
    while first.state != "running" or first.stage != "training teacher":  # running, then its first progress report
        assert time.time() < deadline
        time.sleep(0.01)
    assert trainer.busy() and (first.done_steps, first.total_steps) == (1, 2)
    release.set()
    wait_until_idle(trainer)
    assert order == [1.0, 2.0, 3.0]
    states = {job.threshold: job.state for job in trainer.jobs()}
    assert states == {1.0: "done", 2.0: "done", 3.0: "failed"}
    failed = next(job for job in trainer.jobs() if job.state == "failed")
    assert "drops every training sample" in failed.error
    assert first.point == {"clean_acc": 0.1, "kept": 5} and first.seconds is not None
    assert trainer.jobs("another run") == []
    # the page's estimate of the next point: the finished points' own seconds per step (the failed one left out)
    done = [job for job in trainer.jobs() if job.state == "done"]
    seconds, points = trainer.measured_seconds("run", 40)
    assert points == 2 and seconds == sum(job.seconds / 10 for job in done) / 2 * 40
    assert trainer.measured_seconds("another run", 40) is None


def test_seconds_per_step_is_positive_and_grows_with_the_model():
    small = seconds_per_step(lambda: Classifier(ClassifierConfig(width=4, hidden=16)), 32, repeats=2)
    large = seconds_per_step(lambda: Classifier(ClassifierConfig(width=32, hidden=256)), 32, repeats=2)
    assert 0 < small < large


def test_the_page_is_not_blocked_while_a_point_trains_in_the_background(tiny_run, tmp_path):
    from tests.helpers import app, assert_clean
    from ui.common import live_trainer

    folder = tmp_path / "run"
    shutil.copytree(tiny_run.directory, folder)
    at = app(str(folder))
    at.run()
    at.switch_page("pages/threshold.py").run()
    assert_clean(at)
    assert any("a point takes about" in caption.value for caption in at.caption)
    started = time.perf_counter()
    at.button(key="train_in_background").click().run()
    returned = time.perf_counter() - started
    assert_clean(at)
    trainer = live_trainer()
    jobs = trainer.jobs(str(folder))
    assert len(jobs) == 1, ([(job.run_dir, job.state) for job in trainer.jobs()], [b.label for b in at.button])
    # the page's run came back while the point was still training (it takes longer than the page's run)
    assert jobs[0].state in ("queued", "running"), (jobs[0].state, returned)
    wait_until_idle(trainer)
    assert jobs[0].state == "done", jobs[0].error
    at.run()
    assert_clean(at)
    table = next(frame.value for frame in at.dataframe if "adaptive_acc" in frame.value.columns)
    assert list(table["threshold"]) == [jobs[0].threshold]
    assert 0 <= float(table["adaptive_acc"].iloc[0]) <= 1


def test_point_estimate_adds_training_and_measurement_for_the_images_of_a_point():
    """core.live.point_seconds: more optimiser steps and more attacked images each make a point cost more, and a
    point with nothing to measure costs about its training steps alone."""
    from core.live import point_seconds

    def factory():
        return Classifier(ClassifierConfig(width=4, hidden=16))

    nothing = {"kept": 0, "test": 0, "attack_test": 0, "robust_test": 0}
    attacked = {"kept": 2000, "test": 2000, "attack_test": 2000, "robust_test": 2000}
    short = point_seconds(factory, 32, 2, nothing, 10, 10)
    long = point_seconds(factory, 32, 400, nothing, 10, 10)
    measured = point_seconds(factory, 32, 2, attacked, 10, 10)
    assert long > 20 * short  # 200x the steps: the training term dominates
    assert measured > 5 * short  # 2,000 images x 11 + 42 gradients each outweigh 4 training steps
