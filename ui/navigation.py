"""The first statement of every page: a deep link on a fresh server goes through app.py's navigation. Imports only
Streamlit, so it runs before a page loads the engine (PyTorch: 7-40 s on a cold server)."""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def ensure_navigation() -> None:
    """Make a deep link (/threshold) on a fresh server go through app.py's st.navigation.

    Streamlit runs a pages/ file directly (its legacy multipage mode) until some session has called
    st.navigation; the first visitor of a deep link would then miss the shared sidebar. Switching the
    flag and rerunning sends that run through app.py, which picks the same page from the URL. Called before the
    page's other imports: called after them, the visitor saw a blank page under the pages' file names
    (app, autoencoder, ...) for the seconds the engine took to load.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
