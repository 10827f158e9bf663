"""Background jobs (core/jobs.py): a real job process on a tiny run: start, progress, cancel, kill and resume; two
sessions asking for the same job; a single point kept in the run's folder."""

import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from core import jobs
from core.experiments.sweep import POINTS_FILE, SWEEP_FILE
from core.jobs import JobSpec


def wait_for(condition, timeout: float = 240, what: str = "the job"):
    deadline = time.time() + timeout
    while not (value := condition()):
        assert time.time() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)
    return value


def sweep_job(folder: Path, root: Path, steps: int, title: str = "tiny sweep") -> JobSpec:
    command = ("sweep", "--run-dir", str(folder), "--data-root", str(root), "--drop-shares", "0", "0.5", "--seeds", "1")
    command += ("--steps", str(steps), "--test-subset", "0.5", "--attack-test-subset", "0.5", "--robust-steps", "2")
    return JobSpec(title, "sweep", (command,), run_dir=str(folder), threads=1)


def measurements(folder: Path) -> list[dict]:
    sweep = SWEEP_FILE.read(folder / "sweep.json")
    return sweep["measurements"] if sweep else []


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(tiny_run.directory, folder)
    return folder


def test_a_job_runs_its_commands_in_its_own_process_and_reports_progress(run_copy, gtsrb_root, tmp_path):
    root = tmp_path / "jobs"
    spec = sweep_job(run_copy, gtsrb_root, steps=4)
    started = time.perf_counter()
    job = jobs.submit(root, spec)
    assert time.perf_counter() - started < 5  # submitting starts a process, it does not train
    assert job.state in ("queued", "running") and job.id == spec.id
    pid = wait_for(lambda: json.loads((root / spec.id / "status.json").read_text()).get("pid"))
    assert pid != os.getpid()
    seen = set()

    def finished():
        current = jobs.read_status(root / spec.id)
        if current.stage:
            seen.add(current.stage)
        return current.state in jobs.FINISHED and current

    done = wait_for(finished)
    assert done.state == "done", (done.error, done.log_tail)
    assert any(stage.startswith("threshold sweep") for stage in seen) or done.total > 0
    assert len(measurements(run_copy)) == 2 * 3  # two shares x three filters, one seed
    assert any("sweep:" in line for line in done.log_tail)  # the command's own output is the job's log
    # the same job again is the finished one, not a second run
    again = jobs.submit(root, spec)
    assert again.state == "done" and len(list(root.iterdir())) == 1 + len(list(root.glob("*.lock")))
    assert [job.id for job in jobs.list_jobs(root, run_dir=str(run_copy))] == [spec.id]
    assert jobs.list_jobs(root, run_dir="elsewhere") == []


def started_until_its_first_point(run_copy: Path, gtsrb_root, root: Path) -> tuple[JobSpec, list[dict], int]:
    """A sweep job long enough to stop mid-way, once its first point is written: (spec, points so far, pid)."""
    spec = sweep_job(run_copy, gtsrb_root, steps=300)
    jobs.submit(root, spec)
    wait_for(lambda: len(measurements(run_copy)) >= 1, what="the first point")
    return spec, measurements(run_copy), json.loads((root / spec.id / "status.json").read_text())["pid"]


def test_a_killed_job_is_failed_with_its_log_and_resumes_keeping_every_finished_point(run_copy, gtsrb_root, tmp_path):
    root = tmp_path / "jobs"
    spec, first, pid = started_until_its_first_point(run_copy, gtsrb_root, root)
    os.killpg(pid, signal.SIGKILL)  # as a machine restart or the OOM killer would
    failed = wait_for(lambda: (job := jobs.read_status(root / spec.id)).state != "running" and job)
    assert failed.state == "failed" and "ended before it finished" in failed.error
    assert failed.log_tail  # the last lines of what it printed
    kept = measurements(run_copy)
    assert kept[: len(first)] == first
    resumed = jobs.submit(root, spec)  # resume: the same commands keep the finished points
    assert resumed.state in ("queued", "running")
    done = wait_for(lambda: (job := jobs.read_status(root / spec.id)).state in jobs.FINISHED and job)
    assert done.state == "done", (done.error, done.log_tail)
    final = measurements(run_copy)
    assert len(final) == 6 and final[: len(kept)] == kept  # nothing finished before the kill was trained again


def test_cancel_ends_the_process_within_five_seconds_and_keeps_the_finished_points(run_copy, gtsrb_root, tmp_path):
    root = tmp_path / "jobs"
    spec, before, pid = started_until_its_first_point(run_copy, gtsrb_root, root)
    started = time.perf_counter()
    cancelled = jobs.cancel(root, spec.id)
    assert time.perf_counter() - started < 5
    assert cancelled.state == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the process is gone (and reaped: no zombie left in the server that started it)
    assert measurements(run_copy)[: len(before)] == before
    assert not list(run_copy.glob(".*.tmp"))  # no half-written file left behind


def _submit_from_another_process(root: str, spec: dict, barrier) -> None:
    barrier.wait()
    jobs.submit(root, JobSpec.from_dict(spec))


def test_two_sessions_asking_for_the_same_job_get_one_process(run_copy, gtsrb_root, tmp_path):
    from dataclasses import asdict

    root = tmp_path / "jobs"
    spec = sweep_job(run_copy, gtsrb_root, steps=4)
    context = multiprocessing.get_context("spawn")  # two app servers: separate processes on the same cache
    barrier = context.Barrier(2)
    askers = [context.Process(target=_submit_from_another_process, args=(str(root), asdict(spec), barrier))]
    askers.append(context.Process(target=_submit_from_another_process, args=(str(root), asdict(spec), barrier)))
    for process in askers:
        process.start()
    for process in askers:
        process.join(60)
        assert process.exitcode == 0
    done = wait_for(lambda: (job := jobs.read_status(root / spec.id)).state in jobs.FINISHED and job)
    assert done.state == "done"
    log = (root / spec.id / "log.txt").read_text()
    assert log.count("$ python -m core sweep") == 1  # one job process ran the command, once
    assert len(measurements(run_copy)) == 6


def test_a_point_is_kept_in_the_run_folder_and_the_same_point_replaces_itself(run_copy, gtsrb_root):
    from core.cli import main
    from core.experiments.run import Run

    run = Run.load(run_copy)
    threshold = float(run.train_scores.median())
    command = ["point", "--run-dir", str(run_copy), "--data-root", str(gtsrb_root), "--threshold", str(threshold)]
    assert main([*command, "--steps", "3"]) == 0
    points = POINTS_FILE.read(run_copy / "points.json")["points"]
    assert len(points) == 1 and points[0]["single_point"] and points[0]["score"] == "dae"
    kept = int((run.train_scores <= threshold).sum())
    assert points[0]["kept"] == kept and points[0]["drop_share"] == pytest.approx(1 - kept / len(run.train_scores))
    assert all(0 <= points[0][key] <= 1 for key in ("clean_acc", "fgsm_acc", "ifgsm_acc", "adaptive_acc"))
    assert main([*command, "--steps", "3"]) == 0
    assert len(POINTS_FILE.read(run_copy / "points.json")["points"]) == 1  # measured again, not counted twice
    assert main([*command, "--steps", "4"]) == 0
    assert len(POINTS_FILE.read(run_copy / "points.json")["points"]) == 2
    reloaded = Run.load(run_copy)
    assert [p["steps"] for p in reloaded.points] == [3, 4]
    from core.reporting.report import report_points

    table = report_points(reloaded).splitlines()  # what `python -m core report` prints under the sweep
    assert len(table) == 1 + 2 + 1 and all(f"{threshold:.5f}" in line for line in table[1:3])
    assert f"{points[0]['clean_acc']:.2%}" in table[1]


def test_a_point_that_keeps_nothing_or_a_bad_threshold_is_refused_before_any_work(run_copy, gtsrb_root, capsys):
    from core.cli import main

    base = ["point", "--run-dir", str(run_copy), "--data-root", str(gtsrb_root)]
    assert main([*base, "--threshold", "-1"]) == 2
    assert "drops every training image" in capsys.readouterr().err
    assert main([*base, "--threshold", "nan"]) == 2
    assert "finite" in capsys.readouterr().err
    assert main([*base, "--threshold", "0.1", "--score", "magnet"]) == 2
    assert not (run_copy / "points.json").exists()


def test_a_full_disk_mid_sweep_is_one_clear_line_and_loses_no_finished_point(run_copy, gtsrb_root):
    """The sweep's file cannot grow past its first point (RLIMIT_FSIZE: writes fail as on a full disk): the command
    ends with one error line and the points written before are all there, the file whole."""
    import resource
    import subprocess
    import sys

    command = [sys.executable, "-m", "core", "sweep", "--run-dir", str(run_copy), "--data-root", str(gtsrb_root)]
    command += ["--seeds", "1", "--steps", "4", "--test-subset", "0.5", "--attack-test-subset", "0.5"]
    command += ["--robust-steps", "2", "--filters", "detector", "--drop-shares"]
    subprocess.run([*command, "0", "0.5"], check=True, capture_output=True, timeout=300)
    before = measurements(run_copy)
    size = (run_copy / "sweep.json").stat().st_size

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 64, size + 64))

    result = subprocess.run(
        [*command, "0", "0.5", "0.2"], capture_output=True, text=True, timeout=300, preexec_fn=limited
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "File too large" in errors[0] and "kept" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert measurements(run_copy) == before and (run_copy / "sweep.json").stat().st_size == size
    assert not list(run_copy.glob(".*.tmp"))


@pytest.mark.cluster
@pytest.mark.slow
def test_a_job_with_the_ray_executor_runs_its_cells_on_ray_and_measures_what_the_local_one_does(
    run_copy, gtsrb_root, tmp_path
):
    """The sidebar's *Jobs run: ray* adds --executor ray to a job's commands: the same sweep, on a real Ray instance
    the job process starts, gives the same points as the local executor."""
    local_copy = tmp_path / "local"
    shutil.copytree(run_copy, local_copy)
    root = tmp_path / "jobs"
    local = sweep_job(local_copy, gtsrb_root, steps=4)
    on_ray = sweep_job(run_copy, gtsrb_root, steps=4)
    on_ray = JobSpec(on_ray.title, on_ray.kind, ((*on_ray.commands[0], "--executor", "ray"),), on_ray.run_dir, 1)
    for spec in (local, on_ray):
        jobs.submit(root, spec)
        done = wait_for(lambda spec=spec: (job := jobs.read_status(root / spec.id)).state in jobs.FINISHED and job)
        assert done.state == "done", (done.error, done.log_tail)
    assert "ray" in (root / on_ray.id / "log.txt").read_text().lower()

    def numbers(folder):
        return [{k: v for k, v in m.items() if k not in ("seconds", "threads")} for m in measurements(folder)]

    assert numbers(run_copy) == numbers(local_copy) and len(numbers(run_copy)) == 6
