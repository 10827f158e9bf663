"""Streamlit entry point: `streamlit run app.py` (or `make app`). Pages live in pages/, computing in core/."""
import streamlit as st

from ui.common import sidebar

st.set_page_config(page_title="DAE + defensive distillation, measured", page_icon="🛑", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/poison.py", title="Poison", icon="☣️"),
    st.Page("pages/autoencoder.py", title="Autoencoder", icon="🧽"),
    st.Page("pages/threshold.py", title="Threshold", icon="🎚️"),
    st.Page("pages/distillation.py", title="Distillation", icon="🌡️"),
    st.Page("pages/your_images.py", title="Your images", icon="🖼️"),
]

page = st.navigation(PAGES)
sidebar()
page.run()
