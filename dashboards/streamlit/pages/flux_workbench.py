"""The Flux workbench page: a library query or your own Flux, run with the read-only token; table, chart, CSV.

The presets are the files of ``dashboards/flux/`` with their documented inputs as form fields (injected
as Flux options). Query parameters preset it, e.g. ``?preset=hottest_devices&devicePrefix=rack-&run=1``
(``run=1`` runs once on load).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from dashboards.streamlit import workbench
from machinewatch.config import Settings, load_settings
from machinewatch.query import QueryError, run_flux

KIND_HELP = {
    "string": "a string; \"\" (empty) turns a filter off",
    "time": "now, a duration from now (-1h, +1m) or an ISO time (2026-01-31T12:00:00Z, UTC)",
    "duration": "a Flux duration: 10s, 5m, 1h30m, 7d",
    "int": "a whole number",
    "float": "a number",
    "strings": "comma-separated strings; empty = none",
}


@st.cache_resource
def _settings() -> Settings:
    return load_settings()


def _param(name: str, default: str) -> str:
    value = st.query_params.get(name)
    return value if isinstance(value, str) and value else default


def _form(preset: workbench.Preset) -> tuple[dict[str, object], str, bool]:
    """The preset's inputs and its text, editable; (values as given, Flux text, run now)."""
    given: dict[str, object] = {}
    with st.form(f"workbench-{preset.name}"):
        cols = st.columns(4)
        for i, item in enumerate(preset.inputs):
            col, key, initial = cols[i % 4], f"{preset.name}:{item.name}", _param(item.name, item.default)
            label = f"{item.name} ({item.kind})"
            if item.kind in ("int", "float"):
                cast = int if item.kind == "int" else float
                try:
                    number = cast(initial or 0)
                except ValueError:
                    number = cast(item.default or 0)
                given[item.name] = col.number_input(label, value=number, key=key, help=KIND_HELP[item.kind])
            else:
                given[item.name] = col.text_input(label, value=initial, key=key, help=KIND_HELP[item.kind])
        flux = st.text_area("Flux", value=preset.text, height=420, key=f"{preset.name}:flux",
                            help="edit freely; the inputs above are Flux options of the same names")
        submitted = st.form_submit_button("Run query", type="primary")
    return given, flux or "", submitted


def _run(preset: workbench.Preset, given: dict[str, object], flux: str) -> None:
    """Runs the query and keeps the outcome in the session, so the result outlives reruns (e.g. a download)."""
    try:
        values = workbench.option_values(preset.inputs, given, datetime.now(tz=UTC))
    except workbench.InputError as exc:
        st.session_state["workbench"] = {"preset": preset.name, "input_error": str(exc)}
        return
    started = time.perf_counter()
    try:
        frame = run_flux(_settings(), flux, values)
    except QueryError as exc:
        st.session_state["workbench"] = {"preset": preset.name, "flux": flux, "error": exc,
                                         "seconds": time.perf_counter() - started}
        return
    except RuntimeError as exc:  # no read token yet: the settings' message says where it is looked for
        st.session_state["workbench"] = {"preset": preset.name, "flux": flux, "error": QueryError(str(exc)),
                                         "seconds": time.perf_counter() - started}
        return
    st.session_state["workbench"] = {"preset": preset.name, "frame": frame,
                                     "seconds": time.perf_counter() - started}


def _show_error(exc: QueryError, flux: str, seconds: float) -> None:
    errors = workbench.flux_errors(exc.server_message or str(exc))
    st.warning(f"InfluxDB did not run the query ({seconds * 1000:,.0f} ms): {len(errors)} error(s)")
    for err in errors:
        where = err.where()
        st.error(f"**{where}**: {err.message}" if where else err.message)
        shown = workbench.excerpt(flux, err)
        if shown:
            st.code(shown, language=None)
    if not exc.server_message:  # not the server's words: a transport problem, say it whole
        st.caption(str(exc))


def _show_result(name: str, state: dict[str, object]) -> None:
    frame = state["frame"]
    seconds = float(state["seconds"])  # type: ignore[arg-type]
    assert isinstance(frame, pd.DataFrame)
    st.caption(f"{len(frame):,} rows · {len(frame.columns)} columns · query time {seconds * 1000:,.0f} ms")
    if frame.empty:
        st.info("the query ran and returned no rows")
        return
    st.download_button("Download CSV", workbench.to_csv(frame), file_name=f"{name}.csv", mime="text/csv",
                       on_click="ignore")
    choice = workbench.choose_chart(frame)
    if choice is not None:
        st.altair_chart(workbench.chart(frame, choice), width="stretch")
        by = f", one {'line' if choice.mark == 'line' else 'bar'} per {choice.color}" if choice.color else ""
        st.caption(f"chart: {choice.y} by {choice.x}{by}"
                   + (f" (first {workbench.CHART_ROWS:,} rows)" if len(frame) > workbench.CHART_ROWS else ""))
    st.dataframe(frame, hide_index=True)


def main() -> None:
    st.set_page_config(page_title="Flux workbench · machinewatch", page_icon="🔎", layout="wide")
    st.title("Flux workbench")
    st.caption("Run a query of the library (dashboards/flux/) or your own Flux against InfluxDB, "
               "with the dashboards' read-only token. Times are UTC.")
    library = workbench.presets()
    names = list(library)
    wanted = _param("preset", "hottest_devices")
    name = st.selectbox("Query", names, index=names.index(wanted) if wanted in names else 0,
                        format_func=lambda n: f"{n} — {library[n].title}")
    preset = library[name]
    # the header as written: one line each (two trailing spaces are a Markdown line break)
    st.markdown("\n".join(f"> {line}  " for line in preset.doc.splitlines()))
    given, flux, submitted = _form(preset)
    auto = _param("run", "") == "1" and not st.session_state.get("workbench_auto_ran")
    if submitted or auto:
        st.session_state["workbench_auto_ran"] = True
        with st.spinner("running…"):
            _run(preset, given, flux)
    state = st.session_state.get("workbench")
    if not isinstance(state, dict) or state.get("preset") != name:
        return
    if "input_error" in state:
        st.error(str(state["input_error"]))
    elif "error" in state:
        _show_error(state["error"], str(state["flux"]), float(state["seconds"]))
    else:
        _show_result(name, state)


main()
