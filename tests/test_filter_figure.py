"""The Threshold page's panels as a picture: markers land where matplotlib draws the same data point, and the page
shows the picture by default and the Plotly charts behind its toggle."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ui.filter_figure import CURVE, base_figure, figure_png


def _hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def _near(pixels: np.ndarray, colour: str, tolerance: int = 40) -> np.ndarray:
    return np.abs(pixels.astype(int) - _hex_rgb(colour)).sum(axis=-1) < tolerance


def test_a_marker_sits_on_the_curve_matplotlib_drew_through_its_data_point():
    hist = {"edges": np.linspace(0, 1, 11), "clean": np.arange(1, 11) * 100, "poisoned": np.arange(10, 0, -1)}
    # ROC: the line y = 0.25 + 0.5 x; PR: the horizontal line y = 0.8
    roc = (np.linspace(0, 1, 50), 0.25 + 0.5 * np.linspace(0, 1, 50))
    pr = (np.linspace(0, 1, 50), np.full(50, 0.8))
    base = base_figure(hist, roc, pr, ("score", "ROC", "PR"), "score")
    curve = _near(base.pixels, CURVE)
    for panel, (x, y) in ((1, (0.6, 0.55)), (2, (0.3, 0.8))):
        column, row = (round(value) for value in base.to_pixel(panel, x, y))
        window = curve[row - 3 : row + 4, column - 3 : column + 4]
        assert window.any(), f"panel {panel}: no curve pixel within 3 px of the marker's centre"
        far = base.to_pixel(panel, x, min(y + 0.15, 1.0))  # 0.15 above the curve: no curve pixel there
        assert not curve[round(far[1]) - 2 : round(far[1]) + 3, round(far[0]) - 2 : round(far[0]) + 3].any()

    picture = np.asarray(Image.open(io.BytesIO(figure_png(base, 0.55, (0.6, 0.55), (0.3, 0.8)))).convert("RGB"))
    assert picture.shape == base.pixels.shape
    changed = np.abs(picture.astype(int) - base.pixels.astype(int)).sum(axis=-1) > 0
    x_line, _ = base.to_pixel(0, 0.55, 1.0)
    (left, right, top, bottom) = base.panels[0][1]
    line_columns = np.flatnonzero(changed[int(top) + 2 : int(bottom) - 2, int(left) : int(right)].any(axis=0))
    assert abs(line_columns.mean() + int(left) - x_line) < 2  # the threshold's dashed line, at 0.55 on the axis
    assert not changed[:, : int(left) - 5].any()  # nothing else on the picture moved


def test_the_threshold_page_shows_the_picture_and_plotly_behind_its_toggle(run_directory):
    from tests.helpers import assert_clean, on_page

    at = on_page(run_directory, "pages/threshold.py")
    assert_clean(at)

    def panels():  # the histogram / ROC / precision-recall figure (the sweep's chart is Plotly in both views)
        return [chart for chart in at.get("plotly_chart") if chart.key != "chart-sweep"]

    pictures = len(at.get("image"))
    assert not panels()
    at.toggle(key="interactive_charts").set_value(True).run()
    assert_clean(at)
    assert len(panels()) == 1 and len(at.get("image")) == pictures - 1


def test_pictures_of_pixels_are_sent_as_png_not_re_encoded_as_jpeg(run_directory):
    """Streamlit turns an RGB image into JPEG (quality 90) unless told otherwise: that changes a poison's +-2 grey
    levels by more than the poison, and re-encodes every image on every slider move. Every page asks for PNG."""
    from tests.helpers import assert_clean, on_page

    for page in ("pages/threshold.py", "pages/poison.py", "pages/autoencoder.py"):
        at = on_page(run_directory, page)
        assert_clean(at)
        urls = [image.url for element in at.get("image") for image in element.proto.imgs]
        assert urls and all(url.endswith(".png") for url in urls), (page, [u for u in urls if not u.endswith(".png")])


def test_a_sample_strip_fits_streamlits_width_and_shows_each_tile():
    """Twelve 3x tiles (the Threshold page's rows) stay under the width above which st.image re-encodes the PNG, and
    each tile's pixels are where the strip puts them."""

    from ui.filter_figure import STREAMLIT_CONTENT_WIDTH, sample_strip

    tiles = [np.full((96, 96, 3), 20 * k, dtype=np.uint8) for k in range(12)]
    strip = np.asarray(Image.open(io.BytesIO(sample_strip(tiles, [f"tile {k}" for k in range(12)]))))
    assert strip.shape[1] <= STREAMLIT_CONTENT_WIDTH
    cell = 96 + 96 // 4 + 6  # rows of six: the image, its caption, the gap
    for k in range(12):
        assert (strip[(k // 6) * cell + 10, (k % 6) * 102 + 48] == 20 * k).all()
    # the captions are drawn at least 13 px high (twelve in a row drew them at about 7 px once shown: issue 34)
    caption_rows = [row for row in range(96, 96 + 96 // 4) if (strip[row, : 6 * 102] < 128).any()]
    assert len(caption_rows) >= 9
