"""The dashboard's Pipeline page (Streamlit finds it here): pipeline health, from dashboards/streamlit/pipeline.py."""

from __future__ import annotations

import streamlit as st

from dashboards.streamlit import pipeline

st.set_page_config(page_title="machinewatch · pipeline", page_icon="🩺", layout="wide")
pipeline.render()
