"""Several users moving the Threshold slider at once, in a real browser: per-step wait and the server's memory.

    python bench/concurrency.py [--users 5] [--seconds 60] [--baseline-seconds S] [--run checkpoints/paper]

A 5-minute soak: --seconds 300 --baseline-seconds 30.

Starts `streamlit run app.py` on a free 127.0.0.1 port and opens /threshold in N browser contexts of one Debian
Chromium (Playwright, async). Each user presses ArrowRight on the slider, waits until the "kept" count has changed and
Streamlit's running indicator is gone, then presses again, for --seconds. One step = key press to settled page, timed
in the browser. Runs 1 user first, then N, on the same server, and prints median / p95 per step for both side by side
with their ratio, the CPU time per step of the server and of the browsers (which share this machine's cores),
plus the server's resident memory (the streamlit process, sampled every second): at the start, its
peak, and the mean of the first and last fifth of the N-user phase (a soak of --seconds 300 shows whether it stays
flat). Goal (issue 13): median under 1 s with 5 users on 2 CPU cores, memory flat over a 5-minute soak.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.experiments.run import SHIPPED_RUN  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, start_streamlit  # noqa: E402

GOAL_MS = 1000.0
KEPT = """() => { const m = [...document.querySelectorAll('[data-testid=stMetric]')]
    .find(e => e.innerText.startsWith('kept')); return m ? m.innerText : null; }"""


def rss_mb(pid: int) -> float:
    """Resident memory of a process from /proc (Linux), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(match) -> float:
    """User + system CPU seconds of every live process whose command line satisfies match (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if match(entry.name, command):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
        except OSError:  # the process ended while we looked
            continue
    return total


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def user(browser, url: str, seconds: float, quiet_ms: float, steps: list[float]) -> None:
    """One browser context moving the slider until the time is up; appends each step's ms to steps."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    await page.goto(f"{url}/threshold")
    await page.wait_for_selector("[data-testid='stSlider']", timeout=300_000)
    await page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=300_000)
    thumb = page.locator("[data-testid='stSlider'] input[type='range']").first
    await thumb.focus()
    await asyncio.sleep(0.5)
    deadline = time.time() + seconds
    direction = "ArrowRight"
    while time.time() < deadline:
        before = await page.evaluate(KEPT)
        started = time.perf_counter()
        await page.keyboard.press(direction)
        settled = None
        while time.perf_counter() - started < 120:
            await asyncio.sleep(0.02)
            running = await page.evaluate("() => !!document.querySelector('[data-testid=stStatusWidget]')")
            if await page.evaluate(KEPT) != before and not running:
                settled = settled or time.perf_counter()
                if (time.perf_counter() - settled) * 1000 >= quiet_ms:
                    break
            else:
                settled = None
        else:  # the count did not move (an empty bin): step back the other way and do not count it
            direction = "ArrowLeft" if direction == "ArrowRight" else "ArrowRight"
            continue
        steps.append((settled - started) * 1000)
    await context.close()


async def phase(url: str, users: int, seconds: float, quiet_ms: float, pid: int) -> tuple[list, list, dict]:
    """N users at once; returns every step's ms, the server's RSS samples (MB, one a second) and the CPU seconds the
    server and the browsers used (the bench's own Python is neither)."""
    from playwright.async_api import async_playwright

    steps: list[float] = []
    memory: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            memory.append(rss_mb(pid))
            await asyncio.sleep(1.0)

    server = lambda process_id, command: process_id == str(pid)  # noqa: E731
    browsers = lambda process_id, command: "chromium" in command  # noqa: E731
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sampler = asyncio.create_task(sample())
        server_before, browser_before = cpu_seconds(server), cpu_seconds(browsers)
        await asyncio.gather(*(user(browser, url, seconds, quiet_ms, steps) for _ in range(users)))
        cpu = {"server": cpu_seconds(server) - server_before, "browsers": cpu_seconds(browsers) - browser_before}
        done.set()
        await sampler
        await browser.close()
    return steps, memory, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the N-user phase moves sliders")
    parser.add_argument("--baseline-seconds", type=float, help="how long the 1-user phase runs (default: --seconds)")
    parser.add_argument("--run", default=str(SHIPPED_RUN), help="the run the page shows")
    parser.add_argument("--quiet-ms", type=float, default=300.0, help="settled = count changed and idle this long")
    args = parser.parse_args()
    if args.users < 1 or args.seconds <= 0:
        sys.exit("error: --users must be >= 1 and --seconds > 0")
    if not os.path.exists(CHROMIUM):
        sys.exit(f"error: {CHROMIUM} is missing: apt-get install chromium")
    process, url = start_streamlit({"DAE_DISTILL_RUN": args.run})
    try:
        start_mb = rss_mb(process.pid)
        one, _, one_cpu = asyncio.run(phase(url, 1, args.baseline_seconds or args.seconds, args.quiet_ms, process.pid))
        many, memory, many_cpu = asyncio.run(phase(url, args.users, args.seconds, args.quiet_ms, process.pid))
    finally:
        process.terminate()
        process.wait(timeout=20)
    if not one or not many:
        sys.exit("error: no step settled: is the page showing a slider?")
    fifth = max(1, len(memory) // 5)
    print(
        f"Threshold slider, {args.baseline_seconds or args.seconds:.0f} s with 1 user then {args.seconds:.0f} s with "
        f"{args.users}, {os.cpu_count()} CPU cores, server on 127.0.0.1, "
        f"run {Path(args.run).name}"
    )
    print(
        f"{'per step (key press to settled page)':<40}{'steps':>7}{'median ms':>11}{'p95 ms':>9}{'vs 1 user':>11}"
        f"{'server CPU ms':>15}{'browser CPU ms':>16}"
    )
    base = statistics.median(one)
    for name, values, cpu in (("1 user", one, one_cpu), (f"{args.users} users at once", many, many_cpu)):
        median = statistics.median(values)
        print(
            f"{name:<40}{len(values):>7}{median:>11.0f}{percentile(values, 0.95):>9.0f}{median / base:>10.2f}x"
            f"{cpu['server'] * 1000 / len(values):>15.0f}{cpu['browsers'] * 1000 / len(values):>16.0f}"
        )
    print(
        f"server RSS: {start_mb:.0f} MB at start, peak {max(memory):.0f} MB; {args.users}-user phase: first fifth "
        f"{statistics.mean(memory[:fifth]):.0f} MB, last fifth {statistics.mean(memory[-fifth:]):.0f} MB"
    )
    median = statistics.median(many)
    print(
        f"goal (median < {GOAL_MS:.0f} ms with {args.users} users): {'met' if median < GOAL_MS else 'not met'} "
        f"({median:.0f} ms)"
    )


if __name__ == "__main__":
    main()
