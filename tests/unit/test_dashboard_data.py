"""The dashboard's pure transforms, the playback hand-off, the template builder and the CLI entry (no services)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from dashboards.influxdb import build
from dashboards.streamlit import data
from machinewatch import playback, rollups
from machinewatch.cli import build_parser

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("span", "series", "window_s", "expected_s"), [
    (timedelta(hours=1), 1, 10, 10),        # 360 points: full resolution
    (timedelta(hours=1), 8, 10, 20),        # 8 x 180 = 1440 points
    (timedelta(hours=24), 8, 10, 350),      # 8 x 247 = 1976 points
    (timedelta(hours=24), 1000, 10, 43200),  # bounded even for 1,000 lines
    (timedelta(days=7), 8, 10, 2460),       # over 10 minutes: whole minutes
])
def test_chart_every_keeps_charts_under_the_point_budget(span: timedelta, series: int, window_s: int,
                                                         expected_s: int) -> None:
    every = data.chart_every(NOW - span, NOW, series, window_s)
    assert every == timedelta(seconds=expected_s)
    points = series * math.ceil(span / every)
    assert points <= data.MAX_POINTS
    assert every.total_seconds() % window_s == 0


def test_window_seconds() -> None:
    assert data.window_seconds("10s") == 10
    assert data.window_seconds("30s@10s") == 10
    assert data.window_seconds("") == 10


def test_bins_from_cumulative_gives_per_bin_counts() -> None:
    cumulative = pd.DataFrame({"le": [40.0, 45.0, 50.0, 55.0, math.inf], "devices": [0.0, 2.0, 2.0, 5.0, 6.0]})
    bins = data.bins_from_cumulative(cumulative)
    assert bins["devices"].tolist() == [2, 0, 3, 1]
    assert bins["bin_start"].tolist() == [40.0, 45.0, 50.0, 55.0]
    assert bins["bin_end"].tolist()[-1] == math.inf  # overflow kept: it holds a device
    assert data.bins_from_cumulative(pd.DataFrame()).empty


def test_histogram_bars_are_in_numeric_order_not_alphabetical() -> None:
    # Issue 19: "50–51" showed after "61–62". Bins across a change of digits and the open edge bins
    # are the cases a label sort gets wrong.
    edges = [8.0, 9.0, 10.0, 11.0, 50.0, 51.0, 61.0, 62.0, math.inf]
    cumulative = pd.DataFrame({"le": edges, "devices": [1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 5.0, 6.0]})
    hist = data.bins_from_cumulative(cumulative)
    expected = ["< 8", "8–9", "9–10", "10–11", "11–50", "50–51", "51–61", "61–62", "≥ 62"]
    assert sorted(expected) != expected, "the case must be one an alphabetical sort gets wrong"
    shuffled = hist.sample(frac=1, random_state=3)  # the bars do not depend on the frame's row order
    bars = data.histogram_bars(shuffled)
    assert bars["bin"].tolist() == expected
    assert bars["devices"].tolist() == [1, 1, 1, 0, 0, 1, 0, 1, 1]
    spec = data.histogram_chart(shuffled, "temperature").to_dict()
    assert spec["encoding"]["x"]["sort"] == expected, "the axis order is given, not left to Vega-Lite"
    assert spec["encoding"]["x"]["field"] == "bin"
    rows = next(iter(spec["datasets"].values()))
    assert [r["bin"] for r in rows] == expected


def test_histogram_bins_cover_the_span() -> None:
    start, width = data.histogram_bins(41.3, 74.9, 12)
    assert start == 41.0
    assert start + 12 * width >= 74.9
    assert width * 2 == int(width * 2)  # whole or half degrees


def _states() -> pd.DataFrame:
    ms = NOW.timestamp() * 1000
    return pd.DataFrame([
        {"alert_id": "a1", "device_id": "d1", "state": "escalated", "severity": "critical", "kind": "k",
         "started_ms": ms - 1_200_000, "duration_ms": None, "fires_at_ms": None, "_time": NOW - timedelta(minutes=10)},
        {"alert_id": "a2", "device_id": "d2", "state": "resolved", "severity": "warning", "kind": "k",
         "started_ms": ms - 2_400_000, "duration_ms": 600_000.0, "fires_at_ms": None,
         "_time": NOW - timedelta(minutes=30)},
        {"alert_id": "a3", "device_id": "d3", "state": "pending", "severity": "warning", "kind": "k",
         "started_ms": ms - 60_000, "duration_ms": None, "fires_at_ms": ms + 240_000, "_time": NOW},
        {"alert_id": "a4", "device_id": "d1", "state": "silent", "severity": "warning", "kind": "k",
         "started_ms": ms - 300_000, "duration_ms": None, "fires_at_ms": None, "_time": NOW},
        {"alert_id": "a5", "device_id": "d4", "state": "resolved", "severity": "info", "kind": "k",
         "started_ms": ms - 90_000, "duration_ms": None, "fires_at_ms": None, "_time": NOW - timedelta(seconds=30)},
    ])


def test_split_alerts_active_pending_resolved() -> None:
    active, pending, resolved = data.split_alerts(_states(), NOW)
    assert active["alert_id"].tolist() == ["a1", "a4"]  # critical first
    assert active["open_for_s"].tolist() == [1200.0, 300.0]
    assert pending["fires_in_s"].tolist() == [240.0]
    by_id = resolved.set_index("alert_id")["duration_s"].to_dict()
    assert by_id == {"a2": 600.0, "a5": 60.0}  # a5 has no duration_ms: resolution time minus start
    per_device = data.alerts_by_device(active)
    assert per_device.to_dict("records") == [{"device_id": "d1", "alerts": 2, "worst": "critical"}]


def test_split_alerts_of_nothing() -> None:
    active, pending, resolved = data.split_alerts(pd.DataFrame(), NOW)
    assert active.empty and pending.empty and resolved.empty
    assert data.alerts_by_device(active).empty


def test_compute_kpis_counts_devices_and_sums_power() -> None:
    summary = pd.DataFrame([
        {"metric": "temperature", "unit": "°C", "devices": 3, "mean": 50.0},
        {"metric": "cpu_pct", "unit": "%", "devices": 1, "mean": 90.0},
        {"metric": "load", "unit": "%", "devices": 3, "mean": 50.0},
    ])
    power = pd.DataFrame([{"device_id": "a", "unit": "kW", "value": 0.3},
                          {"device_id": "b", "unit": "kW", "value": 0.45}])
    k = data.compute_kpis(summary, power, 12.5)
    assert k.avg_temperature == 50.0 and k.temperature_devices == 3
    assert k.avg_cpu == pytest.approx(60.0) and k.cpu_devices == 4  # (90 + 3 x 50) / 4
    assert k.power_kw == pytest.approx(0.75) and k.power_devices == 2
    empty = data.compute_kpis(pd.DataFrame(), pd.DataFrame(), 0.0)
    assert empty.avg_temperature is None and empty.power_kw is None


def _per_window(newest: datetime, windows: int, readings: int = 100) -> pd.DataFrame:
    """ingest_rate.flux's rows: readings per 10 s window end, ``windows`` of them up to ``newest``."""
    ends = [newest - timedelta(seconds=10 * k) for k in reversed(range(windows))]
    return pd.DataFrame({"_time": pd.to_datetime(ends, utc=True), "readings": [readings] * len(ends)})


def test_events_rate_is_current_when_the_data_began_late_in_the_range() -> None:
    # Issue 19: 10 sensors at 1 reading/s each (100 readings per 10 s window) for the last 3.6 minutes of
    # a 1 h range. Averaged over the range, as the KPI used to be, that is 0.6 per second.
    rows = _per_window(NOW - timedelta(seconds=20), windows=22)
    assert rows["readings"].sum() / timedelta(hours=1).total_seconds() == pytest.approx(0.6, abs=0.02)
    assert data.current_rate(rows, window_s=10) == pytest.approx(10.0)


def test_events_rate_counts_only_the_newest_minute() -> None:
    older = _per_window(NOW - timedelta(minutes=5), windows=30, readings=1000)  # a burst long ago
    rows = pd.concat([older, _per_window(NOW, windows=6, readings=50)], ignore_index=True)
    assert data.current_rate(rows, window_s=10) == pytest.approx(5.0)
    # the minute is the data's newest minute, not the clock's: a pipeline a minute behind still shows its rate
    assert data.current_rate(_per_window(NOW - timedelta(minutes=3), windows=12), window_s=10) == pytest.approx(10.0)


def test_events_rate_of_data_younger_than_a_minute_divides_by_the_time_it_covers() -> None:
    assert data.current_rate(_per_window(NOW, windows=3), window_s=10) == pytest.approx(10.0)  # 300 in 30 s
    assert data.current_rate(_per_window(NOW, windows=1), window_s=10) == pytest.approx(10.0)
    assert data.current_rate(pd.DataFrame(), window_s=10) == 0.0


def test_events_rate_kpi_reads_the_newest_minute_of_tumbling_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, dict[str, object]]] = []

    def fake_query(self: data.Dashboard, name: str, params: dict[str, object]) -> pd.DataFrame:
        asked.append((name, params))
        return _per_window(NOW, windows=30) if name == "ingest_rate" else pd.DataFrame()

    monkeypatch.setattr(data.Dashboard, "_query", fake_query)
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o")  # noqa: S106 - never contacted
    kpis = dash.kpis(data.last(timedelta(hours=1), now=NOW, window="30s@10s"))
    assert kpis.events_per_s == pytest.approx(10.0)
    (params,) = [p for name, p in asked if name == "ingest_rate"]
    assert params["window"] == "10s" and params["span"] == timedelta(minutes=1)  # not the charts' sliding windows
    assert params["measurement"] == "window_agg"
    text = data.flux_text("ingest_rate")
    assert all(name in text for name in params), "every parameter is an input the file reads"


def test_events_per_source_counts_tumbling_windows_even_when_the_charts_slide(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, object]] = []

    def fake_query(self: data.Dashboard, name: str, params: dict[str, object]) -> pd.DataFrame:
        asked.append(params)
        return pd.DataFrame()

    monkeypatch.setattr(data.Dashboard, "_query", fake_query)
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o")  # noqa: S106 - never contacted
    dash.events_per_source(data.last(timedelta(hours=1), now=NOW, window="30s@10s"))
    assert asked[-1]["window"] == "10s"  # 30s@10s would count each reading three times


@pytest.mark.parametrize(("seconds", "text"), [(4, "4s"), (65, "1m 5s"), (3725, "1h 2m"), (90000, "1d 1h"),
                                               (-3, "0s")])
def test_humanize_seconds(seconds: float, text: str) -> None:
    assert data.humanize_seconds(seconds) == text


def test_pivot_series() -> None:
    t = pd.Timestamp(NOW)
    frame = pd.DataFrame({"_time": [t, t, t + pd.Timedelta(seconds=10)], "series": ["a", "b", "a"],
                          "value": [1.0, 2.0, 3.0]})
    wide = data.pivot_series(frame)
    assert list(wide.columns) == ["a", "b"] and wide.loc[t, "b"] == 2.0 and len(wide) == 2


def test_filters_common_inputs() -> None:
    f = data.last(timedelta(hours=1), now=NOW, region="in")
    assert f.start == NOW - timedelta(hours=1) and f.stop > NOW
    assert f.common()["region"] == "in" and f.common()["devicePrefix"] == ""


def test_playback_speed_hand_off(tmp_path: Path) -> None:
    assert playback.running_replay(tmp_path) is None
    folder = playback.replay_dir(tmp_path)
    folder.mkdir()
    (folder / "replay.json").write_text(json.dumps({"speed": 60, "source": "servers.csv", "pid": 2 ** 22 + 7}))
    assert playback.running_replay(tmp_path) is None  # that process does not exist
    import os

    (folder / "replay.json").write_text(json.dumps({"speed": 60, "source": "servers.csv", "pid": os.getpid()}))
    status = playback.running_replay(tmp_path)
    assert status is not None and status.speed == 60 and status.source == "servers.csv"
    playback.request_speed(tmp_path, 10)
    assert playback.requested_speed(tmp_path) == 10.0
    assert playback.running_replay(tmp_path).speed == 10.0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="> 0"):
        playback.request_speed(tmp_path, 0)


def test_template_file_is_generated_from_the_library() -> None:
    assert json.loads(build.TEMPLATE.read_text()) == build.template(), "run python -m dashboards.influxdb.build"
    kinds = [obj["kind"] for obj in build.template()]
    assert kinds.count("Dashboard") == 1 and "Bucket" in kinds
    assert "Task" not in kinds  # the window job makes the roll-ups: a task would write them twice
    for cell in build.CELLS:
        query = build.cell_query(cell)
        # every library input the cell's file reads is bound, and the library text is inside unchanged
        body = (build.FLUX_DIR / f"{cell.flux}.flux").read_text().split("import ")[-1].split("\n", 1)[1]
        assert body.strip() in query
        assert "v.timeRangeStart" in query or cell.flux == "alert_states"
    buckets = [obj["spec"]["name"] for obj in build.template() if obj["kind"] == "Bucket"]
    assert buckets == [r.bucket for r in rollups.ROLLUPS]


def test_every_library_file_documents_its_inputs() -> None:
    for path in data.library_files():
        lines = path.read_text().splitlines()
        assert lines[0].startswith("// "), path.name
        assert any(line.startswith("// Inputs") for line in lines), path.name


def test_cli_dashboard_subcommand_defaults() -> None:
    args = build_parser().parse_args(["dashboard"])
    assert (args.host, args.port, args.func.__name__) == ("127.0.0.1", 8501, "cmd_dashboard")
    assert build_parser().parse_args(["dashboard", "--port", "9000"]).port == 9000


def test_a_page_render_runs_each_panel_query_once_and_in_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time as _time

    calls: list[str] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def fake_query(self: data.Dashboard, name: str, params: dict[str, object]) -> pd.DataFrame:
        with lock:
            calls.append(f"{name}:{sorted(params.items())!r}")
            threads.add(threading.current_thread().name)
        _time.sleep(0.05)  # long enough for the pool to overlap queries
        return pd.DataFrame()

    monkeypatch.setattr(data.Dashboard, "_query", fake_query)
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o")  # noqa: S106 - never contacted
    now = datetime(2026, 1, 1, tzinfo=UTC)
    f = data.last(timedelta(hours=1), now=now)
    with dash.render(f, now) as page:
        prefetched = len(calls)
        assert page.choices(f).empty and page.hottest(f, 10, f.metric).empty
        page.alert_states(f, now)
        page.kpis(f)
    assert len(calls) == prefetched, "the panels' own calls were answered from the render's results"
    assert len(set(calls)) == len(calls), "and each query (file and parameters) ran once"
    assert sum(t.startswith("flux") for t in threads) > 1, "several at once"
    assert dash._memo is None  # the shared dashboard keeps nothing between renders
    dash.choices(f)
    assert len(calls) == prefetched + 1


def test_a_render_given_the_sidebars_choices_does_not_ask_for_them_again(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_query(self: data.Dashboard, name: str, params: dict[str, object]) -> pd.DataFrame:
        asked.append(f"{name}:{sorted(params.items())!r}")
        return pd.DataFrame()

    monkeypatch.setattr(data.Dashboard, "_query", fake_query)
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o")  # noqa: S106 - never contacted
    now = datetime(2026, 1, 1, tzinfo=UTC)
    f = data.last(timedelta(hours=1), now=now, region="r1", device_prefix="dc-")
    with dash.render(f, now) as page:
        unseeded = list(asked)
    sidebar = pd.DataFrame({"device_id": ["dc-1"], "region": ["r1"], "site": ["s1"], "metric": ["temperature"]})
    asked.clear()
    with dash.render(f, now, choices=sidebar) as page:
        assert page.choices(f) is sidebar
    assert len(asked) == len(unseeded) - 1, "the one query left out is the choices"
    assert set(unseeded) - set(asked) == {f"latest_per_device:{sorted(dash._choices_query(f)[1].items())!r}"}


@pytest.mark.parametrize(("span", "source"), [
    (timedelta(minutes=15), ("aggregates", "10s", 10)), (timedelta(hours=1), ("aggregates", "10s", 10)),
    (timedelta(hours=6), ("rollup_1m", "1m", 60)), (timedelta(hours=24), ("rollup_1m", "1m", 60)),
    (timedelta(days=7), ("rollup_1m", "1m", 60)), (timedelta(days=30), ("rollup_1h", "1h", 3600)),
])
def test_charts_read_the_coarsest_rollup_that_still_fills_their_width(span: timedelta,
                                                                      source: tuple[str, str, int]) -> None:
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o",  # noqa: S106 - never contacted
                          rollup_1m_bucket="rollup_1m", rollup_1h_bucket="rollup_1h")
    f = data.last(span, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert dash.chart_source(f) == source
    bucket, _, step_s = source
    if bucket != "aggregates":
        assert (f.stop - f.start).total_seconds() / step_s >= data.CHART_POINTS
    # without roll-up buckets (e.g. the query benchmark's throw-away bucket) a chart reads the windows
    bare = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o")  # noqa: S106 - never contacted
    assert bare.chart_source(f) == ("aggregates", "10s", 10)


@pytest.mark.parametrize(("span", "bucket", "window"), [
    (timedelta(hours=1), "aggregates", "10s"), (timedelta(hours=24), "rollup_1m", "1m"),
    (timedelta(days=30), "rollup_1h", "1h"),
])
def test_per_device_summaries_read_the_rollups_over_long_ranges(monkeypatch: pytest.MonkeyPatch, span: timedelta,
                                                                 bucket: str, window: str) -> None:
    asked: list[tuple[str, dict[str, object]]] = []

    def fake_query(self: data.Dashboard, name: str, params: dict[str, object]) -> pd.DataFrame:
        asked.append((name, params))
        if name == "latest_per_device":
            return pd.DataFrame({"value": [20.0, 30.0]})
        return pd.DataFrame()

    monkeypatch.setattr(data.Dashboard, "_query", fake_query)
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o",  # noqa: S106 - never contacted
                          rollup_1m_bucket="rollup_1m", rollup_1h_bucket="rollup_1h")
    f = data.last(span, now=datetime(2026, 1, 1, tzinfo=UTC))
    dash.hottest(f)
    dash.fleet_summary(f)
    dash.histogram(f)
    summaries = [(n, p) for n, p in asked if n in ("hottest_devices", "fleet_summary", "device_means", "fleet_mean")]
    # over the roll-ups the fleet means read the fleet rows first (fleet_mean), and every device's when there are none
    long = {"fleet_mean"} if bucket != "aggregates" else set()
    assert {n for n, _ in summaries} == {"hottest_devices", "fleet_summary", "device_means", *long}
    for name, params in summaries:
        assert (params["bucket"], params["window"]) == (bucket, window), name


def test_fleet_kpis_read_the_fleet_rows_over_long_ranges_and_every_device_without_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, dict[str, object]]] = []
    fleet_rows = {"fleet_mean": pd.DataFrame({"metric": ["temperature"], "unit": ["°C"], "devices": [4],
                                              "mean": [50.0]}),
                  "ingest_rate": pd.DataFrame({"_time": [NOW], "readings": [600]})}

    def fake_query(self: data.Dashboard, name: str, params: dict[str, object]) -> pd.DataFrame:
        asked.append((name, params))
        if params.get("bucket") == "rollup_1m" and name in fleet_rows:
            return fleet_rows[name]
        return pd.DataFrame()

    monkeypatch.setattr(data.Dashboard, "_query", fake_query)
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o",  # noqa: S106 - never contacted
                          rollup_1m_bucket="rollup_1m", rollup_1h_bucket="rollup_1h")
    day = data.last(timedelta(hours=24), now=NOW)
    kpis = dash.kpis(day)
    assert (kpis.avg_temperature, kpis.temperature_devices) == (50.0, 4)
    assert kpis.events_per_s == pytest.approx(10.0)  # the newest minute's 600 readings over its 60 s
    rate = [p for n, p in asked if n == "ingest_rate"]
    assert [(p["bucket"], p["window"], p["measurement"]) for p in rate] == [("rollup_1m", "1m", "fleet_agg")]
    # one query for every metric (the data volume asks the same one whether the fleet rows serve it); the job
    # wrote fleet rows, so a metric without any has no data
    assert [p["metrics"] for n, p in asked if n == "fleet_mean"] == [[]]
    assert not [n for n, _ in asked if n == "fleet_summary"]
    # no fleet rows in the range: every device's rows, a metric at a time
    asked.clear()
    del fleet_rows["fleet_mean"]
    dash.kpis(day)
    assert [p["metrics"] for n, p in asked if n == "fleet_summary"] == [[m] for m in data.KPI_METRICS]
    # a device prefix: fleet rows have no devices, so the windows (and every device's rows) answer
    asked.clear()
    dash.kpis(data.last(timedelta(hours=24), now=NOW, device_prefix="in-"))
    assert not [n for n, _ in asked if n == "fleet_mean"]
    assert [(p["bucket"], p["measurement"]) for n, p in asked if n == "ingest_rate"] == [("aggregates", "window_agg")]


def test_histogram_bins_the_device_means_over_their_span() -> None:
    means = pd.Series([41.3, 45.0, 45.0, 52.2, 74.9])
    hist = data.bins_from_means(means, 12)
    assert int(hist["devices"].sum()) == len(means)
    assert hist["bin_start"].iloc[0] <= means.min() and hist["bin_end"].iloc[-1] >= means.max()
    assert len(hist) >= 12 and (hist["bin_end"] - hist["bin_start"]).nunique() == 1
    for m in means:  # each mean in the bin (start, end] that holds it (the lowest bin also holds its start)
        hit = hist[(hist["bin_start"] < m) & (m <= hist["bin_end"])]
        assert int(hit["devices"].sum()) >= 1, m
    assert data.bins_from_means(pd.Series([60.0, 60.0]), 12)["devices"].sum() == 2  # one value: still binned
    assert data.bins_from_means(pd.Series(dtype=float), 12).empty


def test_chart_queries_ask_the_rollup_bucket_for_its_window_and_step(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, dict[str, object]]] = []

    def fake_query(self: data.Dashboard, name: str, params: dict[str, object]) -> pd.DataFrame:
        asked.append((name, params))
        return pd.DataFrame()

    monkeypatch.setattr(data.Dashboard, "_query", fake_query)
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o",  # noqa: S106 - never contacted
                          rollup_1m_bucket="rollup_1m", rollup_1h_bucket="rollup_1h")
    f = data.last(timedelta(hours=24), now=datetime(2026, 1, 1, tzinfo=UTC))
    dash.series(f, "region")
    dash.events_per_source(f)
    for name, params in asked:
        assert (params["bucket"], params["window"]) == ("rollup_1m", "1m"), name
        every = params["every"]
        assert isinstance(every, timedelta) and every.total_seconds() % 60 == 0, name
    # the fleet roll-ups first; every device's rows where they gave nothing (here: nothing anywhere)
    assert [name for name, _ in asked] == ["fleet_series", "chart_series", "fleet_events_per_source",
                                           "events_per_source"]
    # with a device filter, or for devices, never the fleet rows
    asked.clear()
    dash.series(data.last(timedelta(hours=24), now=datetime(2026, 1, 1, tzinfo=UTC), device_prefix="x"), "region")
    dash.series(f, "device_id", ("d1",))
    assert [name for name, _ in asked] == ["chart_series", "chart_series"]
    # over a range the windows serve, neither
    asked.clear()
    dash.series(data.last(timedelta(hours=1), now=datetime(2026, 1, 1, tzinfo=UTC)), "region")
    assert [name for name, _ in asked] == ["chart_series"]
    # counts per source read the tumbling windows, with the roll-ups for the whole minutes and hours inside
    dash.data_volume(f)
    assert {k: asked[-1][1][k] for k in ("bucket", "window", "rollup1m", "rollup1h")} == {
        "bucket": "aggregates", "window": "10s", "rollup1m": "rollup_1m", "rollup1h": "rollup_1h"}
    # over a range whose charts read the windows, so does the data volume
    dash.data_volume(data.last(timedelta(hours=1), now=datetime(2026, 1, 1, tzinfo=UTC)))
    assert (asked[-1][1]["rollup1m"], asked[-1][1]["rollup1h"]) == ("", "")


def test_data_volume_reads_the_fleet_rows_and_takes_the_devices_from_the_choices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, dict[str, object]]] = []
    answers = {
        "fleet_mean": pd.DataFrame({"metric": ["temperature"], "unit": ["°C"], "devices": [3], "mean": [50.0]}),
        "data_volume": pd.DataFrame({"source": ["a", "b"], "readings": [600, 60]}),
        "latest_per_device": pd.DataFrame({"device_id": ["a-1", "a-2", "a-2", "b-1", "c-1"],
                                           "metric": ["t", "t", "h", "t", "t"], "source": ["a", "a", "a", "b", "c"],
                                           "region": ["eu", "eu", "eu", "eu", "us"], "site": ["s"] * 5}),
    }

    def fake_query(self: data.Dashboard, name: str, params: dict[str, object]) -> pd.DataFrame:
        asked.append((name, params))
        return answers.get(name, pd.DataFrame())

    monkeypatch.setattr(data.Dashboard, "_query", fake_query)
    dash = data.Dashboard(url="http://127.0.0.1:9", token="t", org="o",  # noqa: S106 - never contacted
                          rollup_1m_bucket="rollup_1m", rollup_1h_bucket="rollup_1h")
    day = data.last(timedelta(hours=24), now=NOW, region="eu")
    volume = dash.data_volume(day)
    assert volume.to_dict("records") == [{"source": "a", "devices": 2, "readings": 600},
                                         {"source": "b", "devices": 1, "readings": 60}]
    (params,) = [p for n, p in asked if n == "data_volume"]
    assert params["measurement"] == "fleet_agg" and params["rollup1h"] == "rollup_1h"
    # the choices asked are the tumbling windows' over the range, whatever window the charts show
    assert dash.data_volume(replace(day, window="30s@10s")).equals(volume)
    assert {p["window"] for n, p in asked if n == "latest_per_device"} == {"10s"}
    # no fleet rows in the range: each device's roll-up rows, and their own device count
    del answers["fleet_mean"]
    asked.clear()
    dash.data_volume(day)
    assert [p["measurement"] for n, p in asked if n == "data_volume"] == ["window_agg"]
    assert not [n for n, _ in asked if n == "latest_per_device"]
