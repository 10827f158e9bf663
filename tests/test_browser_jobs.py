"""The Chromium walk of issue 33: *Run the experiment* on the tiny preset as a background job, leave the page and come
back, the curve is there; kill the server and the job mid-sweep, restart, resume, and find every finished point."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, shoot, start_streamlit, wait_idle


def sweep_points(run: Path) -> list[dict]:
    try:
        return json.loads((run / "sweep.json").read_text())["measurements"]
    except (OSError, ValueError, KeyError):
        return []


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while not (value := condition()):
        assert time.time() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.5)
    return value


def job_status(cache: Path) -> dict:
    found = sorted((cache / "app" / "jobs").glob("*/status.json"))
    return json.loads(found[0].read_text()) if found else {}


def nav(page, title: str) -> None:
    """In-app navigation (the sidebar's page link): the session, and what it holds, stays."""
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=title).click()


def end_jobs(cache: Path) -> None:
    """Kill every job process this test started, whatever happened (a paused one would otherwise stay)."""
    for path in (cache / "app" / "jobs").glob("*/status.json"):
        pid = json.loads(path.read_text()).get("pid")
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError, TypeError):
                pass


@pytest.fixture
def cache(tmp_path):
    folder = tmp_path / "cache"
    yield folder
    end_jobs(folder)


def stop(process) -> None:
    process.send_signal(signal.SIGKILL)  # as a crash would: no clean shutdown
    process.wait(timeout=20)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def test_run_the_experiment_in_the_background_survives_navigation_and_a_server_restart(gtsrb_root, browser, cache):
    # the app's own folder, empty: a new user's (the decoded images' cache is shared)
    env = {"DAE_DISTILL_APP_DIR": str(cache / "app"), "GTSRB_ROOT": str(Path(gtsrb_root).resolve())}
    server, url = start_streamlit(env)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/?preset=Tiny")
        page.get_by_role("button", name="Run the experiment").wait_for(timeout=180_000)  # a first load is slow
        wait_idle(page, 180_000)
        page.get_by_role("button", name="Run the experiment").click()
        page.get_by_text("Your experiment runs in the background").wait_for(timeout=60_000)
        # leave the page at once: the job goes on without it
        nav(page, "Jobs")
        page.get_by_text("the run, then its threshold curve").first.wait_for(timeout=60_000)
        runs = cache / "app" / "runs"
        run = wait_for(lambda: next(runs.glob("tiny-*/results.json"), None), 600, "the run").parent
        # the first two shares (0 and 50% dropped, every filter): a first curve
        wait_for(lambda: len(sweep_points(run)) >= 6, 600, "the first points of the curve")
        status = job_status(cache)
        assert status.get("state") == "running", status  # mid-sweep (the tiny sweep has 30 points)
        os.killpg(status["pid"], signal.SIGSTOP)  # paused while the browser looks, so it is still mid-sweep after
        # back on the Overview, the session opens the new run; the Threshold page draws its curve as it fills
        nav(page, "Overview")
        wait_for(lambda: page.get_by_text("Headline results").count() > 0, 120, "the Overview")
        nav(page, "Threshold")
        page.get_by_text("Student at this threshold").wait_for(timeout=120_000)
        page.get_by_text("vs share dropped").first.wait_for(timeout=60_000)  # the sweep's chart, drawn as it fills
        assert page.get_by_text("points measured in the background").count() > 0  # "k of N points measured"
        shoot(page, "threshold_curve_filling")
        assert page.locator("[data-testid='stException']").count() == 0
    finally:
        stop(server)
    # the server is gone; the job is not (its own session): end it too, mid-sweep, as a machine restart would
    before = sweep_points(run)
    os.killpg(status["pid"], signal.SIGKILL)
    assert before and job_status(cache)["state"] == "running"

    server, url = start_streamlit({**env, "DAE_DISTILL_RUN": str(run)})
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/jobs")
        wait_idle(page)
        page.get_by_text("ended before it finished").wait_for(timeout=60_000)  # killed: failed, with its log
        page.get_by_role("button", name="Resume").first.click()
        wait_for(lambda: job_status(cache).get("state") == "done", 900, "the resumed job")
        after = sweep_points(run)
        finished = {(m["seed"], m["filter"], m["target_share"]): m for m in after}
        for point in before:  # every point finished before the restart is still there, unchanged
            assert finished[(point["seed"], point["filter"], point["target_share"])] == point
        assert len({m["target_share"] for m in after}) >= 6 and {m["filter"] for m in after} == {
            "detector",
            "random",
            "oracle",
        }
        page.goto(f"{url}/threshold")
        page.get_by_text("Student at this threshold").wait_for(timeout=120_000)
        wait_idle(page)
        assert page.locator("[data-testid='stException']").count() == 0
        shoot(page, "threshold_after_restart")
    finally:
        stop(server)


def test_the_jobs_bench_runs_at_a_tiny_size_and_prints_every_goal(gtsrb_root):
    """bench/jobs.py --tiny: the Tiny preset driven in Chromium; it prints each goal's time and the slider's ratio."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "bench" / "jobs.py"), "--tiny"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("run ", "first point on the page", "first curve", "cancel", "page load while a job trains: Jobs"):
        assert line in result.stdout, result.stdout
    assert "x idle (goal <= 1.5x)" in result.stdout or "not measured (the job had finished)" in result.stdout
