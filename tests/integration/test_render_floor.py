"""The first-render benchmark's floor app renders in headless Chromium as the benchmark times it.

``bench/dashboard_render.py --floor`` serves ``bench/render_floor_app.py`` with the dashboard's own Streamlit
command; if that app broke (an error box, a chart fewer than the detector waits for), the floor row would
be missing from every benchmark run. No stack is needed: the app reads nothing.
"""

from __future__ import annotations

from bench import dashboard_render


def test_the_floor_app_renders_every_chart_cold_and_warm() -> None:
    r = dashboard_render.measure_floor(runs=1, timeout=90)
    for kind in ("cold", "warm"):
        assert r[kind]["errors"] == 0, r[kind]["error"]
        assert len(r[kind]["ms"]) == 1
        # the script ran, then the charts drew: the order the detector records
        assert 0 < r[kind + "_script_started"]["median_ms"] <= r[kind + "_script_done"]["median_ms"]
        assert r[kind + "_script_done"]["median_ms"] <= r[kind]["median_ms"]
