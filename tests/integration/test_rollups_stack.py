"""The roll-up tasks against the real InfluxDB: provisioned by ``stack up``, and their rows are the 1-minute and
hourly aggregates of known windows (windows ending on a boundary count in the bucket they close).

Known 10 s windows are written under a device prefix unique to the run; the tasks are run at once through
InfluxDB's API (a manual run is the scheduled query at "now"), and the 1-minute task's own schedule is
checked to run too.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import requests
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS

from machinewatch import names, rollups
from machinewatch.config import Settings
from machinewatch.query import run_flux
from machinewatch.stack import Stack
from tests.influx_points import to_point

pytestmark = pytest.mark.integration
# The runs this module asked for; any other run of a task is one its schedule started.
MANUAL_RUNS: set[str] = set()


def _api(settings: Settings, method: str, path: str, **kwargs: Any) -> Any:
    resp = requests.request(method, f"{settings.influx}{path}", timeout=30,
                            headers={"Authorization": f"Token {settings.operator_token()}"}, **kwargs)
    assert resp.status_code < 400, resp.text
    return resp.json() if resp.content else None


def _task(settings: Settings, rollup: rollups.Rollup) -> dict[str, Any]:
    found = _api(settings, "GET", "/api/v2/tasks", params={"org": settings.influx_org, "name": rollup.task_name})
    assert len(found["tasks"]) == 1, found
    return dict(found["tasks"][0])


def _run_now(settings: Settings, task: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    run = _api(settings, "POST", f"/api/v2/tasks/{task['id']}/runs", json={})
    MANUAL_RUNS.add(run["id"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _api(settings, "GET", f"/api/v2/tasks/{task['id']}/runs/{run['id']}")
        if got["status"] in ("success", "failed", "canceled"):
            if got["status"] != "success":
                logs = _api(settings, "GET", f"/api/v2/tasks/{task['id']}/runs/{run['id']}/logs")
                pytest.fail(f"{task['name']} run {got['status']}: {logs}")
            return dict(got)
        time.sleep(1)
    pytest.fail(f"{task['name']} run did not finish within {timeout:.0f}s")


def _rows(settings: Settings, bucket: str, prefix: str, window: str) -> pd.DataFrame:
    flux = (f'from(bucket: "{bucket}") |> range(start: -1d, stop: 1m) '
            f'|> filter(fn: (r) => r._measurement == "window_agg" and r.window == "{window}") '
            f'|> filter(fn: (r) => r.device_id =~ /^{prefix}-/) '
            '|> pivot(rowKey: ["_time", "device_id", "metric"], columnKey: ["_field"], valueColumn: "_value") '
            '|> group() |> keep(columns: ["_time", "device_id", "metric", "avg", "min", "max", "count"])')
    return run_flux(settings, flux)


def test_stack_provisions_the_rollup_buckets_and_active_tasks(stack: Stack, settings: Settings) -> None:
    for rollup in rollups.ROLLUPS:
        task = _task(settings, rollup)
        assert task["status"] == "active" and task["every"] == rollups.flux_duration(rollup.every)
        assert f'to(bucket: "{rollup.bucket}"' in task["flux"]
        found = _api(settings, "GET", "/api/v2/buckets", params={"org": settings.influx_org, "name": rollup.bucket})
        assert [b["name"] for b in found["buckets"]] == [rollup.bucket]
    # the dashboards' read-only token reads the roll-ups
    assert run_flux(settings, f'from(bucket: "{names.BUCKET_ROLLUP_1M}") |> range(start: -1m) |> limit(n: 1)') \
        is not None


def test_minute_rollup_of_known_windows(stack: Stack, settings: Settings) -> None:
    prefix = f"ru-{uuid.uuid4().hex[:6]}"
    boundary = datetime.now(tz=UTC).replace(second=0, microsecond=0)  # the run's stop is this minute's start
    # three whole minutes before it; window k ends at first + 10 s * k, the last ones on each boundary
    first = boundary - timedelta(minutes=3)
    docs = []
    for d in range(2):
        for k in range(1, 19):
            end = first + timedelta(seconds=10 * k)
            avg = 20.0 + d * 10 + k
            docs.append({"device_id": f"{prefix}-{d}", "metric": "temperature", "source": "ru", "region": "r",
                         "site": "s", "unit": "°C", "window_ms": 10_000, "window_end_ms": int(end.timestamp() * 1000),
                         "avg_value": avg, "min_value": avg - k, "max_value": avg + k, "count": k})
    with InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(names.BUCKET_AGGREGATES, record=[to_point(x) for x in docs])
    _run_now(settings, _task(settings, rollups.ROLLUP_1M))
    got = _rows(settings, names.BUCKET_ROLLUP_1M, prefix, "1m")
    windows = pd.DataFrame(docs)
    windows["minute_end"] = [first + timedelta(minutes=(i - 1) // 6 + 1) for i in range(1, 19)] * 2
    expected = windows.groupby(["device_id", "minute_end"]).agg(
        avg=("avg_value", "mean"), min=("min_value", "min"), max=("max_value", "max"), count=("count", "sum"))
    got = got.assign(minute_end=pd.to_datetime(got["_time"], utc=True)).set_index(["device_id", "minute_end"])
    assert len(got) == len(expected) == 6, got
    for key, row in expected.iterrows():
        assert got.loc[key, ["avg", "min", "max"]].tolist() == pytest.approx(row[["avg", "min", "max"]].tolist())
        assert int(got.loc[key, "count"]) == int(row["count"])
    # a re-run overwrites the same rows: nothing is counted twice
    _run_now(settings, _task(settings, rollups.ROLLUP_1M))
    again = _rows(settings, names.BUCKET_ROLLUP_1M, prefix, "1m")
    assert len(again) == 6 and int(again["count"].sum()) == int(expected["count"].sum())


def test_hourly_rollup_of_known_minutes(stack: Stack, settings: Settings) -> None:
    prefix = f"rh-{uuid.uuid4().hex[:6]}"
    hour = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0)  # the run's stop
    docs = []
    for m in range(1, 121):  # two whole hours of minutes, the last of each on the hour
        end = hour - timedelta(hours=2) + timedelta(minutes=m)
        docs.append({"device_id": f"{prefix}-0", "metric": "temperature", "source": "ru", "region": "r", "site": "s",
                     "unit": "°C", "window_ms": 60_000, "window_end_ms": int(end.timestamp() * 1000),
                     "avg_value": float(m), "min_value": float(m) - 1, "max_value": float(m) + 1, "count": 6})
    points = [to_point(x) for x in docs]
    for p in points:
        p.tag("window", "1m")  # rows as the minute task writes them
    with InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(names.BUCKET_ROLLUP_1M, record=points)
    _run_now(settings, _task(settings, rollups.ROLLUP_1H))
    got = _rows(settings, names.BUCKET_ROLLUP_1H, prefix, "1h").sort_values("_time", ignore_index=True)
    assert pd.to_datetime(got["_time"], utc=True).tolist() == [pd.Timestamp(hour - timedelta(hours=1)),
                                                               pd.Timestamp(hour)]
    assert got["avg"].tolist() == pytest.approx([30.5, 90.5])  # mean of minutes 1..60 and 61..120
    assert got["min"].tolist() == [0.0, 60.0] and got["max"].tolist() == [61.0, 121.0]
    assert got["count"].tolist() == [360, 360]


def test_minute_task_runs_on_its_schedule(stack: Stack, settings: Settings) -> None:
    task = _task(settings, rollups.ROLLUP_1M)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        runs = _api(settings, "GET", f"/api/v2/tasks/{task['id']}/runs", params={"limit": 20})["runs"]
        scheduled = [r for r in runs if r.get("status") == "success" and r["id"] not in MANUAL_RUNS]
        if scheduled:
            return
        time.sleep(5)
    pytest.fail(f"no scheduled run of {task['name']} succeeded within 150 s: {runs}")


def test_dashboard_summaries_over_a_day_read_the_minute_rollups(stack: Stack, settings: Settings) -> None:
    """Over 24 h the per-device summaries (fleet KPI, hottest, histogram) read ``rollup_1m``: known minute rows
    there, and none in the windows, give the means and peaks a pandas reference computes from them."""
    from dashboards.streamlit import data

    prefix = f"rd-{uuid.uuid4().hex[:6]}"
    now = datetime.now(tz=UTC).replace(second=0, microsecond=0)
    docs = []
    for d in range(3):
        for m in range(1, 121):
            end = now - timedelta(hours=3) + timedelta(minutes=m)
            avg = 20.0 + 5 * d + (m % 7)
            docs.append({"device_id": f"{prefix}-{d}", "metric": "temperature", "source": "ru", "region": "r",
                         "site": "s", "unit": "°C", "window_ms": 60_000, "window_end_ms": int(end.timestamp() * 1000),
                         "avg_value": avg, "min_value": avg - 1, "max_value": avg + 1, "count": 6})
    points = [to_point(x) for x in docs]
    for p in points:
        p.tag("window", "1m")
    with InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(names.BUCKET_ROLLUP_1M, record=points)
    frame = pd.DataFrame(docs)
    means = frame.groupby("device_id")["avg_value"].mean()
    dash = data.Dashboard.from_settings(settings)
    try:
        f = data.last(timedelta(hours=24), device_prefix=prefix)
        assert dash.summary_source(f) == {"bucket": names.BUCKET_ROLLUP_1M, "window": "1m"}
        summary = dash.fleet_summary(f, metrics=("temperature",)).set_index("metric")
        assert int(summary.loc["temperature", "devices"]) == 3
        assert float(summary.loc["temperature", "mean"]) == pytest.approx(means.mean())
        hottest = dash.hottest(f, n=2)
        assert list(hottest["device_id"]) == [f"{prefix}-2", f"{prefix}-1"]
        assert hottest["peak_avg"].tolist() == pytest.approx(
            frame.groupby("device_id")["avg_value"].max().sort_values(ascending=False).head(2).tolist())
        hist = dash.histogram(f)
        assert int(hist["devices"].sum()) == 3
    finally:
        dash.close()


def _volume_reference(windows: pd.DataFrame, start: datetime, stop: datetime) -> dict[str, tuple[int, int]]:
    """Per source (devices, readings) of the windows ending in [start, stop): what the windows alone give."""
    inside = windows[(windows["end"] >= start) & (windows["end"] < stop)]
    grouped = inside.groupby("source").agg(devices=("device_id", "nunique"), readings=("count", "sum"))
    return {str(s): (int(r["devices"]), int(r["readings"])) for s, r in grouped.iterrows()}


def test_data_volume_over_a_day_reads_whole_hours_and_minutes_from_the_rollups(stack: Stack,
                                                                                settings: Settings) -> None:
    """Over 24 h the data-volume panel reads hourly and minute roll-up rows for the whole hours and minutes the
    tasks have written, and the windows at the edges: the sums must be the windows' own, to the reading, for
    the live range and for one whose ends fall on a window end (included) and a minute boundary (excluded).
    The roll-up rows are written only as far as the tasks would have by now, so a panel that read a roll-up
    beyond that would miss readings."""
    import numpy as np

    from dashboards.streamlit import data

    prefix = f"rv-{uuid.uuid4().hex[:6]}"
    now = datetime.now(tz=UTC)
    last_end = now.replace(microsecond=0) - timedelta(seconds=now.second % 10)
    rng = np.random.default_rng(7)
    rows = []
    for d, source in enumerate(("rv-a", "rv-a", "rv-b", "rv-c")):
        # a window every 50 s (so ends fall on minutes and hours too) over 26 h, up to the newest 10 s boundary
        ends = [last_end - timedelta(seconds=50 * k + 10 * d) for k in range(26 * 72)]
        rows += [{"device_id": f"{prefix}-{d}", "source": source, "end": e, "count": int(c)}
                 for e, c in zip(ends, rng.integers(1, 20, len(ends)), strict=True)]
    windows = pd.DataFrame(rows)

    def docs(frame: pd.DataFrame, window_ms: int) -> list[dict[str, Any]]:
        return [{"device_id": r.device_id, "metric": "temperature", "source": r.source, "region": "r", "site": "s",
                 "unit": "°C", "window_ms": window_ms, "window_end_ms": int(r.end.timestamp() * 1000),
                 "avg_value": 20.0, "min_value": 19.0, "max_value": 21.0, "count": int(r.count)}
                for r in frame.itertuples()]

    def rolled(frame: pd.DataFrame, every: timedelta, written_until: datetime) -> pd.DataFrame:
        # a row at T sums the windows ending in (T - every, T], as rollup.flux stamps them
        step = pd.Timedelta(every)
        out = frame.assign(end=(frame["end"] - pd.Timedelta(1, "ns")).dt.floor(step) + step)
        out = out.groupby(["device_id", "source", "end"], as_index=False)["count"].sum()
        return out[out["end"] <= written_until]

    minute_rows = rolled(windows, timedelta(minutes=1), (now - timedelta(seconds=20)).replace(second=0, microsecond=0))
    hour_rows = rolled(minute_rows, timedelta(hours=1),
                       (now - timedelta(minutes=2)).replace(minute=0, second=0, microsecond=0))
    with InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(names.BUCKET_AGGREGATES, record=[to_point(x) for x in docs(windows, 10_000)])
        for bucket, frame, label, ms in ((names.BUCKET_ROLLUP_1M, minute_rows, "1m", 60_000),
                                         (names.BUCKET_ROLLUP_1H, hour_rows, "1h", 3_600_000)):
            points = [to_point(x) for x in docs(frame, ms)]
            for p in points:
                p.tag("window", label)  # rows as the tasks write them
            write.write(bucket, record=points)

    hour = now.replace(minute=0, second=0, microsecond=0)
    ranges = (data.last(timedelta(hours=24), device_prefix=prefix),
              data.Filters(start=hour - timedelta(hours=20, minutes=-7, seconds=30), stop=hour - timedelta(minutes=31),
                           device_prefix=prefix))
    dash = data.Dashboard.from_settings(settings)
    try:
        def check() -> None:
            for f in ranges:
                assert dash.chart_source(f)[0] == names.BUCKET_ROLLUP_1M  # a range whose charts read roll-ups
                got = {str(r.source): (int(r.devices), int(r.readings)) for r in dash.data_volume(f).itertuples()}
                assert got == _volume_reference(windows, f.start, f.stop), (f.start, f.stop)

        check()
        # Hours well inside both ranges come from the hourly rows alone: without their windows and minute
        # rows the answer stays the same (a panel that read minutes or windows there now comes up short).
        for bucket in (names.BUCKET_AGGREGATES, names.BUCKET_ROLLUP_1M):
            for device in windows["device_id"].unique():
                _api(settings, "POST", "/api/v2/delete", params={"org": settings.influx_org, "bucket": bucket},
                     json={"start": (hour - timedelta(hours=18)).isoformat(),
                           "stop": (hour - timedelta(hours=2)).isoformat(),
                           "predicate": f'_measurement="window_agg" AND device_id="{device}"'})
        check()
    finally:
        dash.close()
