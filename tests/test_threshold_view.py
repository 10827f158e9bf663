"""The Threshold page's instant view (ui/threshold_view.py) in Chromium: every number the browser computes while the
pointer moves equals core's for hundreds of thresholds; a drag shows every intermediate value in order; the value
released reaches the other pages and the link."""

import os

import numpy as np
import pytest

from core.experiments.run import SHIPPED_RUN, Run
from core.experiments.sweep import accuracy_at, curve_at_share
from core.reporting import explore
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, shoot, start_streamlit, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(gtsrb_root):
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    process, url = start_streamlit({"DAE_DISTILL_SERVER_VIEW": "0", "DAE_DISTILL_RUN": str(SHIPPED_RUN)})
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{server}/threshold")
        page.wait_for_function("() => window.__thresholdView !== undefined", timeout=240_000)
        wait_idle(page, 240_000)
        yield page
        browser.close()


def test_the_browser_computes_what_core_computes(page):
    run = Run.load(SHIPPED_RUN)
    scores = run.train_scores.numpy().astype(np.float64)
    mask = run.poison_mask.numpy().astype(bool)
    slider = page.locator(".tv input[type=range]")
    low, high = float(slider.get_attribute("min")), float(slider.get_attribute("max"))
    tolerance = (high - low) / 2000
    measured = [point["threshold"] for point in run.sweep["curves"]["detector"]]
    thresholds = [*np.linspace(low, high, 240), low, high, low - 1.0, *measured, *scores[:20]]
    thresholds += [t + tolerance / 2 for t in measured] + [float(np.max(scores)) + 1]
    browser = page.evaluate("ts => ts.map(t => window.__thresholdView.compute(t))", thresholds)
    assert len(browser) == len(thresholds) > 280
    kept_nothing = 0
    for t, got in zip(thresholds, browser):
        counts = explore.threshold_counts(scores, mask, t)
        for key in ("kept_clean", "kept_poisoned", "dropped_clean", "dropped_poisoned", "kept"):
            assert got[key] == counts[key], (t, key)
        for key in ("precision", "recall", "f1"):
            assert got[key] == pytest.approx(counts[key], abs=1e-12), (t, key)
        fpr, tpr = explore.operating_point(scores, mask, t)
        assert (got["fpr"], got["tpr"]) == pytest.approx((fpr, tpr), abs=1e-12)
        expected = accuracy_at(run.sweep, t, tolerance)
        assert got["accuracy"]["where"] == expected["where"], t
        for key in ("clean_acc", "fgsm_acc", "ifgsm_acc", "adaptive_acc"):
            if expected[key] is None:
                assert got["accuracy"][key] is None
            else:
                assert got["accuracy"][key] == pytest.approx(expected[key], abs=1e-12), (t, key)
        for name in ("random", "oracle"):
            share = (counts["dropped_clean"] + counts["dropped_poisoned"]) / len(scores)
            want = curve_at_share(run.sweep, name, share)
            assert got[name]["clean_acc"] == pytest.approx(want["clean_acc"], abs=1e-9), (t, name)
        kept_nothing += got["kept"] == 0
    assert kept_nothing >= 1  # a threshold below every score was among them
    # what the page shows is what it computed: render a few thresholds and read the texts back
    for t in (low, measured[len(measured) // 2], high):
        shown = page.evaluate(
            """t => { const view = window.__thresholdView; const s = view.render(t);
            const text = k => view.root.querySelector(`[data-s=${k}]`).textContent;
            return {s, clean: text("clean_acc"), how: text("how"), share: text("share")}; }""",
            t,
        )
        clean = shown["s"]["accuracy"]["clean_acc"]
        assert shown["clean"] == ("-" if clean is None else f"{100 * clean:.2f}%"), (t, shown)
        assert shown["how"].startswith(shown["s"]["accuracy"]["where"]), (t, shown)
        assert shown["share"] == f"{100 * shown['s']['drop_share']:.1f}", (t, shown)
    shoot(page, "threshold_instant")
    assert {got["accuracy"]["where"] for got in browser} == {"measured", "interpolated", "not measured"}


def test_a_drag_shows_every_value_in_order_and_the_release_reaches_the_other_pages_and_the_link(page, server):
    page.evaluate("() => { window.__thresholdTimings.values = []; }")
    slider = page.locator(".tv input[type=range]")
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    for step in range(1, 101):  # a continuous drag across the range
        page.mouse.move(box["x"] + 2 + (box["width"] - 4) * step / 100, y)
    page.mouse.up()
    values = page.evaluate("() => window.__thresholdTimings.values")
    assert len(values) >= 80, len(values)  # a render per move (a few moves land on the same slider step)
    assert values == sorted(values)  # none reordered
    final = float(slider.input_value())
    wait_idle(page)
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name="Your images").click()
    page.get_by_text(f"at the threshold {final:.5f}").first.wait_for(timeout=120_000)
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name="Threshold").click()
    page.wait_for_function("() => window.__thresholdView !== undefined", timeout=120_000)
    wait_idle(page)
    assert float(page.locator(".tv input[type=range]").input_value()) == pytest.approx(final, rel=1e-6)
    assert "threshold_dae=" in page.url  # the link holds the released value: a new page opened from it shows it
    fresh = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    fresh.goto(page.url)
    fresh.wait_for_function("() => window.__thresholdView !== undefined", timeout=240_000)
    assert float(fresh.locator(".tv input[type=range]").input_value()) == pytest.approx(final, rel=1e-5)
    fresh.close()


def test_two_runs_side_by_side_from_a_link_follow_the_same_share(server, page):
    fresh = page.context.browser.new_page(viewport={"width": 1400, "height": 1400})
    fresh.goto(f"{server}/threshold?compare=run%3Acheckpoints%2Fsweep_tap&compare_position=same+share")
    fresh.wait_for_function(
        "() => window.__thresholdView !== undefined && window.__thresholdFollower !== undefined", timeout=240_000
    )
    wait_idle(fresh)
    assert fresh.get_by_text("Side by side: run checkpoints/sweep_tap (DAE score)").count() == 1
    leader = fresh.locator(".tv input[type=range]").first
    leader.focus()
    for _ in range(60):
        fresh.keyboard.press("ArrowRight")
    wait_idle(fresh)  # each key press is also a release: the server stores it and the views mount again
    fresh.wait_for_timeout(300)  # the leader announces its share 50 ms after mounting
    shares = fresh.evaluate(
        """() => {
        const lead = window.__thresholdView, follow = window.__thresholdFollower;
        return [lead.compute(lead.current()).drop_share, follow.compute(follow.current()).drop_share, follow.current()];
    }"""
    )
    follower_scores = Run.load(SHIPPED_RUN.parent / "sweep_tap").train_scores
    # the same share of each training set dropped, up to the images tied at the follower's threshold (float32 scores)
    ties = int((follower_scores == follower_scores.float().quantile(1 - shares[1])).sum()) + 2
    assert abs(shares[0] - shares[1]) <= max(ties, 10) / len(follower_scores), shares
    shoot(fresh, "threshold_side_by_side")
    fresh.close()
