"""Key press to idle page on the Threshold page's slider, in a real browser, beside the server's share of it.

    python bench/slider.py [--run checkpoints/paper] [--presses 30] [--quiet-ms 400] [--views picture interactive]
                           [--users 5] [--moves 100]

Starts `streamlit run app.py` on a free localhost port, opens /threshold in Debian's Chromium (Playwright), focuses
the slider and presses ArrowRight N times, one at a time. For each press it waits until the "kept" count has changed
and the page has not changed for --quiet-ms, and records the time from the press to the page's last DOM change
(a MutationObserver's clock): what a user waits for. The page's fragment logs its own wall time
($DAE_DISTILL_TIMINGS, ui.widgets.timed): the server's part. Prints median and 95th percentile of both, side by side,
for each view of the page's panels, one after the other on the same server: the default picture (ui/filter_figure.py:
a move draws the threshold on an image) and the interactive Plotly charts (/threshold?interactive_charts=true).
Goal (issue 11): median under 150 ms on 2 CPU cores with the paper run's 35,288 scores.

The instant view (issue 35) also: a fresh page to the view drawn on a warm server (goal: within 1 s), the bytes it is
sent once (goal: at most 1 MB), and --users pages dragging at once (--moves pointer moves each, across the whole
range): the server's CPU per move while they drag (/proc/<pid>/stat; goal ~0), per release, and whether every page
showed every intermediate value in order.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.experiments.run import SHIPPED_RUN  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, start_streamlit  # noqa: E402

GOAL_MS = 150.0
WATCH = """() => {
    window.__lastChange = performance.now();
    window.__keptChange = performance.now();
    window.__kept = null;
    const kept = () => { const m = [...document.querySelectorAll('[data-testid=stMetric]')]
        .find(e => e.innerText.startsWith('kept')); return m ? m.innerText : null; };
    new MutationObserver(() => {
        window.__lastChange = performance.now();
        const now = kept();
        if (now !== window.__kept) { window.__kept = now; window.__keptChange = performance.now(); }
    }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""
KEPT = """() => { const m = [...document.querySelectorAll('[data-testid=stMetric]')]
    .find(e => e.innerText.startsWith('kept')); return m ? m.innerText : null; }"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(
    url: str, presses: int, quiet_ms: float, timings: Path, query: str = ""
) -> tuple[list[float], list[float], list[float]]:
    """Per press: ms to the last DOM change, ms to the new "kept" count, and the server's fragment ms."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/threshold{query}")
        page.wait_for_selector("[data-testid='stSlider']", timeout=180_000)
        page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=180_000)
        page.wait_for_timeout(1000)
        page.evaluate(WATCH)
        thumb = page.locator("[data-testid='stSlider'] input[type='range']").first
        thumb.focus()
        client, first, server = [], [], []
        for press in range(presses + 1):  # the first press warms caches and is not counted
            timings.write_text("")
            before = page.evaluate(KEPT)
            pressed = page.evaluate("performance.now()")
            page.keyboard.press("ArrowRight")
            deadline = time.time() + 60
            while time.time() < deadline:
                page.wait_for_timeout(25)
                state = page.evaluate(
                    "() => ({now: performance.now(), last: window.__lastChange, kept: window.__keptChange, running: "
                    "!!document.querySelector('[data-testid=stStatusWidget]')})"
                )
                kept = page.evaluate(KEPT)
                if kept != before and not state["running"] and state["now"] - state["last"] >= quiet_ms:
                    break
            else:
                raise RuntimeError(f"press {press}: the page did not settle within 60 s")
            if press == 0:
                continue
            client.append(state["last"] - pressed)
            first.append(state["kept"] - pressed)
            logged = [float(line.split("\t")[1]) for line in timings.read_text().splitlines() if line]
            server.append(sum(logged))
        browser.close()
    return client, first, server


INSTANT_GOAL_MS, INSTANT_P95_GOAL_MS = 16.0, 50.0  # issue 35: one frame at 60 Hz, median; p95 within 50 ms


VIEWPORT = {"width": 1400, "height": 1000}


def open_instant_view(opener, url: str):
    """A new page (of a browser, or of a context made with VIEWPORT) on the Threshold page's instant view, once the
    view is drawn and the page idle."""
    page = opener.new_page(viewport=VIEWPORT) if hasattr(opener, "new_context") else opener.new_page()
    page.goto(f"{url}/threshold")
    page.wait_for_function("() => window.__thresholdView !== undefined", timeout=180_000)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=180_000)
    return page


def measure_instant(url: str, presses: int) -> tuple[list[float], list[float], int]:
    """The instant view (ui/threshold_view.py): per press, ms from the key event to the page's numbers updated (the
    input handler's own clock) and to the next frame; and the bytes of the data it was sent (once per run and score)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = open_instant_view(browser, url)
        page.evaluate("() => { window.__thresholdTimings.render = []; window.__thresholdTimings.frame = []; }")
        page.locator(".tv input[type=range]").focus()
        for _ in range(presses):
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(30)
        page.wait_for_timeout(200)
        timings = page.evaluate("() => window.__thresholdTimings")
        size = page.evaluate("() => window.__thresholdView.bytes || 0")
        browser.close()
    return timings["render"], timings["frame"], size


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_load(url: str, loads: int = 3) -> tuple[list[float], list[float]]:
    """Per fresh page of the instant view on a warm server: ms from navigation to the view drawn (Streamlit's start,
    the server's run of the page, the data's transfer, decoding and first drawing), and the view's own share (decode
    and first drawing, from the component's mount)."""
    from playwright.sync_api import sync_playwright

    to_ready, own = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(loads + 1):  # the first warms the server's caches
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/threshold")
            page.wait_for_function("() => window.__thresholdReadyMs !== undefined", timeout=180_000)
            to_ready.append(page.evaluate("() => performance.now()") - 0.0)
            own.append(page.evaluate("() => window.__thresholdReadyMs"))
            page.close()
        browser.close()
    return to_ready[1:], own[1:]


def measure_drag(url: str, moves: int) -> tuple[list[float], list[float]]:
    """One page dragging the thumb across the whole range in `moves` pointer moves, 30 ms apart (a hand's pace): per
    move, ms from the input event to the numbers updated and to the frame painted. A drag sends nothing to the server
    until it ends (a key press is also a release: each one reruns the page on the server, which the key-press rows
    above include)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = open_instant_view(browser, url)
        box = page.locator(".tv input[type=range]").bounding_box()
        page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.wait_for_timeout(200)
        page.evaluate("() => { window.__thresholdTimings.render = []; window.__thresholdTimings.frame = []; }")
        for step in range(1, moves + 1):
            page.mouse.move(box["x"] + 2 + (box["width"] - 4) * step / moves, box["y"] + box["height"] / 2)
            page.wait_for_timeout(30)
        page.wait_for_timeout(200)
        timings = page.evaluate("() => window.__thresholdTimings")
        page.mouse.up()
        browser.close()
    return timings["render"], timings["frame"]


def measure_users(url: str, pid: int, users: int, moves: int) -> dict:
    """`users` pages of the instant view each dragging the slider's thumb across its whole range in `moves` pointer
    moves, interleaved, then releasing: the server's CPU time during the drags and per release, and whether every page
    showed every intermediate value in order."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        for _ in range(users):
            page = open_instant_view(browser.new_context(viewport=VIEWPORT), url)  # a context each: a user each
            page.evaluate("() => { window.__thresholdTimings.values = []; }")
            box = page.locator(".tv input[type=range]").bounding_box()
            pages.append((page, box))
        time.sleep(2)  # the server settles after the loads
        for page, box in pages:
            page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
            page.mouse.down()
        before = server_cpu_seconds(pid)
        for step in range(1, moves + 1):
            for page, box in pages:
                page.mouse.move(box["x"] + 2 + (box["width"] - 4) * step / moves, box["y"] + box["height"] / 2)
        during = server_cpu_seconds(pid) - before
        before = server_cpu_seconds(pid)
        for page, _ in pages:
            page.mouse.up()
        time.sleep(3)  # each release reruns the page on the server
        released = server_cpu_seconds(pid) - before
        values = [page.evaluate("() => window.__thresholdTimings.values") for page, _ in pages]
        browser.close()
    in_order = all(all(a <= b for a, b in zip(shown, shown[1:])) for shown in values)
    return {
        "during_ms_per_move": during * 1000 / (users * moves),
        "release_ms": released * 1000 / users,
        "values_shown": min(len(shown) for shown in values),
        "in_order": in_order,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(SHIPPED_RUN), help="the run the page shows")
    parser.add_argument("--presses", type=int, default=30)
    parser.add_argument("--quiet-ms", type=float, default=400.0, help="no DOM change for this long = idle")
    parser.add_argument("--users", type=int, default=5, help="pages dragging at once (instant view)")
    parser.add_argument("--moves", type=int, default=100, help="pointer moves per drag across the whole range")
    parser.add_argument(
        "--views", nargs="+", default=["instant", "picture", "interactive"], help="instant, picture and/or interactive"
    )
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        sys.exit(f"error: {CHROMIUM} is missing: apt-get install chromium")
    # the server-side views, and the instant one computed in the browser (the page's default)
    views = {
        "picture": "?instant_view=false",
        "interactive": "?instant_view=false&interactive_charts=true",
        "instant": "",
    }
    unknown = [view for view in args.views if view not in views]
    if unknown:
        sys.exit(f"error: unknown view {unknown}: choose from {', '.join(views)}")
    measured = {}
    with tempfile.TemporaryDirectory() as folder:
        timings = Path(folder) / "timings.tsv"
        environment = {"DAE_DISTILL_RUN": args.run, "DAE_DISTILL_TIMINGS": str(timings), "DAE_DISTILL_SERVER_VIEW": "0"}
        process, url = start_streamlit(environment)
        try:
            for view in args.views:
                if view == "instant":
                    instant = measure_instant(url, args.presses)
                    drag = measure_drag(url, args.moves)
                    loads = measure_load(url)
                    users = measure_users(url, process.pid, args.users, args.moves)
                else:
                    measured[view] = measure(url, args.presses, args.quiet_ms, timings, views[view])
        finally:
            process.terminate()
            process.wait(timeout=20)
    from core.experiments.run import Run, project_path

    n_scores = len(Run.load(args.run).train_scores)
    print(
        f"Threshold page, {args.presses} ArrowRight presses per view, {n_scores:,} training scores "
        f"({project_path(args.run)}), "
        f"{os.cpu_count()} CPU cores"
    )
    print(f"{'per press':<46}{'median ms':>11}{'p95 ms':>9}{'goal ratio':>12}")
    if "instant" in args.views:
        render, frame, size = instant
        for name, values in (
            ("instant: key event to updated numbers", render),
            ("instant: key event to the frame painted", frame),
        ):
            median = statistics.median(values)
            print(f"{name:<46}{median:>11.1f}{percentile(values, 0.95):>9.1f}{median / INSTANT_GOAL_MS:>12.2f}")
        drag_render, drag_frame = drag
        for name, values in (
            ("instant, drag: move to updated numbers", drag_render),
            ("instant, drag: move to the frame painted", drag_frame),
        ):
            median = statistics.median(values)
            print(f"{name:<46}{median:>11.1f}{percentile(values, 0.95):>9.1f}{median / INSTANT_GOAL_MS:>12.2f}")
        for name, values in (("key press", frame), ("drag", drag_frame)):
            met = statistics.median(values) <= INSTANT_GOAL_MS and percentile(values, 0.95) <= INSTANT_P95_GOAL_MS
            print(
                f"instant, {name}: goal (median <= {INSTANT_GOAL_MS:.0f} ms, p95 <= {INSTANT_P95_GOAL_MS:.0f} ms "
                f"to the frame painted): {'met' if met else 'not met'}"
            )
        print(f"instant: data sent once: {size / 1e6:.2f} MB (goal <= 1 MB)")
        to_ready, own = loads
        loaded = "met" if max(to_ready) <= 1000 else "not met"
        print(
            f"instant: a fresh page to the view drawn (warm server, {len(to_ready)} loads): median "
            f"{statistics.median(to_ready):.0f} ms, of which decoding the data and the first drawing "
            f"{statistics.median(own):.0f} ms (goal, loaded within 1 s: {loaded})"
        )
        print(
            f"instant: {args.users} users dragging at once, {args.moves} pointer moves each: server CPU "
            f"{users['during_ms_per_move']:.2f} ms per move while dragging, {users['release_ms']:.0f} ms per release; "
            f"values shown per drag: at least {users['values_shown']} of {args.moves}, "
            f"{'in order' if users['in_order'] else 'OUT OF ORDER'}"
        )
    for view, (client, first, server) in measured.items():
        rows = (
            (f"{view}: key press to idle page (browser)", client),
            (f"{view}: key press to new kept count", first),
            (f"{view}: server, the page's fragment", server),
        )
        for name, values in rows:
            median = statistics.median(values)
            print(f"{name:<46}{median:>11.0f}{percentile(values, 0.95):>9.0f}{median / GOAL_MS:>12.2f}")
        share = statistics.median(server) / statistics.median(client)
        print(
            f"{view}: server share of the median {share:.0%}; goal (median < {GOAL_MS:.0f} ms): "
            f"{'met' if statistics.median(client) < GOAL_MS else 'not met'}"
        )
    if "instant" in args.views and "picture" in measured:
        ratio = statistics.median(measured["picture"][0]) / statistics.median(instant[1])
        print(f"picture view's key press to idle page / instant view's key event to the frame painted: {ratio:.1f}x")
    if len(measured) == 2:
        picture, interactive = (statistics.median(measured[view][0]) for view in ("picture", "interactive"))
        print(f"picture / interactive, median to idle: {picture / interactive:.2f}x")


if __name__ == "__main__":
    main()
