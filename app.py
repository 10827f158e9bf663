"""Streamlit entry point: `streamlit run app.py` (or `make app`). Pages live in pages/, computing in core/."""

import sys

import streamlit as st

st.set_page_config(page_title="DAE + defensive distillation, measured", page_icon=":material/traffic:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/poison.py", title="Poison", icon=":material/coronavirus:"),
    st.Page("pages/autoencoder.py", title="Autoencoder", icon=":material/auto_fix_high:"),
    st.Page("pages/threshold.py", title="Threshold", icon=":material/tune:"),
    st.Page("pages/distillation.py", title="Distillation", icon=":material/thermostat:"),
    st.Page("pages/detectors.py", title="Detectors", icon=":material/troubleshoot:"),
    st.Page("pages/your_images.py", title="Your images", icon=":material/image:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/work_history:"),
]

# the sidebar first: a cold start (the import below) shows the pages by their titles, never their file names
page = st.navigation(PAGES)

if "ui.data" not in sys.modules:
    # The first visit after a server start imports the engine (PyTorch, alibi-detect: 7 s on a warm disk, 40 s
    # measured on a cold one): the page says so at once instead of staying blank (issue 34).
    with st.spinner(
        "Starting the engine: loading PyTorch and alibi-detect (first visit after a server start)...", show_time=True
    ):
        import ui.data  # noqa: F401

from ui.links import open_link, report_link  # noqa: E402
from ui.widgets import sidebar  # noqa: E402

open_link(page.url_path)
sidebar()
try:
    page.run()
except BaseException as interrupted:
    if type(interrupted).__name__ == "StopException":  # the page ended early on purpose: it still reports the link
        report_link()
    raise  # a rerun reports on the next run
report_link()
