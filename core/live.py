"""Training at a threshold in the background, so the page that asked stays responsive.

The Threshold page submits (run, threshold) when the slider is released (on a GPU) or when asked (on CPU, after
saying how long it will take). One worker thread per process trains teacher and student exactly as
core.sweep.train_at_threshold does (the sweep's fixed optimiser steps, its test subset), one job at a time in the
order asked, and keeps every finished point; the page polls `jobs()` and draws finished points on the sweep's
chart. Nothing here knows about Streamlit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from core.train import default_device


@dataclass
class Job:
    run_dir: str
    score: str
    threshold: float
    steps: int
    state: str = "queued"  # queued -> running -> done | failed
    done_steps: int = 0
    total_steps: int = 0
    stage: str = ""
    point: dict | None = None
    error: str | None = None
    started: float | None = None
    seconds: float | None = None
    submitted: float = field(default_factory=time.time)


class LiveTrainer:
    """A queue of threshold points trained by one background thread."""

    def __init__(self, train_point):
        # train_point(job, progress(stage, done, total)) -> point dict; core.sweep.train_at_threshold wrapped by
        # the caller with the run's data (so this class is testable without GTSRB)
        self._train_point = train_point
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def submit(self, run_dir: str, score: str, threshold: float, steps: int) -> Job:
        """Queue a point (a point already queued, running or done for the same run, score and threshold is returned
        instead of training it twice)."""
        with self._lock:
            for job in self._jobs:
                same = (job.run_dir, job.score, job.steps) == (run_dir, score, steps) and job.threshold == threshold
                if same and job.state != "failed":
                    return job
            job = Job(run_dir, score, float(threshold), int(steps))
            self._jobs.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="live-training", daemon=True)
                self._thread.start()
            self._wake.notify()
            return job

    def jobs(self, run_dir: str | None = None) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs if run_dir is None or job.run_dir == run_dir]

    def busy(self) -> bool:
        return any(job.state in ("queued", "running") for job in self.jobs())

    def measured_seconds(self, run_dir: str, steps: int) -> tuple[float, int] | None:
        """(estimated seconds of a point of `steps` optimiser steps, how many points it rests on) from the wall time
        per step of the points finished here for this run (training and measurement, on this machine, at whatever
        else it was doing), or None before the first: the page's estimate, kept up to date by what it trains."""
        done = [job for job in self.jobs(run_dir) if job.state == "done" and job.seconds is not None and job.steps]
        if not done:
            return None
        per_step = sum(job.seconds / job.steps for job in done) / len(done)
        return per_step * steps, len(done)

    def _next(self) -> Job | None:
        with self._lock:
            return next((job for job in self._jobs if job.state == "queued"), None)

    def _work(self) -> None:
        while (job := self._next()) is not None:
            job.state, job.started = "running", time.time()

            def progress(stage: str, done: int, total: int, job=job) -> None:
                job.stage, job.done_steps, job.total_steps = stage, done, total

            try:
                job.point = self._train_point(job, progress)
                job.state = "done"
            except Exception as error:  # noqa: BLE001 - reported on the page, the worker goes on
                job.error, job.state = f"{type(error).__name__}: {error}", "failed"
            job.seconds = round(time.time() - job.started, 1)


def seconds_per_step(model_factory, batch_size: int, device: torch.device | None = None, repeats: int = 3) -> float:
    """Wall time of one training step of a fresh model on this device (forward, backward, update): what the page
    multiplies by the steps a point needs to say how long it will take."""
    from core.train import TrainConfig, hard_label_loss, train

    device = device or default_device()
    model = model_factory()
    images = torch.randint(0, 256, (batch_size * (repeats + 1), 3, 32, 32), dtype=torch.uint8)
    labels = torch.zeros(len(images), dtype=torch.long)
    config = TrainConfig(batch_size=batch_size, augment=True)
    train(model, images, labels, hard_label_loss(), config, device, steps=1)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    train(model, images, labels, hard_label_loss(), config, device, steps=repeats)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / repeats


def point_seconds(
    model_factory,
    batch_size: int,
    steps: int,
    images: dict[str, int],
    attack_steps: int,
    robust_steps: int,
    device: torch.device | None = None,
) -> float:
    """Estimated wall time of one threshold point here, from timings of this device: teacher and student `steps`
    optimiser steps each; forward passes for the soft labels (images["kept"]) and the clean accuracy
    (images["test"]); input gradients for FGSM + I-FGSM (1 + attack_steps per image of images["attack_test"]) and
    for the adaptive suite (core.robust: 2 FGSM + 4 iterative attacks, 2 + 4 * robust_steps per image of
    images["robust_test"]), which also makes 7 forward passes per image."""
    from core.attacks import loss_gradient
    from core.train import predict

    device = device or default_device()
    step = seconds_per_step(model_factory, batch_size, device, repeats=5)
    model = model_factory().to(device).to(memory_format=torch.channels_last).eval()
    x = torch.rand(256, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(256, dtype=torch.long, device=device)

    def per_image(work) -> float:
        work()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(3):
            work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / (3 * len(x))

    forward = per_image(lambda: predict(model, x))
    gradient = per_image(lambda: loss_gradient(model, x, y))
    forwards = images["kept"] + images["test"] + 7 * images["robust_test"]
    gradients = (1 + attack_steps) * images["attack_test"] + (2 + 4 * robust_steps) * images["robust_test"]
    return 2 * steps * step + forwards * forward + gradients * gradient


def point_estimate(run, config) -> float:
    """core.live.point_seconds for a point of this sweep on the run (what the Threshold page shows)."""
    from core.live import point_seconds
    from core.models import Classifier
    from core.sweep import fixed_steps, point_image_counts

    images = point_image_counts(len(run.poison_mask), run.results["data"]["n_test"], config)
    c = run.config
    steps = config.steps or fixed_steps(c, len(run.poison_mask))
    return point_seconds(
        lambda: Classifier(c.classifier),
        c.classifier_train.batch_size,
        steps,
        images,
        c.eval_attack.steps,
        config.robust_steps,
    )
