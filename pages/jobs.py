"""Jobs: every background job of this app's cache (runs, sweeps, points, scoring), queued, running and finished."""

from ui.navigation import ensure_navigation

ensure_navigation()  # first: a deep link on a fresh server goes through app.py before the engine loads

import streamlit as st

from core.jobs import SLOTS
from ui.jobs import jobs_panel, jobs_root
from ui.widgets import guard

st.title("Background jobs")
st.caption(
    "Each job is a `python -m core` command run as its own process: it goes on when you leave the page, close the "
    f"browser or restart the app. {SLOTS} job trains at a time; the others wait in the queue. Cancelling ends its "
    "process and keeps what it finished (the model cache, every measured point); *Resume* runs it again from there."
)
with guard("the job list"):
    jobs_panel(key="jobs-page", limit=50)
    if not any(jobs_root().glob("*/job.json")):
        st.info("No background job yet: *Run the experiment* on the Overview, or train a point on the Threshold page.")
