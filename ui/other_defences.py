"""The Threshold page's last section: the other training-time defences, what each does to this run's images (the
purifiers' preview), and what the shipped grids measured behind it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.defences import SIGMA
from core.engine.registry import DEFENCES
from core.experiments.defence_grid import defence_table
from ui.data import cached_defence_grid, purify_preview
from ui.links import link_names
from ui.widgets import enlarged, guard


def draw_other_defences(directory: str) -> None:
    st.subheader("Other defences")
    st.caption(
        "Filtering is one defence. The others change every training image (purify, JPEG, grayscale, projection, "
        "filters), how the classifier learns (adversarial training, augmentation) or repair it afterwards "
        "(fine-tuning, ABL, FT-SAM). `python -m core defences` measures each against every threat case; the "
        "Detectors page ranks them all."
    )
    link_names("defence", DEFENCES.names(), DEFENCES.label)
    defence = st.selectbox("Defence", DEFENCES.names(), format_func=DEFENCES.label, key="defence", bind="query-params")
    st.markdown(DEFENCES[defence].description)
    if DEFENCES[defence].purifies_with_run_dae:  # the preview purifies with the run's DAE
        purified_preview(directory)
    with guard("the shipped defence grid"):
        grid = cached_defence_grid()
        if not grid:
            st.info("No shipped defence grid: `python -m core defences --seeds 3 --out checkpoints/defences` makes it.")
            return
        rows = defence_table(grid, defence)
        if not rows:
            st.info(f"The shipped grid did not train behind {DEFENCES.label(defence)}.")
        else:
            st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)
        st.caption(
            f"Shipped grid, preset `{grid['config']['experiment']['preset']}` (seeds: how many stand behind a row): "
            "one classifier behind this defence per threat case (no distillation); worst case = adaptive attacks at "
            "the paper's eps 0.01."
        )


def purified_preview(directory: str) -> None:
    """Delivered images, their purified versions at the chosen sigma, and the difference."""
    sigma = st.slider(  # purify's knob: its range, default and help
        "sigma",
        float(SIGMA.low),
        float(SIGMA.high),
        SIGMA.default,
        0.01,
        key="sigma",
        bind="query-params",
        help=SIGMA.help,
    )
    with guard("the purified images"):
        preview = purify_preview(directory, sigma)
        st.caption(
            f"Clean-looking delivered images, their purified versions and the difference (amplified around grey): "
            f"purify changes them by {preview['mean_change_levels']:.1f} grey levels on average."
        )
        for title, images in (("delivered", preview["images"]), ("purified", preview["purified"])):
            columns = st.columns(8)
            for column, image in zip(columns, images):
                column.image(enlarged(image), caption=title, width="stretch", output_format="PNG")
        columns = st.columns(8)
        for column, image in zip(columns, preview["amplified"]):
            column.image(enlarged(image), caption="difference", width="stretch", output_format="PNG")
