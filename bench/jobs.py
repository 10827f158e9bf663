"""Issue 33's goals for a run made in the app, measured by driving it in Chromium (Playwright), on this machine.

    python bench/jobs.py [--preset Quick] [--presses 15] [--out bench/results/jobs.txt]
    python bench/jobs.py --tiny      # CI: the Tiny preset, 3 presses: that the bench runs and prints

One `streamlit run app.py` with an empty app folder ($DAE_DISTILL_APP_DIR in a temporary directory; the decoded
images' cache is shared). In one browser session it
  1. measures the Threshold slider on the shipped paper run with nothing else running (bench/slider.py's measure);
  2. opens /?preset=<preset>, clicks *Run the experiment* and times, from the click: the run trained (its
     results.json), the first measured point of its curve drawn on the Threshold page ("k of N points measured"), and
     the first curve (DAE, random and oracle at 6 or more shares, one seed, in sweep.json);
  3. while the job goes on: the time from a sidebar click to an idle page, for every page, and the slider again;
  4. cancels the job and times until its process is gone.
Prints each time beside its goal, and the slider's busy / idle ratio (goal <= 1.5x), measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.slider import measure  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, start_streamlit  # noqa: E402

PAGES = ("Overview", "Poison", "Autoencoder", "Threshold", "Distillation", "Detectors", "Your images", "Jobs")
SERVER_VIEW = "?instant_view=false"  # the slider drawn by the server: the view a job's load slows (the instant one has
# no server work per move)
GOALS = {"run": 300.0, "first point on the page": 180.0, "first curve": 480.0, "page load": 2.0, "cancel": 5.0}


class FirstPoint(Exception):
    """--until-first-point: the rest is not measured."""


def wait_idle(page, timeout_ms: float = 180_000) -> None:
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=timeout_ms)


def nav(page, title: str) -> None:
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=title, exact=True).click()


def sweep_of(run: Path) -> list[dict]:
    try:
        return json.loads((run / "sweep.json").read_text())["measurements"]
    except (OSError, ValueError, KeyError):
        return []


def first_curve(measurements: list[dict]) -> bool:
    shares = {
        name: {m["target_share"] for m in measurements if m["filter"] == name}
        for name in ("detector", "random", "oracle")
    }
    return min(len(found) for found in shares.values()) >= 6


def page_loads(page) -> dict[str, float]:
    """Seconds from a sidebar click to an idle page, for every page (each once, after one warm visit)."""
    loads = {}
    for title in PAGES:
        nav(page, title)
        wait_idle(page)
    for title in PAGES:
        started = time.perf_counter()
        nav(page, title)
        wait_idle(page)
        loads[title] = time.perf_counter() - started - 0.3  # wait_idle's settling pause
    return loads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="Quick", choices=("Quick", "Tiny", "Paper"))
    parser.add_argument("--presses", type=int, default=15)
    parser.add_argument("--tiny", action="store_true", help="the Tiny preset and 3 presses (CI)")
    parser.add_argument("--out", help="also write the printed table here")
    parser.add_argument("--until-first-point", action="store_true", help="stop at the first point on the page")
    args = parser.parse_args()
    preset, presses = ("Tiny", 3) if args.tiny else (args.preset, args.presses)
    if not os.path.exists(CHROMIUM):
        sys.exit(f"error: {CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    from core import jobs

    lines = [
        f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} CPU cores, preset {preset}, "
        f"job threads {jobs.default_threads()}, nothing else running"
    ]
    times: dict[str, float] = {}
    busy_pages: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        app_dir, timings = Path(folder) / "app", Path(folder) / "timings.tsv"
        server, url = start_streamlit({"DAE_DISTILL_APP_DIR": str(app_dir), "DAE_DISTILL_TIMINGS": str(timings)})
        try:
            idle = measure(url, presses, 400.0, timings, SERVER_VIEW)[0]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/?preset={preset}")
                page.get_by_role("button", name="Run the experiment").wait_for(timeout=180_000)
                wait_idle(page)
                clicked = time.perf_counter()
                page.get_by_role("button", name="Run the experiment").click()
                runs = app_dir / "runs"
                while not (found := next(runs.glob("*/results.json"), None)):
                    time.sleep(0.5)
                times["run"] = time.perf_counter() - clicked
                run = found.parent
                lines.append(f"run: {run.name}, results.json says {json.loads(found.read_text())['seconds']:.0f} s")
                nav(page, "Threshold")  # at once: the session's poll opens the new run on whatever page is shown
                while not sweep_of(run):  # the job has written its first point
                    time.sleep(0.5)
                # ...and the page shows this run's curve, not another's (the student's line names the run)
                page.get_by_text(re.compile(rf"run app/runs/{re.escape(run.name)}, sweep of")).first.wait_for(
                    timeout=300_000
                )
                times["first point on the page"] = time.perf_counter() - clicked
                if args.until_first_point:
                    browser.close()
                    raise FirstPoint
                while not first_curve(sweep_of(run)):
                    time.sleep(1)
                times["first curve"] = time.perf_counter() - clicked
                job = jobs.list_jobs(app_dir / "jobs")[0]
                busy_pages = page_loads(page) if job.active else {}
                browser.close()
            busy = (
                measure(url, presses, 400.0, timings)[0] if jobs.read_status(app_dir / "jobs" / job.id).active else []
            )
            started = time.perf_counter()
            cancelled = jobs.cancel(app_dir / "jobs", job.id)
            times["cancel"] = time.perf_counter() - started
            lines.append(f"cancelled job: {cancelled.state}; {len(sweep_of(run))} measured points kept")
        except FirstPoint:
            for job in jobs.list_jobs(app_dir / "jobs"):
                jobs.cancel(app_dir / "jobs", job.id)
            busy, busy_pages = [], {}
        finally:
            server.terminate()
            server.wait(timeout=20)
    lines.append(f"{'from the click':<34}{'seconds':>9}{'goal':>8}  met")
    for name, value in times.items():
        lines.append(f"{name:<34}{value:>9.1f}{GOALS[name]:>8.0f}  {'yes' if value <= GOALS[name] else 'no'}")
    for title, value in (busy_pages or {}).items():
        lines.append(f"{'page load while a job trains: ' + title:<48}{value:>6.2f} s (goal {GOALS['page load']:.0f} s)")
    median_idle = statistics.median(idle)
    lines.append(f"slider, key press to idle page, idle: median {median_idle:.0f} ms ({presses} presses)")
    if busy:
        ratio = statistics.median(busy) / median_idle
        lines.append(
            f"slider, while a job trains: median {statistics.median(busy):.0f} ms: {ratio:.2f}x idle (goal <= 1.5x)"
        )
    else:
        why = "--until-first-point" if args.until_first_point else "the job had finished"
        lines.append(f"slider while a job trains: not measured ({why})")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
