"""The dashboards against the real InfluxDB: every Flux file, the templates API, the Streamlit app in Chromium.

One module-scoped data set with known numbers is written with the pipeline's write token through the
writer's own point converters (so it has the production shape), under a device prefix unique to the run.
Expectations are computed here from that data set, not from the queries.
"""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from dashboards.streamlit import data, headless
from machinewatch import names, rollups
from machinewatch.config import Settings
from machinewatch.stack import Stack
from sinks.influxdb_writer import alert_line, late_line, window_line

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
WINDOWS = 30  # 10 s tumbling windows: 5 minutes of data
# device suffix -> source, region, site, {metric: (base avg, unit)}
DEVICES: dict[str, tuple[str, str, str, dict[str, tuple[float, str]]]] = {
    "in-1": ("dc-india", "in", "dc-mumbai", {"temperature": (41.0, "°C"), "load": (40.0, "%"), "power": (0.30, "kW")}),
    "in-2": ("dc-india", "in", "dc-mumbai", {"temperature": (55.0, "°C"), "load": (60.0, "%"), "power": (0.50, "kW")}),
    "de-1": ("dc-germany", "de", "dc-frankfurt",
             {"temperature": (72.0, "°C"), "load": (80.0, "%"), "power": (0.25, "kW")}),
    "srv-1": ("servers-course", "lab", "servers", {"cpu_pct": (90.0, "%")}),
}
COUNT = 10  # readings per window and metric


def avg_at(base: float, k: int) -> float:
    return round(base * (1 + 0.01 * (k % 5)), 6)


@dataclass
class Known:
    prefix: str
    now: datetime
    last_end: datetime
    windows: pd.DataFrame  # tumbling rows written: device_id, source, region, site, metric, unit, k, end, avg, count
    alerts: dict[str, dict[str, Any]]


def _window_docs(prefix: str, last_end_ms: int) -> list[dict[str, Any]]:
    docs = []
    for suffix, (source, region, site, metrics) in DEVICES.items():
        for metric, (base, unit) in metrics.items():
            for k in range(WINDOWS):
                end_ms = last_end_ms - (WINDOWS - 1 - k) * 10_000
                avg = avg_at(base, k)
                docs.append({"device_id": f"{prefix}-{suffix}", "metric": metric, "source": source, "region": region,
                             "site": site, "unit": unit, "window_ms": 10_000, "window_end_ms": end_ms,
                             "avg_value": avg, "min_value": avg - 2, "max_value": avg + 2, "count": COUNT, "k": k})
    # A sliding window with an absurd value: every query that asks for window "10s" must ignore it.
    docs.append({"device_id": f"{prefix}-in-1", "metric": "temperature", "source": "dc-india", "region": "in",
                 "site": "dc-mumbai", "unit": "°C", "window_ms": 30_000, "slide_ms": 10_000,
                 "window_end_ms": last_end_ms, "avg_value": 999.0, "min_value": 999.0, "max_value": 999.0,
                 "count": 3 * COUNT, "k": -1})
    return docs


def _alert_docs(prefix: str, now_ms: int) -> dict[str, list[dict[str, Any]]]:
    minute = 60_000
    base = {"kind": "sustained_overheat", "region": "in", "site": "dc-mumbai"}
    a1, a2, a3, a4 = (f"{prefix}-a{i}" for i in range(1, 5))
    return {
        # opened 20 min ago, escalated 10 min ago: active, critical
        a1: [{**base, "device_id": f"{prefix}-in-1", "alert_id": a1, "state": "opened", "severity": "warning",
              "started_ms": now_ms - 20 * minute, "ts": now_ms - 20 * minute, "avg": 78.0, "threshold": 75.0},
             {**base, "device_id": f"{prefix}-in-1", "alert_id": a1, "state": "escalated", "severity": "critical",
              "started_ms": now_ms - 20 * minute, "ts": now_ms - 10 * minute, "peak": 88.0, "threshold": 75.0}],
        # opened 40 min ago, resolved after 10 min
        a2: [{**base, "device_id": f"{prefix}-de-1", "alert_id": a2, "state": "opened", "severity": "warning",
              "started_ms": now_ms - 40 * minute, "ts": now_ms - 40 * minute, "region": "de"},
             {**base, "device_id": f"{prefix}-de-1", "alert_id": a2, "state": "resolved", "severity": "warning",
              "started_ms": now_ms - 40 * minute, "duration_ms": 10 * minute, "ts": now_ms - 30 * minute,
              "region": "de"}],
        # pending since a minute ago, fires in 4 minutes
        a3: [{**base, "device_id": f"{prefix}-in-2", "alert_id": a3, "state": "pending", "severity": "warning",
              "started_ms": now_ms - minute, "fires_at_ms": now_ms + 4 * minute, "ts": now_ms - minute}],
        # opened 5 min ago, the device went silent 2 min ago: still active
        a4: [{**base, "device_id": f"{prefix}-srv-1", "alert_id": a4, "state": "opened", "severity": "warning",
              "started_ms": now_ms - 5 * minute, "ts": now_ms - 5 * minute, "region": "lab"},
             {**base, "device_id": f"{prefix}-srv-1", "alert_id": a4, "state": "silent", "severity": "warning",
              "started_ms": now_ms - 5 * minute, "ts": now_ms - 2 * minute, "region": "lab"}],
    }


@pytest.fixture(scope="module")
def known(stack: Stack, settings: Settings) -> Known:
    prefix = f"dash-{uuid.uuid4().hex[:6]}"
    now = datetime.now(tz=UTC).replace(microsecond=0)
    now_ms = int(now.timestamp() * 1000)
    last_end_ms = (now_ms // 10_000) * 10_000 - 60_000
    docs = _window_docs(prefix, last_end_ms)
    alerts = _alert_docs(prefix, now_ms)
    thresholds = [
        {"kind": "threshold", "device_id": f"{prefix}-srv-1", "rule_group": "server-cpu-mem", "severity": "critical",
         "label": "High CPU + Memory stress", "region": "lab", "site": "servers", "alert_id": f"{prefix}-t{i}",
         "values": {"cpu": 90.0, "mem": 80.0}, "window_start_ms": last_end_ms - 30_000 - i * 10_000,
         "window_end_ms": last_end_ms - i * 10_000}
        for i in range(3)
    ]
    late = [{"source": "dc-india", "device_id": f"{prefix}-in-1", "metric": "temperature",
             "ts": last_end_ms - 100_000 + i * 1000, "event_id": f"{prefix}-late-{i}", "watermark": "x"}
            for i in range(3)]
    late.append({"source": "dc-germany", "device_id": f"{prefix}-de-1", "metric": "temperature",
                 "ts": last_end_ms - 50_000, "event_id": f"{prefix}-late-de", "watermark": "x"})
    with InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        # The writer's own encoders (ms timestamps).
        write.write(names.BUCKET_AGGREGATES, record=[window_line(d) for d in docs] + [late_line(d) for d in late],
                    write_precision=WritePrecision.MS)
        write.write(names.BUCKET_ALERTS, record=[alert_line(d) for docs_ in alerts.values() for d in docs_]
                    + [alert_line(d) for d in thresholds], write_precision=WritePrecision.MS)
    frame = pd.DataFrame([d for d in docs if d["k"] >= 0]).rename(columns={"avg_value": "avg"})
    frame["end"] = pd.to_datetime(frame["window_end_ms"], unit="ms", utc=True)
    return Known(prefix, now, datetime.fromtimestamp(last_end_ms / 1000, tz=UTC), frame,
                 {k: v[-1] for k, v in alerts.items()})


@pytest.fixture(scope="module")
def dash(settings: Settings) -> Iterator[data.Dashboard]:
    d = data.Dashboard.from_settings(settings)
    yield d
    d.close()


def _filters(known: Known, **kwargs: Any) -> data.Filters:
    return data.Filters(start=known.now - timedelta(hours=1), stop=known.now + timedelta(minutes=1),
                        device_prefix=known.prefix, **kwargs)


# --- the Flux library, file by file --------------------------------------------------------------


def test_every_flux_file_has_a_header_and_is_exercised() -> None:
    files = {p.stem for p in data.library_files()}
    tested = {name.removeprefix("test_flux_") for name in globals() if name.startswith("test_flux_")}
    assert files == tested, f"untested Flux files: {files - tested}; tests without file: {tested - files}"
    for path in data.library_files():
        lines = path.read_text().splitlines()
        assert lines[0].startswith("// "), f"{path.name}: no header comment saying what it answers"
        assert any(line.startswith("// Inputs") for line in lines), f"{path.name}: header names no inputs"


def test_flux_window_aggregates(known: Known, dash: data.Dashboard) -> None:
    f = _filters(known)
    frame = dash.run("window_aggregates", {"bucket": names.BUCKET_AGGREGATES, "start": f.start, "stop": f.stop,
                                           "devicePrefix": known.prefix, "site": "", "window": "10s"})
    assert len(frame) == len(known.windows)
    assert frame["avg"].max() < 999
    assert int(frame["count"].sum()) == int(known.windows["count"].sum())


def test_flux_hottest_devices(known: Known, dash: data.Dashboard) -> None:
    hottest = dash.hottest(_filters(known), n=2)
    temps = known.windows[known.windows.metric == "temperature"].groupby("device_id")["avg"].max()
    expected = temps.sort_values(ascending=False).head(2)
    assert list(hottest["device_id"]) == list(expected.index)
    assert hottest["peak_avg"].tolist() == pytest.approx(expected.tolist())
    assert hottest.loc[0, "region"] == "de"


def test_flux_fleet_summary(known: Known, dash: data.Dashboard) -> None:
    summary = dash.fleet_summary(_filters(known)).set_index("metric")
    device_means = known.windows.groupby(["metric", "device_id"])["avg"].mean()
    for metric in ("temperature", "load", "cpu_pct", "power"):
        expected = device_means[metric]
        assert summary.loc[metric, "devices"] == len(expected)
        assert summary.loc[metric, "mean"] == pytest.approx(expected.mean())


def test_flux_latest_per_device(known: Known, dash: data.Dashboard) -> None:
    latest = dash.latest(_filters(known), ("power",))
    last = known.windows[(known.windows.metric == "power") & (known.windows.k == WINDOWS - 1)]
    assert sorted(latest["device_id"]) == sorted(last["device_id"])
    assert latest["value"].sum() == pytest.approx(last["avg"].sum())
    assert set(pd.to_datetime(latest["at"], utc=True)) == {known.last_end}
    everything = dash.latest(_filters(known), ())
    assert len(everything) == known.windows.groupby(["device_id", "metric"]).ngroups


def test_flux_chart_series(known: Known, dash: data.Dashboard) -> None:
    f = _filters(known, metric="temperature")
    by_region = dash.series(f, "region")
    assert set(by_region["series"]) == {"in", "de"}
    assert len(by_region) <= data.MAX_POINTS
    one = dash.series(f, "device_id", (f"{known.prefix}-de-1",))
    assert set(one["series"]) == {f"{known.prefix}-de-1"}
    every = data.chart_every(f.start, f.stop, series=1)
    assert every == timedelta(seconds=10)  # one series over 61 minutes fits at full resolution
    rows = known.windows[(known.windows.device_id == f"{known.prefix}-de-1") & (known.windows.metric == "temperature")]
    assert sorted(one["value"].round(6)) == sorted(rows["avg"].round(6))


def test_flux_events_per_source(known: Known, dash: data.Dashboard) -> None:
    f = _filters(known)
    rate = dash.events_per_source(f)
    readings = known.windows.groupby("source")["count"].sum()
    got = rate.groupby("source")["readings"].sum()
    assert got.to_dict() == readings.to_dict()
    every_s = data.chart_every(f.start, f.stop, series=4).total_seconds()
    assert (rate["per_second"] * every_s).round(6).tolist() == rate["readings"].astype(float).round(6).tolist()
    # Each window in the bucket its end falls in, [b, b + every) stamped b + every (aggregateWindow's buckets).
    step = int(every_s)
    bucket = known.windows["end"].map(lambda t: int(t.timestamp()) // step * step + step)
    want = known.windows.assign(bucket=bucket).groupby(["source", "bucket"])["count"].sum().to_dict()
    got_buckets = {(source, int(t.timestamp())): n
                   for source, t, n in zip(rate["source"], rate["_time"], rate["readings"], strict=True)}
    assert got_buckets == want


@dataclass(frozen=True)
class Fleet:
    region: str
    rows: pd.DataFrame  # time, source, site, devices, avg_sum, count
    filters: data.Filters


@pytest.fixture(scope="module")
def fleet(stack: Stack, settings: Settings) -> Fleet:
    """Seven hours of known fleet rows (rollup_1m, as the window job writes them) in a region of this run alone:
    two sources x two sites, a different number of devices in each row."""
    region = f"fl-{uuid.uuid4().hex[:6]}"
    stop = datetime.now(tz=UTC).replace(second=0, microsecond=0)
    rows = []
    for m in range(7 * 60):
        t = stop - timedelta(minutes=m)
        for i, (source, site) in enumerate((("fa", "s1"), ("fa", "s2"), ("fb", "s1"), ("fb", "s2"))):
            devices = 1 + (m * 7 + i * 3) % 5
            rows.append({"time": t, "source": source, "site": site, "devices": devices,
                         "avg_sum": devices * (20.0 + i + (m % 13) / 4), "count": devices * (50 + m % 11)})
    frame = pd.DataFrame(rows)
    lines = [f"fleet_agg,metric=temperature,region={region},site={r.site},source={r.source},unit=°C,window=1m "
             f"avg_sum={r.avg_sum},count={r.count}i,devices={r.devices}i,max=99,min=1 {int(r.time.timestamp())}"
             for r in frame.itertuples()]
    with InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(names.BUCKET_ROLLUP_1M, record=lines,
                                                          write_precision=WritePrecision.S)
    f = data.Filters(start=stop - timedelta(hours=7), stop=stop + timedelta(minutes=1), region=region)
    return Fleet(region, frame, f)


def _fleet_buckets(fleet: Fleet, series: int) -> tuple[pd.DataFrame, int]:
    """The known rows with the bucket each falls in: [b, b + every) stamped b + every, as aggregateWindow does (the
    last one at the range's stop when that comes first)."""
    step = int(data.chart_every(fleet.filters.start, fleet.filters.stop, series=series, window_s=60).total_seconds())
    rows = fleet.rows[fleet.rows["time"] >= fleet.filters.start]
    stop = int(fleet.filters.stop.timestamp())
    return rows.assign(bucket=rows["time"].map(lambda t: min(int(t.timestamp()) // step * step + step, stop))), step


def test_flux_fleet_series(fleet: Fleet, dash: data.Dashboard) -> None:
    """The per-region (and per-source) chart over a long range reads the fleet rows: in each bucket the mean of
    the device rows they stand for (their averages summed over their number), not a mean of the fleet rows."""
    assert dash.fleet_source(fleet.filters) == (names.BUCKET_ROLLUP_1M, "1m", 60)
    rows, _ = _fleet_buckets(fleet, series=8)
    for by, tag in (("region", None), ("source", "source")):
        got = dash.series(fleet.filters, by)
        sums = rows.assign(series=rows[tag] if tag else fleet.region).groupby(["series", "bucket"])[
            ["avg_sum", "devices"]].sum()
        want = {(s, b): r.avg_sum / r.devices for (s, b), r in sums.iterrows()}
        have = {(s, int(t.timestamp())): v for s, t, v in zip(got["series"], got["_time"], got["value"], strict=True)}
        assert have.keys() == want.keys(), by
        assert [have[k] for k in want] == pytest.approx(list(want.values()), abs=1e-9), by


def test_flux_fleet_mean(fleet: Fleet, dash: data.Dashboard) -> None:
    """The fleet KPIs over a long range read the fleet rows: the devices' averages summed over the device rows, and
    per source and site the most devices in one row."""
    assert dash.fleet_source(fleet.filters) is not None
    for site in ("", "s1"):
        rows = fleet.rows[fleet.rows["site"] == site] if site else fleet.rows
        summary = dash.fleet_summary(replace(fleet.filters, site=site), ("temperature",)).set_index("metric")
        assert summary.loc["temperature", "mean"] == pytest.approx(rows["avg_sum"].sum() / rows["devices"].sum())
        assert summary.loc["temperature", "devices"] == rows.groupby(["source", "site"])["devices"].max().sum()
        assert summary.loc["temperature", "unit"] == "°C"
    params = {"bucket": names.BUCKET_ROLLUP_1M, "window": "1m", "start": fleet.filters.start,
              "stop": fleet.filters.stop, "region": fleet.region, "site": ""}
    assert dash.run("fleet_mean", {**params, "metrics": ["humidity"]}).empty  # only the metrics asked for
    assert dash.run("fleet_mean", {**params, "metrics": []}).equals(dash.fleet_summary(fleet.filters))  # [] = all


def test_flux_fleet_events_per_source(fleet: Fleet, dash: data.Dashboard) -> None:
    """Readings per source per bucket over a long range, from the fleet rows' counts."""
    rows, step = _fleet_buckets(fleet, series=4)
    got = dash.events_per_source(fleet.filters)
    want = rows.groupby(["source", "bucket"])["count"].sum().to_dict()
    have = {(s, int(t.timestamp())): int(n) for s, t, n in zip(got["source"], got["_time"], got["readings"],
                                                               strict=True)}
    assert have == want
    assert got["per_second"].tolist() == pytest.approx((got["readings"] / step).tolist())
    # one site filtered: only its rows
    one = dash.events_per_source(data.Filters(start=fleet.filters.start, stop=fleet.filters.stop,
                                              region=fleet.region, site="s1"))
    assert int(one["readings"].sum()) == int(rows[rows["site"] == "s1"]["count"].sum())


def test_flux_data_volume(known: Known, dash: data.Dashboard) -> None:
    volume = dash.data_volume(_filters(known)).set_index("source")
    w = known.windows
    assert volume["devices"].to_dict() == w.groupby("source")["device_id"].nunique().to_dict()
    assert volume["readings"].to_dict() == w.groupby("source")["count"].sum().to_dict()
    assert volume.loc["dc-india", "readings"] == 2 * 3 * WINDOWS * COUNT  # counted by hand
    # The charts' window choice must not multiply the volume: a 30s@10s window counts a reading 3 times.
    sliding = dash.data_volume(_filters(known, window="30s@10s")).set_index("source")
    assert sliding.to_dict() == volume.to_dict()


def test_flux_ingest_rate(known: Known, fleet: Fleet, dash: data.Dashboard) -> None:
    f = _filters(known)
    params = {**f.common(), "bucket": names.BUCKET_AGGREGATES, "window": data.TUMBLING, "span": data.RATE_SPAN,
              "measurement": names.MEASUREMENT_WINDOW}
    rows = dash.run("ingest_rate", params)
    ends = [known.last_end - timedelta(seconds=10 * k) for k in reversed(range(6))]  # the newest minute
    assert list(pd.to_datetime(rows["_time"], utc=True)) == ends
    per_end = known.windows.groupby("end")["count"].sum()  # the sliding window's count is left out
    assert rows["readings"].tolist() == [per_end[e] for e in ends]
    assert dash.events_rate(f) == pytest.approx(sum(len(m) for *_, m in DEVICES.values()) * COUNT / 10)
    # data that began 25 s before the newest window: three windows over the 30 s they cover
    late_start = data.Filters(start=known.last_end - timedelta(seconds=25), stop=f.stop, device_prefix=known.prefix)
    assert len(dash.run("ingest_rate", {**params, "start": late_start.start})) == 3
    assert dash.events_rate(late_start) == pytest.approx(dash.events_rate(f))
    nobody = data.Filters(start=f.start, stop=f.stop, device_prefix=f"{known.prefix}-nobody")
    assert dash.run("ingest_rate", {**params, "devicePrefix": nobody.device_prefix}).empty
    assert dash.events_rate(nobody) == 0.0
    # Over a long range, the fleet roll-ups' newest minute: its readings over its 60 s (one site's alone, filtered)
    newest = fleet.rows[fleet.rows["time"] == fleet.rows["time"].max()]
    assert dash.events_rate(fleet.filters) == pytest.approx(newest["count"].sum() / 60)
    one_site = replace(fleet.filters, site="s2")
    assert dash.events_rate(one_site) == pytest.approx(newest[newest["site"] == "s2"]["count"].sum() / 60)


def test_flux_late_events_per_source(known: Known, dash: data.Dashboard) -> None:
    late = dash.late_events(_filters(known)).set_index("source")
    assert late["late"].to_dict() == {"dc-india": 3, "dc-germany": 1}
    assert late["devices"].to_dict() == {"dc-india": 1, "dc-germany": 1}


def test_flux_alert_states(known: Known, dash: data.Dashboard) -> None:
    states = dash.alert_states(_filters(known), known.now).set_index("alert_id")
    assert states["state"].to_dict() == {k: v["state"] for k, v in known.alerts.items()}
    active, pending, resolved = data.split_alerts(states.reset_index(), known.now)
    assert sorted(active["alert_id"]) == [f"{known.prefix}-a1", f"{known.prefix}-a4"]
    assert active.loc[0, "severity"] == "critical"  # critical first
    assert active.set_index("alert_id")["open_for_s"].to_dict() == {f"{known.prefix}-a1": 1200.0,
                                                                     f"{known.prefix}-a4": 300.0}
    assert pending["fires_in_s"].tolist() == [240.0]
    assert resolved["duration_s"].tolist() == [600.0]
    assert data.alerts_by_device(active)["device_id"].tolist() == sorted([f"{known.prefix}-in-1",
                                                                           f"{known.prefix}-srv-1"])


def test_flux_time_in_alarm(known: Known, dash: data.Dashboard) -> None:
    alarm = dash.time_in_alarm(_filters(known), known.now).set_index("device_id")
    p = known.prefix
    # a1 open 20 min until now, a2 10 min then resolved, a4 5 min (silent is still in alarm), pending excluded
    assert alarm["seconds"].to_dict() == pytest.approx({f"{p}-in-1": 1200.0, f"{p}-de-1": 600.0, f"{p}-srv-1": 300.0})
    assert list(alarm.index) == [f"{p}-in-1", f"{p}-de-1", f"{p}-srv-1"]
    # clipped to the range: over the last 15 minutes a1 counts 15 min, a2 none
    clipped = dash.time_in_alarm(data.Filters(start=known.now - timedelta(minutes=15), stop=known.now,
                                              device_prefix=p), known.now).set_index("device_id")
    assert clipped["seconds"].to_dict() == pytest.approx({f"{p}-in-1": 900.0, f"{p}-srv-1": 300.0})


def test_flux_threshold_alerts(known: Known, dash: data.Dashboard) -> None:
    rows = dash.threshold_alerts(_filters(known))
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["device_id"], row["severity"], row["label"], row["windows"]) == (
        f"{known.prefix}-srv-1", "critical", "High CPU + Memory stress", 3)
    assert pd.Timestamp(row["last"]) == pd.Timestamp(known.last_end)


def test_flux_device_means(known: Known, dash: data.Dashboard) -> None:
    """Each device's mean, and the dashboard's histogram binned from them: every device in the bin of its mean."""
    f = _filters(known, metric="temperature")
    means = known.windows[known.windows.metric == "temperature"].groupby("device_id")["avg"].mean()
    got = dash.run("device_means", {**f.common(), "bucket": names.BUCKET_AGGREGATES, "window": "10s",
                                    "metric": "temperature"}).set_index("device_id")["mean"]
    assert got.to_dict() == pytest.approx(means.to_dict())
    hist = dash.histogram(f)
    assert int(hist["devices"].sum()) == len(means)
    for mean in means:
        hit = hist[(hist["bin_start"] < mean) & (mean <= hist["bin_end"])]
        assert int(hit["devices"].sum()) == (means == mean).sum(), (mean, hist)
    assert len(hist) <= 14


def test_flux_temperature_histogram(known: Known, dash: data.Dashboard) -> None:
    """InfluxDB's own histogram of the device means (the template's cell): cumulative counts per upper edge."""
    f = _filters(known, metric="temperature")
    means = known.windows[known.windows.metric == "temperature"].groupby("device_id")["avg"].mean()
    bins = {"binStart": 0.0, "binWidth": 5.0, "binCount": 30}
    rows = dash.run("temperature_histogram", {**f.common(), "bucket": names.BUCKET_AGGREGATES, "window": "10s",
                                              "metric": "temperature", **bins})
    hist = data.bins_from_cumulative(rows)
    assert int(hist["devices"].sum()) == len(means)
    for mean in means:
        hit = hist[(hist["bin_start"] < mean) & (mean <= hist["bin_end"])]
        assert int(hit["devices"].sum()) >= 1, (mean, hist)


def test_flux_downsample_hourly(known: Known, dash: data.Dashboard) -> None:
    f = _filters(known)
    rows = dash.run("downsample_hourly", {"bucket": names.BUCKET_AGGREGATES, "start": f.start, "stop": f.stop,
                                          "window": "10s", "devicePrefix": known.prefix})
    assert set(rows["window"]) == {"1h"}
    w = known.windows.assign(hour=known.windows["end"].map(lambda t: math.ceil(t.timestamp() / 3600)))
    counts = rows[rows["_field"] == "count"].groupby(["device_id", "metric"])["_value"].sum()
    assert counts.to_dict() == w.groupby(["device_id", "metric"])["count"].sum().to_dict()
    maxes = rows[rows["_field"] == "max"].groupby(["device_id", "metric"])["_value"].max()
    assert maxes.to_dict() == pytest.approx(w.groupby(["device_id", "metric"])["max_value"].max().to_dict())


def test_flux_rollup(known: Known, dash: data.Dashboard) -> None:
    """The roll-up tasks' query: 1-minute rows whose counts are those of the windows ending in (end - 1 min, end]."""
    start = (known.now - timedelta(hours=1)).replace(second=0)
    stop = (known.now + timedelta(minutes=2)).replace(second=0)
    rows = dash.run("rollup", {"bucket": names.BUCKET_AGGREGATES, "start": start, "stop": stop, "window": "10s",
                               "every": timedelta(minutes=1), "label": "1m"})
    rows = rows[rows["device_id"].str.startswith(known.prefix)]
    assert set(rows["window"]) == {"1m"}
    assert all(pd.Timestamp(t).second == 0 for t in rows["_time"])
    w = known.windows.assign(minute=known.windows["end"].map(lambda t: math.ceil(t.timestamp() / 60) * 60))
    counts = rows[rows["_field"] == "count"].assign(minute=rows["_time"].map(lambda t: pd.Timestamp(t).timestamp()))
    got = counts.groupby(["device_id", "metric", "minute"])["_value"].sum().to_dict()
    assert got == w.groupby(["device_id", "metric", "minute"])["count"].sum().to_dict()
    maxes = rows[rows["_field"] == "max"].groupby(["device_id", "metric"])["_value"].max()
    assert maxes.to_dict() == pytest.approx(w.groupby(["device_id", "metric"])["max_value"].max().to_dict())


def test_unreachable_influxdb_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = data.Dashboard(url=f"http://127.0.0.1:{port}", token="x", org="machinewatch", timeout_ms=2000)
    with pytest.raises(data.InfluxUnavailable, match=f"127.0.0.1:{port}"):
        d.data_volume(data.last(timedelta(minutes=5)))


# --- InfluxDB templates ----------------------------------------------------------------------------


def test_dashboard_template_is_current_and_accepted(stack: Stack, settings: Settings) -> None:
    from dashboards.influxdb import build

    template_path = build.TEMPLATE
    assert json.loads(template_path.read_text()) == build.template(), "run python -m dashboards.influxdb.build"
    headers = {"Authorization": f"Token {settings.operator_token()}"}
    org_id = requests.get(f"{settings.influx}/api/v2/orgs", params={"org": settings.influx_org}, headers=headers,
                          timeout=10).json()["orgs"][0]["id"]
    body = {"orgID": org_id, "dryRun": True, "template": {"contents": json.loads(template_path.read_text())}}
    resp = requests.post(f"{settings.influx}/api/v2/templates/apply", json=body, headers=headers, timeout=30)
    assert resp.status_code in (200, 201), resp.text
    result = resp.json()
    assert not result.get("errors"), result["errors"]
    summary = result["summary"]
    assert [d["name"] for d in summary["dashboards"]] == ["machinewatch"]
    assert len(summary["dashboards"][0]["charts"]) == len(build.CELLS)
    assert not summary.get("summaryTask")  # the window job makes the roll-ups
    assert sorted(b["name"] for b in summary["buckets"]) == sorted(r.bucket for r in rollups.ROLLUPS)


def test_dashboard_cell_queries_run(known: Known, settings: Settings) -> None:
    """Every cell of the template, with the UI's v.* variables set, runs and returns rows for our devices."""
    from dashboards.influxdb import build

    v = ('option v = {timeRangeStart: -1h, timeRangeStop: now(), windowPeriod: 10s, '
         f'region: "", site: "", devicePrefix: "{known.prefix}", metric: "temperature"}}\n')
    with InfluxDBClient(url=settings.influx, token=settings.read_token(), org=settings.influx_org) as client:
        for cell in build.CELLS:
            flux = build.cell_query(cell)
            tables = client.query_api().query(_with_v(flux, v))
            rows = sum(len(t.records) for t in tables)
            assert rows > 0, f"cell {cell.title} returned no rows"


def _with_v(flux: str, v: str) -> str:
    lines = flux.splitlines()
    imports = [ln for ln in lines if ln.startswith("import ")]
    rest = [ln for ln in lines if not ln.startswith("import ")]
    return "\n".join([*imports, v, *rest])


# --- the Streamlit app in headless Chromium ----------------------------------------------------------


@pytest.fixture(scope="module")
def app_url(known: Known, settings: Settings) -> Iterator[str]:
    with headless.dashboard(settings) as base:
        yield f"{base}?range=1h&device_prefix={known.prefix}&refresh=off"


def _load(url: str, ready: Sequence[str], charts: int = 0, timeout: float = 180) -> tuple[str, str, bytes]:
    """(page text, DOM, PNG) once every string of ``ready`` and ``charts`` charts show and the script has ended.

    The script ending is not enough: the browser loads some widgets' code lazily (the metrics row
    among them) and on a busy machine draws them seconds later, so the page is read when it shows
    everything asked for, or at the deadline, when the caller's assertion names what is missing.
    """
    # chromium may still flush its profile while exiting: cleanup errors are not test failures
    with tempfile.TemporaryDirectory(prefix="mw-chromium-", ignore_cleanup_errors=True) as profile:
        browser = headless.Chromium(profile)
        try:
            browser.call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            text = ""
            while time.monotonic() < deadline:
                text = re.sub(r"\s+", " ", browser.evaluate("document.body ? document.body.innerText : ''") or "")
                running = browser.evaluate(
                    "!!document.querySelector('[data-testid=\"stStatusWidget\"]')"
                    " && document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')")
                drawn = browser.evaluate("document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]').length") or 0
                if all(r in text for r in ready) and drawn >= charts and not running:
                    break
                time.sleep(1)
            time.sleep(2)  # let the charts draw before the picture
            text = browser.evaluate("document.body.innerText") or ""
            dom = browser.evaluate("document.documentElement.outerHTML") or ""
            height = browser.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight"
                                      " || document.body.scrollHeight") or 2000
            shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                clip={"x": 0, "y": 0, "width": 1400, "height": min(int(height), 6000), "scale": 1})
            return text, dom, base64.b64decode(shot["data"])
        finally:
            browser.close()


def test_app_renders_charts_and_alerts_in_chromium(known: Known, app_url: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    w = known.windows
    temp = w[w.metric == "temperature"].groupby("device_id")["avg"].mean().mean()
    cpu = w[w.metric.isin(["load", "cpu_pct"])].groupby("device_id")["avg"].mean().mean()
    power = w[(w.metric == "power") & (w.k == WINDOWS - 1)]["avg"].sum()
    p = known.prefix
    expected = [
        "Avg temperature", f"{temp:.1f} °C", f"{cpu:.1f} %", f"{power:.2f} kW",
        "Devices in alarm", "2 active alerts on 2 devices",
        f"{p}-in-1", f"{p}-srv-1", "critical", "silent",
        "Pending (1)", "Resolved (1)", "10m 0s",  # a2 lasted 10 minutes
        "Time in alarm per device", "High CPU + Memory stress",
        "Data volume per source", "dc-india", "dc-germany", "servers-course",
    ]
    text, dom, png = _load(app_url, expected, charts=4)
    (ARTIFACTS / "dashboard.png").write_bytes(png)
    (ARTIFACTS / "dashboard.html").write_text(dom)
    assert 'data-testid="stException"' not in dom, "the page shows an exception box"
    text = re.sub(r"\s+", " ", text)
    missing = [e for e in expected if e not in text]
    assert not missing, f"not on the page: {missing}"
    # a1 has been open 20 minutes and a bit (seconds pass between writing the data and loading the page)
    assert re.search(r"\b20m \d+s\b", text), "open-for time of the active alert missing"
    # the pending alert fires in about 4 minutes
    assert re.search(r"\b[34]m \d+s\b", text), "pending alert countdown missing"
    charts = dom.count('data-testid="stVegaLiteChart"')
    assert charts >= 4, f"expected the line charts, the histogram and the rate chart; found {charts}"
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_app_events_per_second_kpi_matches_flux_in_chromium(known: Known, app_url: str, dash: data.Dashboard) -> None:
    """The KPI the browser shows is the rate InfluxDB gives for the same filters (issue 19: it showed 0.6)."""
    expected = dash.events_rate(_filters(known))
    assert expected == pytest.approx(10.0)  # 10 series x 10 readings per 10 s window
    label = "Events/s (last minute)"
    text, dom, _ = _load(app_url, [label])
    assert 'data-testid="stException"' not in dom, "the page shows an exception box"
    shown = re.search(re.escape(label) + r"\s*([\d,.]+)", text)
    assert shown, f"no value after {label!r} on the page: {text[:2000]!r}"
    assert float(shown[1].replace(",", "")) == pytest.approx(expected, abs=0.05)


def test_app_region_in_the_url_filters_the_page_in_chromium(known: Known, app_url: str) -> None:
    """``?region=de`` picks the region in the sidebar: the KPIs are de's alone (one device), not the fleet's."""
    w = known.windows
    de = w[(w.metric == "temperature") & (w.region == "de")]["avg"].mean()
    fleet = w[w.metric == "temperature"].groupby("device_id")["avg"].mean().mean()
    assert f"{de:.1f}" != f"{fleet:.1f}"
    text, dom, _ = _load(f"{app_url}&region=de", ["Avg temperature", f"{de:.1f} °C"])
    assert 'data-testid="stException"' not in dom, "the page shows an exception box"
    assert f"{de:.1f} °C" in text, f"the KPI is not de's: {text[:1500]!r}"


def test_flux_source_last_seen(known: Known, dash: data.Dashboard) -> None:
    """Each source's newest window end; other runs' data may be newer, never older than ours."""
    rows = dash.run("source_last_seen", {"bucket": names.BUCKET_AGGREGATES, "start": known.now - timedelta(hours=1)})
    seen = dict(zip(rows["source"], pd.to_datetime(rows["_time"], utc=True), strict=True))
    for source in {s for s, *_ in DEVICES.values()}:
        assert seen[source] >= known.last_end, source
    assert len(rows) == len(seen)  # one row per source
