"""One real-browser test: `streamlit run` on a free localhost port, driven by Playwright in Debian's Chromium.

It opens the Threshold page, moves the slider with the keyboard, checks that the counts change and no
exception shows, uploads an image on the Your images page, sees a prediction, and saves screenshots
under test-artifacts/ (and docs/screenshots/ when UPDATE_SCREENSHOTS=1).
"""

import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_streamlit(env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` headless on a free localhost port; returns (process, url) once it is healthy."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env={**os.environ, "STREAMLIT_SERVER_HEADLESS": "true", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("streamlit did not start within 90 s")


@pytest.fixture(scope="module")
def server(gtsrb_root):
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    process, url = start_streamlit()
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def shoot(page, name: str) -> None:
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
        shutil.copy(out / f"{name}.png", ROOT / "docs" / "screenshots" / f"{name}.png")


def wait_idle(page, timeout: float = 120_000) -> None:
    """Until Streamlit's 'running' indicator is gone."""
    page.wait_for_timeout(500)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=timeout)


def kept_count(page) -> str:
    metric = page.locator("[data-testid='stMetric']", has_text="kept").first
    return metric.locator("[data-testid='stMetricValue']").inner_text()


def test_a_deep_link_on_a_fresh_server_shows_the_pages_by_title_while_the_engine_loads(gtsrb_root, browser):
    """The first visit of /poison after a server start: Streamlit ran pages/poison.py directly, whose imports load
    the engine (7-40 s) before it switched to app.py's navigation; for those seconds the page was blank under the
    pages' file names (app, autoencoder, ...). Now the switch comes first and app.py draws its navigation before the
    engine loads: while the engine spinner shows, the sidebar lists the titles. (Streamlit itself lists the file
    names for the moment before the first run answers: the pages/ folder's default navigation.)"""
    process, url = start_streamlit()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/poison")
        while_loading = []  # the sidebar's labels at each look while the engine spinner shows
        deadline = time.time() + 120
        while time.time() < deadline and not page.get_by_role("heading", name="Poison").count():
            if page.get_by_text("Starting the engine").count():
                labels = page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()
                while_loading.append(tuple(label.split("\n")[-1] for label in labels))
            page.wait_for_timeout(200)
        assert page.get_by_role("heading", name="Poison").count(), "the Poison page did not load in 120 s"
        assert while_loading, "no engine spinner seen before the page was drawn"
        assert all(labels[:2] == ("Overview", "Poison") for labels in while_loading), set(while_loading)
        page.close()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_threshold_slider_and_upload_in_a_real_browser(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/threshold")
    page.wait_for_selector("[data-testid='stSlider']", timeout=120_000)
    wait_idle(page)
    before = kept_count(page)
    thumb = page.locator("[data-testid='stSlider'] input[type='range']").first
    thumb.focus()
    for _ in range(40):
        page.keyboard.press("ArrowLeft")
    wait_idle(page)
    page.wait_for_function(
        "before => { const m = [...document.querySelectorAll('[data-testid=stMetric]')]"
        ".find(e => e.innerText.startsWith('kept'));"
        " return m && !m.innerText.includes(before); }",
        arg=before,
        timeout=60_000,
    )
    after = kept_count(page)
    assert after != before
    assert page.locator("[data-testid='stException']").count() == 0
    shoot(page, "threshold")

    page.goto(f"{server}/your_images")
    page.wait_for_selector("[data-testid='stFileUploaderDropzoneInput']", state="attached", timeout=120_000)
    wait_idle(page)
    image_path = tmp_path / "sign.png"  # a drawn stop sign shipped with the project (core/reporting/sign_examples.py)
    shutil.copy(ROOT / "examples" / "signs" / "stop_1.png", image_path)
    page.set_input_files("[data-testid='stFileUploaderDropzoneInput']", str(image_path))
    page.wait_for_selector("text=sign.png", timeout=60_000)
    wait_idle(page)
    page.wait_for_selector("text=student", timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("text=top-5").count() >= 2
    shoot(page, "your_images")

    for name, path in (("overview", ""), ("poison", "poison"), ("autoencoder", "autoencoder")) + tuple(
        (name, name) for name in ("distillation", "detectors")
    ):
        page.goto(f"{server}/{path}")  # the Overview is the default page: "/", not "/overview"
        page.wait_for_selector("h1", timeout=120_000)
        wait_idle(page)
        assert page.locator("[data-testid='stException']").count() == 0, name
        assert page.get_by_text("Page not found").count() == 0, name
        assert str(ROOT) not in page.inner_text("body"), f"{name} shows the machine's absolute project path"
        # a demo shows no Deploy button and no developer menu (.streamlit/config.toml: client.toolbarMode)
        assert page.locator("[data-testid='stAppDeployButton']").count() == 0, name
        assert page.get_by_role("button", name="Deploy").count() == 0, name
        if name == "detectors":  # the defence ranking's nine columns wrap within the page, no sideways scroll
            widths = page.evaluate(
                "() => [...document.querySelectorAll(\"[data-testid='stTable']\")]"
                ".map(box => [box.querySelector('table').scrollWidth, box.clientWidth])"
            )
            assert widths and widths[0][0] <= widths[0][1], widths
        shoot(page, name)
    page.close()


def test_slider_bench_runs_and_prints_its_numbers():
    """bench/slider.py at a tiny size (3 presses): it drives the page and prints browser and server times."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "slider.py"),
            *("--presses", "3", "--quiet-ms", "300", "--users", "2", "--moves", "10"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for view in ("picture", "interactive"):  # both views of the panels, measured side by side
        browser = next(line for line in lines if line.startswith(f"{view}: key press to idle page"))
        server = next(line for line in lines if line.startswith(f"{view}: server, the page's fragment"))
        median_browser, median_server = float(browser.split()[-3]), float(server.split()[-3])
        # measured and printed; not compared: under load the browser's idle detection can end before the server's
        # run (it failed once so, 3 presses beside a 2-core grid). Comparing timings is the bench's job.
        assert 0 < median_server < math.inf and 0 < median_browser < math.inf
    assert any(line.startswith("picture / interactive, median to idle:") for line in lines)
    # the instant view: its load time, and two users dragging: every value shown in order, the server's CPU per move
    assert any(line.startswith("instant: a fresh page to the view drawn") for line in lines), lines
    users = next(line for line in lines if line.startswith("instant: 2 users dragging at once"))
    assert "in order" in users and "OUT OF ORDER" not in users


@pytest.mark.parametrize(
    "page_name", ["", "poison", "autoencoder", "threshold", "distillation", "detectors", "your_images"]
)
def test_every_page_fits_a_1024_pixel_window_without_an_exception(server, browser, page_name):
    """A presenter's laptop or a projector at 1024 px: no page scrolls sideways, none shows an exception."""
    page = browser.new_page(viewport={"width": 1024, "height": 768})
    page.goto(f"{server}/{page_name}", timeout=120_000)
    page.wait_for_selector("[data-testid='stMainBlockContainer']", timeout=120_000)
    for _ in range(60):  # settled: no script running across two looks 1.5 s apart (a page reruns as it loads)
        wait_idle(page, timeout=240_000)
        page.wait_for_timeout(1500)
        if (
            page.locator("[data-testid='stStatusWidget']").count() == 0
            and page.locator("[data-testid='stSkeleton']").count() == 0
        ):
            break
    assert page.locator("[data-testid='stException']").count() == 0, page_name
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{page_name or 'overview'} is {overflow} px wider than the 1024 px window"
    shoot(page, f"width_1024_{page_name or 'overview'}")
    page.close()
