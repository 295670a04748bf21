"""The machinewatch Streamlit dashboard: live KPIs, charts, histogram and alerts from InfluxDB.

Run it with ``machinewatch dashboard``. It reads only pre-aggregated data (window aggregates, alerts,
late-event counts) through the Flux library, with InfluxDB's read-only token. The live part is a
fragment that re-runs on its own timer, so the sidebar and the rest of the page are not rerun.
Query parameters preset the filters: ``range``, ``device_prefix``, ``region``, ``metric``, ``refresh``, e.g.
``?range=24h&region=eu-west&refresh=off``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from dashboards.streamlit import data
from machinewatch import playback
from machinewatch.config import Settings, load_settings
from machinewatch.query import QueryError

RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6),
          "24h": timedelta(hours=24), "7d": timedelta(days=7)}
REFRESH = {"off": 0, "2 s": 2, "5 s": 5, "10 s": 10, "30 s": 30, "60 s": 60}


@st.cache_resource
def _settings() -> Settings:
    return load_settings()


@st.cache_resource
def _dashboard() -> data.Dashboard:
    return data.Dashboard.from_settings(_settings())  # each query waits at most MW_DASHBOARD_TIMEOUT_S


def _param(name: str, default: str) -> str:
    value = st.query_params.get(name)
    return value if isinstance(value, str) and value else default


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def _sidebar(dash: data.Dashboard) -> tuple[data.Filters, int, pd.DataFrame]:
    """The filters chosen, the refresh period (0 = off) and the filter choices read for them."""
    side = st.sidebar
    side.header("Filters")
    range_key = side.selectbox("Time range", list(RANGES), index=list(RANGES).index(_param("range", "1h")))
    prefix = side.text_input("Device id prefix", value=_param("device_prefix", ""))
    window = side.selectbox("Window", ["10s", "30s@10s"], index=0,
                            help="10s tumbling windows, or 30 s windows sliding every 10 s")
    base = data.last(RANGES[range_key], device_prefix=prefix, window=window)
    choices = dash.choices(base)
    if choices.empty:
        return base, 0, choices
    regions = ["", *sorted(choices["region"].dropna().unique())]
    region = side.selectbox("Region", regions, format_func=lambda v: v or "all regions",
                            index=regions.index(_param("region", "")) if _param("region", "") in regions else 0)
    in_region = choices[choices["region"] == region] if region else choices
    site = side.selectbox("Site", ["", *sorted(in_region["site"].dropna().unique())],
                          format_func=lambda v: v or "all sites")
    in_site = in_region[in_region["site"] == site] if site else in_region
    metrics = sorted(in_site["metric"].unique())
    default_metric = _param("metric", data.TEMPERATURE)
    metric = side.selectbox("Metric (charts)", metrics,
                            index=metrics.index(default_metric) if default_metric in metrics else 0)
    devices = side.multiselect("Devices (charts; none = the top ones)",
                               sorted(in_site[in_site["metric"] == metric]["device_id"].unique()),
                               max_selections=20)
    refresh_label = side.select_slider("Refresh every", list(REFRESH), value=_param("refresh", "10 s"))
    _playback_control(side)
    filters = data.Filters(start=base.start, stop=base.stop, region=region, site=site, device_prefix=prefix,
                           devices=tuple(devices), metric=metric, window=window)
    return filters, REFRESH[refresh_label], choices


def _playback_control(side: st.delta_generator.DeltaGenerator) -> None:
    state_dir = _settings().state_dir
    status = playback.running_replay(state_dir)
    if status is None:
        return
    side.subheader("Playback")
    speeds = list(playback.SPEEDS)
    current = min(speeds, key=lambda s: abs(s - status.speed))
    speed = side.select_slider(f"Replay speed ({status.source})", speeds, value=current,
                               format_func=lambda s: f"{s:g}×")
    if speed != status.speed:
        playback.request_speed(state_dir, speed)


def _kpis(dash: data.Dashboard, f: data.Filters, active: pd.DataFrame) -> None:
    k = dash.kpis(f)
    per_device = data.alerts_by_device(active)
    cols = st.columns(5)
    cols[0].metric("Avg temperature", _fmt(k.avg_temperature, 1, " °C"), help=f"{k.temperature_devices} devices")
    cols[1].metric("Avg CPU", _fmt(k.avg_cpu, 1, " %"), help=f"{k.cpu_devices} devices")
    cols[2].metric("Power", _fmt(k.power_kw, 2, " kW"), help=f"latest window of {k.power_devices} devices")
    cols[3].metric("Events/s (last minute)", _fmt(k.events_per_s, 1),
                   help="readings per second in the newest minute of data, from the 10 s windows' counts "
                        "(over 6 h and more, the fleet roll-ups' newest whole minute)")
    cols[4].metric("Devices in alarm", str(len(per_device)), help="devices with an active alert")
    if len(active):
        worst = ", ".join(f"{d} ({s})" for d, s in zip(per_device["device_id"], per_device["worst"], strict=True))
        st.caption(f"{len(active)} active alerts on {len(per_device)} devices: {worst}")


def _charts(dash: data.Dashboard, f: data.Filters) -> None:
    left, right = st.columns(2)
    devices = dash.chart_devices(f)
    with left:
        st.subheader(f"{f.metric} per device")
        if devices:
            rows = dash.series(f, "device_id", devices)
            st.vega_lite_chart(rows[["_time", "series", "value"]] if not rows.empty else rows,
                               data.line_spec("_time", "value", "series", 300), width="stretch")
            st.caption(f"window averages of {len(devices)} devices" +
                       ("" if f.devices else f" (highest {f.metric} first)"))
    with right:
        st.subheader(f"{f.metric} per region")
        rows = dash.series(f, "region")
        st.vega_lite_chart(rows[["_time", "series", "value"]] if not rows.empty else rows,
                           data.line_spec("_time", "value", "series", 300), width="stretch")

    left, right = st.columns(2)
    with left:
        st.subheader(f"{f.metric} histogram (devices)")
        hist = dash.histogram(f)
        if hist.empty:
            st.info("no devices in this range")
        else:
            st.altair_chart(data.histogram_chart(hist, f.metric), width="stretch")
    with right:
        st.subheader("Hottest devices")
        hottest = dash.hottest(f, n=data.HOTTEST, metric=f.metric)
        if hottest.empty:
            st.info("no devices in this range")
        else:
            st.table(hottest.assign(peak_avg=hottest["peak_avg"].round(2))[
                ["device_id", "region", "site", "peak_avg", "unit"]].set_index("device_id"))
            window = dash.summary_source(f)["window"]
            st.caption(f"highest {window} average in the range" + (" (roll-up)" if window in ("1m", "1h") else ""))


def _alerts(dash: data.Dashboard, f: data.Filters, now: datetime) -> pd.DataFrame:
    active, pending, resolved = data.split_alerts(dash.alert_states(f, now), now)
    st.subheader("Alerts")
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Active** ({len(active)})")
        if active.empty:
            st.success("no active alerts")
        else:
            st.table(pd.DataFrame({
                "device": active["device_id"], "severity": active["severity"], "state": active["state"],
                "kind": active["kind"], "open for": active["open_for_s"].map(data.humanize_seconds),
            }).set_index("device"))
        st.markdown(f"**Pending** ({len(pending)})")
        if pending.empty:
            st.caption("nothing about to fire")
        else:
            st.table(pd.DataFrame({
                "device": pending["device_id"], "severity": pending["severity"], "kind": pending["kind"],
                "fires in": pending["fires_in_s"].map(data.humanize_seconds),
            }).set_index("device"))
    with right:
        st.markdown("**Time in alarm per device**")
        alarm = dash.time_in_alarm(f, now)
        if alarm.empty:
            st.caption("no device in alarm in this range")
        else:
            st.table(pd.DataFrame({"device": alarm["device_id"], "alerts": alarm["alerts"],
                                   "in alarm": alarm["seconds"].map(data.humanize_seconds)}).set_index("device"))
        st.markdown(f"**Resolved** ({len(resolved)})")
        if not resolved.empty:
            st.table(pd.DataFrame({
                "device": resolved["device_id"], "severity": resolved["severity"],
                "lasted": resolved["duration_s"].map(data.humanize_seconds),
                "resolved at": resolved["last_change"].dt.strftime("%Y-%m-%d %H:%M:%S UTC"),
            }).head(20).set_index("device"))
    threshold = dash.threshold_alerts(f)
    if not threshold.empty:
        st.markdown("**Threshold rules that fired**")
        st.table(threshold.assign(last=threshold["last"].dt.strftime("%H:%M:%S"))[
            ["device_id", "severity", "label", "windows", "last"]].head(20).set_index("device_id"))
    return active


def _volume(dash: data.Dashboard, f: data.Filters) -> None:
    st.subheader("Data volume per source")
    volume = dash.data_volume(f)
    late = dash.late_events(f)
    left, right = st.columns(2)
    with left:
        if volume.empty:
            st.info("no readings in this range")
        else:
            table = volume[["source", "devices", "readings"]].copy()
            table["late"] = table["source"].map(late.set_index("source")["late"] if not late.empty else {})
            table["late"] = table["late"].fillna(0).astype(int)
            st.table(table.set_index("source"))
    with right:
        rate = dash.events_per_source(f)
        if not rate.empty:
            st.vega_lite_chart(rate[["_time", "source", "per_second"]],
                               data.line_spec("_time", "per_second", "source", 240), width="stretch")
            st.caption("readings per second, from the window counts")


def main() -> None:
    st.set_page_config(page_title="machinewatch", page_icon="🌡️", layout="wide", initial_sidebar_state="expanded")
    st.title("machinewatch")
    try:
        dash = _dashboard()
        filters, refresh_s, choices = _sidebar(dash)
    except data.InfluxUnavailable as exc:
        st.error(f"{exc}. Is the stack running? Try `machinewatch stack status`.")
        st.stop()
    except RuntimeError as exc:  # no read token yet, or InfluxDB refused the query
        st.error(str(exc))
        st.stop()

    # The sidebar's choices serve this script run's render; a refresh (the fragment alone) reads them again.
    fresh = [choices]

    @st.fragment(run_every=refresh_s or None)
    def live() -> None:
        now = datetime.now(tz=UTC)
        f = data.last(filters.stop - filters.start - timedelta(minutes=1), now=now, region=filters.region,
                      site=filters.site, device_prefix=filters.device_prefix, devices=filters.devices,
                      metric=filters.metric, window=filters.window)
        try:
            with dash.render(f, now, choices=fresh.pop() if fresh else None) as page:
                _page(page, f, now)
        except data.InfluxUnavailable as exc:
            st.error(str(exc))
        except QueryError as exc:
            st.error(str(exc))

    live()


def _page(dash: data.Dashboard, f: data.Filters, now: datetime) -> None:
    if dash.choices(f).empty:
        st.info("InfluxDB has no window aggregates for these filters in this range yet. "
                "Start the pipeline (`machinewatch demo`) or widen the time range.")
        return
    kpi_slot = st.container()
    _charts(dash, f)
    active = _alerts(dash, f, now)
    with kpi_slot:
        _kpis(dash, f, active)
    _volume(dash, f)
    st.caption(f"updated {now:%H:%M:%S} UTC · {f.start:%Y-%m-%d %H:%M} – {now:%H:%M} UTC · "
               f"window {f.window}")


main()
