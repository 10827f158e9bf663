"""The Threshold page's three panels (score histogram, ROC, precision-recall) as a picture that a slider move only
draws on.

What depends on the threshold is one dashed line and two markers; everything else is the same on every move. So the
panels are drawn once per run and score with matplotlib (`base_figure`, cached by the page), and a move copies that
picture and draws the line and the markers at the threshold's pixels with PIL (`figure_png`, a few ms). The browser
then swaps one image instead of re-mounting a Plotly chart, which was most of a slider move's time
(bench/slider.py). The interactive Plotly version stays one toggle away on the page.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont
from plotly.subplots import make_subplots

CLEAN, POISONED, CURVE, MARKER = "#4c78a8", "#e45756", "#1f77b4", "#ff7f0e"


@dataclass(frozen=True)
class BaseFigure:
    pixels: np.ndarray  # (H, W, 3) uint8: the panels without the threshold, as the picture shows them
    panels: tuple  # per panel: (x0, x1, y0, y1) data limits and (left, right, top, bottom) pixel box
    log_y: tuple[bool, bool, bool]  # the histogram's counts are on a log axis
    indexed: np.ndarray  # (H, W) uint8 palette indices of the same picture
    palette: tuple[int, ...]  # 256 RGB triples, flat; the last two are the threshold's black and the marker colour

    def to_pixel(self, panel: int, x: float, y: float) -> tuple[float, float]:
        (x0, x1, y0, y1), (left, right, top, bottom) = self.panels[panel]
        if self.log_y[panel]:
            y, y0, y1 = np.log10(max(y, 1e-12)), np.log10(y0), np.log10(y1)
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)


def base_figure(hist: dict, roc: tuple, pr: tuple, titles: tuple[str, str, str], unit: str) -> BaseFigure:
    """Draw the three panels once. hist: {"edges", "clean", "poisoned"}; roc, pr: (x, y) curves (thinned)."""
    # deferred: matplotlib adds about 0.7 s to the Threshold page's first load and only the static picture needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.6), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)  # an off-screen canvas of its own: no global backend, safe beside other threads
    axes = figure.subplots(1, 3)
    edges = np.asarray(hist["edges"], dtype=float)
    for counts, colour, label in ((hist["clean"], CLEAN, "clean"), (hist["poisoned"], POISONED, "poisoned")):
        axes[0].stairs(
            np.maximum(np.asarray(counts, dtype=float), 0), edges, fill=True, alpha=0.6, color=colour, label=label
        )
    axes[0].set_yscale("log")
    axes[0].set_ylim(bottom=0.8)
    axes[0].set(xlabel=unit, ylabel="training images", title=titles[0])
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].plot(*roc, color=CURVE, label="ROC")
    axes[1].plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    axes[1].set(xlabel="false-positive rate", ylabel="true-positive rate", title=titles[1], xlim=(0, 1), ylim=(0, 1))
    axes[2].plot(*pr, color=CURVE)
    axes[2].set(xlabel="recall", ylabel="precision", title=titles[2], xlim=(0, 1), ylim=(0, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
    figure.canvas.draw()
    height = figure.canvas.get_width_height()[1]
    panels = []
    for ax in axes:
        box = ax.get_window_extent()  # display pixels, origin at the bottom left
        panels.append(
            (
                (*ax.get_xlim(), *ax.get_ylim()),
                (box.x0, box.x1, height - box.y1, height - box.y0),
            )
        )
    rendered = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())
    # A palette picture: a move's PNG is a byte per pixel instead of three, encoded about 4x faster (the encoding was
    # half of the slider fragment's server time in a py-spy profile); 254 colours keep every pixel within a few levels.
    quantised = rendered.quantize(colors=254, method=Image.Quantize.MEDIANCUT)
    palette = tuple(quantised.getpalette()[: 254 * 3]) + (0, 0, 0) + tuple(_hex_rgb(MARKER))
    indexed = np.asarray(quantised, dtype=np.uint8).copy()
    pixels = np.asarray(palette, dtype=np.uint8).reshape(256, 3)[indexed]
    return BaseFigure(pixels, tuple(panels), (True, False, False), indexed, palette)


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


BLACK_INDEX, MARKER_INDEX = 254, 255


def figure_png(
    base: BaseFigure, threshold: float, roc_point: tuple[float, float], pr_point: tuple[float, float]
) -> bytes:
    """The panels with this threshold's dashed line (histogram) and markers (ROC, PR), as PNG bytes."""
    image = Image.fromarray(base.indexed, "P")
    image.putpalette(base.palette)
    draw = ImageDraw.Draw(image)
    (x0, x1, _, _), (left, right, top, bottom) = base.panels[0]
    if x0 <= threshold <= x1:
        x, _ = base.to_pixel(0, threshold, 1.0)
        for start in np.arange(top, bottom, 10):  # dashed: 6 px on, 4 off
            draw.line([(x, start), (x, min(start + 6, bottom))], fill=BLACK_INDEX, width=2)
    for panel, (x, y) in ((1, roc_point), (2, pr_point)):
        px, py = base.to_pixel(panel, x, y)
        draw.ellipse([px - 7, py - 7, px + 7, py + 7], fill=MARKER_INDEX, outline=BLACK_INDEX)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)  # speed over size: it is sent once per move, on loopback or LAN
    return buffer.getvalue()


def sample_strip(
    tiles: list[np.ndarray], captions: list[str], slots: int = 12, per_row: int = 6, gap: int = 6
) -> bytes:
    """Up to `slots` ringed sample images (HWC uint8, one size) in rows of `per_row`, a caption under each, as one PNG:
    one image for the browser to swap per move instead of a dozen elements to re-render. Rows of six keep the captions
    readable at the page's width (twelve in a row drew them at about 7 px: issue 34)."""
    side = tiles[0].shape[0] if tiles else 128
    font = ImageFont.load_default(size=max(12, side // 7))
    rows = max(1, -(-min(len(tiles), slots) // per_row))
    cell = side + side // 4  # the image and its caption
    strip = Image.new("RGB", (per_row * (side + gap) - gap, rows * (cell + gap) - gap), "white")
    draw = ImageDraw.Draw(strip)
    for slot, (tile, caption) in enumerate(zip(tiles[:slots], captions)):
        left, top = (slot % per_row) * (side + gap), (slot // per_row) * (cell + gap)
        strip.paste(Image.fromarray(tile), (left, top))
        draw.text((left + side / 2, top + side + side / 8), caption, fill="black", font=font, anchor="mm")
    buffer = io.BytesIO()
    strip.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


STREAMLIT_CONTENT_WIDTH = 1460  # st.image re-encodes wider pictures after resizing them (image_utils.py)


def interactive_figure(
    hist: dict,
    curves: dict,
    threshold: float,
    operating: tuple[float, float],
    precision_recall: tuple[float, float],
    title: str,
    unit: str,
) -> go.Figure:
    """The same three panels as interactive Plotly charts (hover, zoom, download), the threshold drawn on them. One
    figure with three panels, not three charts: Streamlit re-mounts every chart whose marker moves, and the re-mounts
    are most of a slider move's time in the browser (bench/slider.py)."""
    centres = (hist["edges"][:-1] + hist["edges"][1:]) / 2
    figure = make_subplots(
        rows=1, cols=3, subplot_titles=(title, "ROC: dropping poisons", "Precision-recall"), horizontal_spacing=0.07
    )
    figure.add_trace(go.Bar(x=centres, y=hist["clean"], name="clean", marker_color=CLEAN, opacity=0.7), row=1, col=1)
    figure.add_trace(
        go.Bar(x=centres, y=hist["poisoned"], name="poisoned", marker_color=POISONED, opacity=0.7), row=1, col=1
    )
    figure.add_vline(threshold, line_color="black", line_dash="dash", row=1, col=1)
    roc_x, roc_y = curves["roc_shown"]
    figure.add_trace(go.Scatter(x=roc_x, y=roc_y, name="ROC", mode="lines"), row=1, col=2)
    chance = go.Scatter(x=[0, 1], y=[0, 1], name="chance", mode="lines", line_dash="dot", line_color="grey")
    figure.add_trace(chance, row=1, col=2)
    marker = dict(mode="markers", marker_size=12)
    figure.add_trace(
        go.Scatter(x=[operating[0]], y=[operating[1]], name="this threshold (ROC)", **marker), row=1, col=2
    )
    pr_x, pr_y = curves["pr_shown"]
    figure.add_trace(go.Scatter(x=pr_x, y=pr_y, name="PR", mode="lines"), row=1, col=3)
    figure.add_trace(
        go.Scatter(x=[precision_recall[0]], y=[precision_recall[1]], name="this threshold (PR)", **marker), row=1, col=3
    )
    figure.update_layout(barmode="overlay", height=330, margin=dict(t=40, b=30))
    for column, (x_title, y_title) in enumerate(
        ((unit, "training images"), ("false-positive rate", "true-positive rate"), ("recall", "precision")), 1
    ):
        figure.update_xaxes(title_text=x_title, row=1, col=column)
        figure.update_yaxes(title_text=y_title, row=1, col=column, **({"type": "log"} if column == 1 else {}))
    return figure
