"""The roll-ups on the real stack: the window job on Flink makes them from readings, the writer puts them into
the roll-up buckets, and they are the 1-minute and hourly aggregates of those readings (pandas); ``stack up``
provisions their buckets and removes the InfluxDB tasks that made them in an older release. The dashboards read
them over long ranges (known rows written directly, as the job writes them).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import requests
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from machinewatch import names, rollups
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.query import run_flux
from machinewatch.record import Reading, make_event_id
from machinewatch.stack import Stack
from machinewatch.stack.influxdb import InfluxDB
from tests.influx_points import to_point
from tests.integration.pipeline_support import WindowPipeline, hop_windows
from tests.waiting import poll

pytestmark = pytest.mark.integration


def _api(settings: Settings, method: str, path: str, **kwargs: Any) -> Any:
    resp = requests.request(method, f"{settings.influx}{path}", timeout=30,
                            headers={"Authorization": f"Token {settings.operator_token()}"}, **kwargs)
    assert resp.status_code < 400, resp.text
    return resp.json() if resp.content else None


def _tasks(settings: Settings, name: str) -> list[dict[str, Any]]:
    return list(_api(settings, "GET", "/api/v2/tasks", params={"org": settings.influx_org, "name": name})["tasks"])


def _rows(settings: Settings, bucket: str, prefix: str, window: str, start: str = "-1d") -> pd.DataFrame:
    flux = (f'from(bucket: "{bucket}") |> range(start: {start}, stop: 1m) '
            f'|> filter(fn: (r) => r._measurement == "window_agg" and r.window == "{window}") '
            f'|> filter(fn: (r) => r.device_id =~ /^{prefix}-/) '
            '|> pivot(rowKey: ["_time", "device_id", "metric"], columnKey: ["_field"], valueColumn: "_value") '
            '|> group() |> keep(columns: ["_time", "device_id", "metric", "avg", "min", "max", "count"])')
    return run_flux(settings, flux)


def _fleet_rows(settings: Settings, rollup: rollups.Rollup, source: str) -> pd.DataFrame:
    flux = (f'from(bucket: "{rollup.bucket}") |> range(start: -1d, stop: 1m) '
            f'|> filter(fn: (r) => r._measurement == "fleet_agg" and r.window == "{rollup.label}" '
            f'and r.source == "{source}") '
            '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") '
            '|> group() |> keep(columns: ["_time", "devices", "avg_sum", "min", "max", "count"])')
    rows = run_flux(settings, flux)
    rows["window_end_ms"] = pd.to_datetime(rows["_time"], utc=True).map(lambda t: int(t.timestamp() * 1000))
    return rows.set_index("window_end_ms")


def test_stack_provisions_the_rollup_buckets_and_removes_old_rollup_tasks(stack: Stack, settings: Settings) -> None:
    org_id = _api(settings, "GET", "/api/v2/orgs", params={"org": settings.influx_org})["orgs"][0]["id"]
    for rollup in rollups.ROLLUPS:
        found = _api(settings, "GET", "/api/v2/buckets", params={"org": settings.influx_org, "name": rollup.bucket})
        assert [b["name"] for b in found["buckets"]] == [rollup.bucket]
        assert not _tasks(settings, rollup.task_name), "the window job makes the roll-ups, not a task"
    # the dashboards' read-only token reads the roll-ups
    assert run_flux(settings, f'from(bucket: "{names.BUCKET_ROLLUP_1M}") |> range(start: -1m) |> limit(n: 1)') \
        is not None
    # a task an older release made is deleted when the stack comes up again (the set-up after InfluxDB is ready)
    old = rollups.ROLLUP_1M
    _api(settings, "POST", "/api/v2/tasks", json={"orgID": org_id, "status": "inactive",
                                                  "flux": rollups.task_flux(old, settings.influx_org)})
    assert len(_tasks(settings, old.task_name)) == 1
    InfluxDB(settings).after_ready()
    assert not _tasks(settings, old.task_name)


def test_window_job_rolls_readings_up_into_minutes_and_hours(stack: Stack, settings: Settings) -> None:
    """Readings over two whole hours and the edges of two more go through the window job and the writer: the
    rows in rollup_1m and rollup_1h are each minute's and hour's count, min, max and mean of those readings, for
    every minute and hour the watermark has passed, and none of them lands in the windows' bucket. The fleet rows
    (both devices of the run's source, region and site) count them and sum the devices' means; the fleet charts
    read from them give what the same charts give from every device's rows."""
    run = uuid.uuid4().hex[:8]
    prefix = f"rj{run}"
    hour = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    t0 = int(hour.timestamp() * 1000) - 50_000  # 50 s of the hour before
    steps = (2 * 3600 + 95) // 2  # one reading every 2 s until 95 s into the hour after the two whole ones
    source, region = f"rollup-{run}", f"r{run}"  # the fleet rows' tags: this run's alone
    readings = [Reading(source=source, device_id=f"{prefix}-{d}", metric="temperature",
                        value=20.0 + d + (k * 7 % 41) * 0.25, unit="°C", ts=t0 + 2000 * k, region=region, site="s",
                        event_id=make_event_id(source, f"{prefix}-{d}", t0 + 2000 * k))
                for k in range(steps) for d in range(2)
                if k % 7 != 3]  # gaps: windows of 4 and 5 readings, so a mean of the windows' means is not the mean
    df = pd.DataFrame([{"device_id": r.device_id, "metric": r.metric, "ts": r.ts, "value": r.value}
                       for r in readings])
    horizon = int(df.ts.max()) - settings.watermark_delay_ms  # windows ending here or before have fired

    def publish(topics: dict[str, str]) -> None:
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many(readings)

    pipeline = WindowPipeline(settings, run, "rollups", before_job=publish)
    try:
        for rollup in rollups.ROLLUPS:
            size_ms = rollup.window_s * 1000
            want = hop_windows(df, size_ms, size_ms)
            want = want[want.window_end_ms <= horizon].set_index(["device_id", "window_end_ms"])
            assert len(want) >= (4 if rollup is rollups.ROLLUP_1H else 240), "the readings span whole buckets"

            def got(rollup: rollups.Rollup = rollup) -> pd.DataFrame:
                rows = _rows(settings, rollup.bucket, prefix, rollup.label, start="-1d")
                if rows.empty:
                    return rows
                rows["window_end_ms"] = pd.to_datetime(rows["_time"], utc=True).map(
                    lambda t: int(t.timestamp() * 1000))
                return rows.set_index(["device_id", "window_end_ms"])

            n = len(want)
            rows = poll(got, lambda r, n=n: len(r) >= n, 240, f"{n} {rollup.label} roll-up rows", every=3)
            assert set(rows.index) == set(want.index), (sorted(set(want.index) ^ set(rows.index))[:4],
                                                        pipeline.state())
            for key, row in want.iterrows():
                assert int(rows.loc[key, "count"]) == int(row["count"]), key
                assert rows.loc[key, ["min", "max"]].tolist() == [row["min"], row["max"]], key
                assert float(rows.loc[key, "avg"]) == pytest.approx(float(row["avg"]), abs=1e-9), key
            fleet = _fleet_rows(settings, rollup, source)
            want_fleet = want.reset_index().groupby("window_end_ms").agg(
                devices=("device_id", "nunique"), avg_sum=("avg", "sum"), min=("min", "min"), max=("max", "max"),
                count=("count", "sum"))
            assert set(fleet.index) == set(want_fleet.index), rollup.label
            for end, row in want_fleet.iterrows():
                assert [int(fleet.loc[end, "devices"]), int(fleet.loc[end, "count"])] == [row["devices"], row["count"]]
                assert fleet.loc[end, ["min", "max"]].tolist() == [row["min"], row["max"]], end
                assert float(fleet.loc[end, "avg_sum"]) == pytest.approx(float(row["avg_sum"]), abs=1e-9), end
        # The fleet charts over six hours (rollup_1m): from the fleet rows, as from every device's rows.
        from dashboards.streamlit import data

        dash = data.Dashboard.from_settings(settings)
        try:
            f = data.Filters(start=hour - timedelta(hours=3), stop=datetime.now(tz=UTC) + timedelta(minutes=1),
                             region=region)
            assert dash.fleet_source(f) == (names.BUCKET_ROLLUP_1M, "1m", 60)
            every = data.chart_every(f.start, f.stop, series=8, window_s=60)
            by_fleet = dash.series(f, "region")
            by_device = dash.run("chart_series", {**f.common(), "bucket": names.BUCKET_ROLLUP_1M, "window": "1m",
                                                  "metric": "temperature", "by": "region", "every": every,
                                                  "devices": [], "devicePrefix": prefix})
            assert len(by_fleet) == len(by_device) > 50  # two hours in buckets of a few minutes
            assert by_fleet["_time"].tolist() == by_device["_time"].tolist()
            assert by_fleet["value"].tolist() == pytest.approx(by_device["value"].tolist(), abs=1e-9)
            events = dash.events_per_source(f)
            events_by_device = dash.run("events_per_source", {
                **f.common(), "bucket": names.BUCKET_ROLLUP_1M, "window": "1m",
                "every": data.chart_every(f.start, f.stop, series=4, window_s=60), "devicePrefix": prefix})
            assert events[["_time", "source", "readings"]].values.tolist() == \
                events_by_device[["_time", "source", "readings"]].values.tolist()
            fired = hop_windows(df, 60_000, 60_000)
            assert int(events["readings"].sum()) == int(fired[fired.window_end_ms <= horizon]["count"].sum())
        finally:
            dash.close()
        # the roll-ups went to their buckets only; the 10 s windows to theirs
        for label in ("1m", "1h"):
            assert _rows(settings, names.BUCKET_AGGREGATES, prefix, label).empty
        assert len(_rows(settings, names.BUCKET_AGGREGATES, prefix, f"{settings.window_size_s}s")) > 0
    finally:
        pipeline.stop()


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
    """Over 24 h the data-volume panel reads hourly and minute roll-up rows for the whole hours and minutes that
    have surely been written, and the windows at the edges: the sums must be the windows' own, to the reading, for
    the live range and for one whose ends fall on a window end (included) and a minute boundary (excluded).
    The roll-up rows are written only as far as the margins the panel assumes (minutes ended 20 s ago, hours
    2 min ago: the job writes them seconds after they close), so a panel that read a roll-up beyond that would
    miss readings."""
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
        return [{"device_id": r.device_id, "metric": "temperature", "source": r.source, "region": prefix, "site": "s",
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
                p.tag("window", label)  # rows as the writer writes the job's roll-ups
            write.write(bucket, record=points)
            # and the fleet rows beside them (per source: the devices' rows counted, their readings summed)
            fleet = frame.groupby(["source", "end"]).agg(devices=("device_id", "size"), count=("count", "sum"))
            write.write(bucket, record=[
                f"fleet_agg,metric=temperature,region={prefix},site=s,source={src},unit=°C,window={label} "
                f"avg_sum={20.0 * r['devices']},count={r['count']}i,devices={r['devices']}i,max=21.0,min=19.0 "
                f"{int(end.timestamp())}" for (src, end), r in fleet.iterrows()], write_precision=WritePrecision.S)

    hour = now.replace(minute=0, second=0, microsecond=0)
    day = data.last(timedelta(hours=24), device_prefix=prefix)
    fixed = data.Filters(start=hour - timedelta(hours=20, minutes=-7, seconds=30), stop=hour - timedelta(minutes=31),
                         device_prefix=prefix)
    # the same ranges by region: no device filter, so the roll-up rows read are the fleet rows (the devices from
    # the filter choices); by device prefix, each device's rows
    ranges = (day, fixed, *(replace(f, device_prefix="", region=prefix) for f in (day, fixed)))
    dash = data.Dashboard.from_settings(settings)
    try:
        def check() -> None:
            for f in ranges:
                assert dash.chart_source(f)[0] == names.BUCKET_ROLLUP_1M  # a range whose charts read roll-ups
                assert (dash.fleet_means(f) is not None) == (f.region == prefix), f  # the fleet rows serve it
                got = {str(r.source): (int(r.devices), int(r.readings)) for r in dash.data_volume(f).itertuples()}
                assert got == _volume_reference(windows, f.start, f.stop), (f.start, f.stop, f.region)

        check()
        # Hours well inside both ranges come from the hourly rows alone: without their windows and minute
        # rows (the devices' and the fleet's) the answer stays the same (a panel that read minutes or windows there
        # now comes up short).
        predicates = [f'_measurement="window_agg" AND device_id="{d}"' for d in windows["device_id"].unique()]
        for bucket in (names.BUCKET_AGGREGATES, names.BUCKET_ROLLUP_1M):
            for predicate in [*predicates, f'_measurement="fleet_agg" AND region="{prefix}"']:
                _api(settings, "POST", "/api/v2/delete", params={"org": settings.influx_org, "bucket": bucket},
                     json={"start": (hour - timedelta(hours=18)).isoformat(),
                           "stop": (hour - timedelta(hours=2)).isoformat(), "predicate": predicate})
        check()
    finally:
        dash.close()
