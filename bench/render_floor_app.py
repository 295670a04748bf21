"""The first-render benchmark's floor: the dashboard's page layout with no queries and a few points per chart.

``bench/dashboard_render.py`` serves this script with the dashboard's own Streamlit command and times it in
headless Chromium exactly as it times the dashboard. What it measures is what Streamlit, the browser and
Vega-Lite take to show a page of this shape (JavaScript loaded and compiled, session opened, widgets, KPIs,
tables and four charts drawn) before any data is read: no dashboard render can be faster. The elements and
chart specs are the app's own (``dashboards/streamlit/data.py``); only the data is tiny and made here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from bench.dashboard_render import FLOOR_POINTS as POINTS
from dashboards.streamlit import data


def main() -> None:
    st.set_page_config(page_title="machinewatch", page_icon="🌡️", layout="wide", initial_sidebar_state="expanded")
    st.title("machinewatch")
    side = st.sidebar
    side.header("Filters")
    for label in ("Time range", "Window", "Region", "Site", "Metric"):
        side.selectbox(label, ["all", "a", "b"])
    side.text_input("Device prefix")
    side.multiselect("Devices", ["d-0", "d-1"])
    side.select_slider("Refresh", options=["off", "5 s", "10 s"], value="off")

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = pd.DataFrame({"_time": [t0 + timedelta(seconds=10 * i) for i in range(POINTS)] * 2,
                         "series": ["a"] * POINTS + ["b"] * POINTS,
                         "value": [1.0 + (i % 3) / 2 for i in range(2 * POINTS)]})
    cols = st.columns(5)
    for col, label in zip(cols, ("Avg temperature", "Avg CPU", "Power", "Events/s (last minute)",
                                 "Devices in alarm"), strict=True):
        col.metric(label, "1.0")

    left, right = st.columns(2)
    for column, title in ((left, "per device"), (right, "per region")):
        with column:
            st.subheader(title)
            st.vega_lite_chart(rows, data.line_spec("_time", "value", "series", 300), width="stretch")
    left, right = st.columns(2)
    with left:
        st.subheader("histogram (devices)")
        hist = pd.DataFrame({"bin_start": [20.0, 21.0, 22.0], "bin_end": [21.0, 22.0, 23.0], "devices": [1, 3, 2]})
        st.altair_chart(data.histogram_chart(hist, "temperature"), width="stretch")
    with right:
        st.subheader("Hottest devices")
        st.table(pd.DataFrame({"device_id": ["d-0", "d-1"], "peak_avg": [1.0, 2.0]}).set_index("device_id"))
    st.subheader("Alerts")
    st.table(pd.DataFrame({"device_id": ["d-0"], "state": ["opened"]}).set_index("device_id"))
    left, right = st.columns(2)
    with left:
        st.subheader("Data volume")
        st.table(pd.DataFrame({"source": ["s"], "readings": [6]}).set_index("source"))
    with right:
        st.subheader("Events/s per source")
        st.vega_lite_chart(rows.rename(columns={"series": "source", "value": "per_second"}),
                           data.line_spec("_time", "per_second", "source", 240), width="stretch")


main()
