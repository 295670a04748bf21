"""The dashboard benchmark's synthetic roll-ups are what the window job makes of its windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from bench.dashboard_queries import ROLLUP_EVERY_S, fleet_lines, lines, rollup_lines


def _parse(rows: list[str]) -> pd.DataFrame:
    out = []
    for row in rows:
        head, fields, ts = row.split(" ")
        tags = dict(kv.split("=") for kv in head.split(",")[1:])
        values = {k: float(v.rstrip("i")) for k, v in (kv.split("=") for kv in fields.split(","))}
        out.append({"device_id": tags["device_id"], "window": tags["window"], "t": int(ts), **values})
    return pd.DataFrame(out)


@pytest.mark.parametrize("label", ["1m", "1h"])
def test_rollup_rows_are_the_windows_rolled_up_to_the_bucket_they_close(label: str) -> None:
    start = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)  # on a minute, not on an hour: partial first and last hours
    every = ROLLUP_EVERY_S[label]  # taken from machinewatch.rollups
    windows = _parse(list(lines(3, start, 2, 10, prefix="d")))
    windows["end"] = -(-windows["t"] // every) * every
    expected = windows.groupby(["device_id", "end"]).agg(
        avg=("avg", "mean"), min=("min", "min"), max=("max", "max"), count=("count", "sum")).reset_index()
    got = _parse(list(rollup_lines(3, start, 2, 10, every, label, prefix="d")))
    assert set(got["window"]) == {label}
    got = got.rename(columns={"t": "end"}).drop(columns="window")
    assert len(got) == len(expected) == 3 * (2 * 3600 // every + (1 if label == "1h" else 0))
    pd.testing.assert_frame_equal(got.sort_values(["device_id", "end"], ignore_index=True)[list(expected.columns)],
                                  expected, check_dtype=False)


def test_fleet_rows_sum_the_device_rows_of_each_source_region_and_site() -> None:
    start = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    device_rows = _parse(list(rollup_lines(130, start, 1, 10, 60, "1m", prefix="d")))
    fleet = []
    for row in fleet_lines(130, start, 1, 10, 60, "1m", prefix="d"):
        head, fields, ts = row.split(" ")
        assert head.startswith("fleet_agg,") and "device_id" not in head and ",window=1m" in head
        values = {k: float(v.rstrip("i")) for k, v in (kv.split("=") for kv in fields.split(","))}
        fleet.append({"t": int(ts), **values})
    frame = pd.DataFrame(fleet)
    assert len(frame) == 60 * 60  # 60 source/region/site combinations of the 130 devices, 60 minutes
    per_minute = frame.groupby("t").sum()
    want = device_rows.groupby("t").agg(devices=("device_id", "count"), avg_sum=("avg", "sum"), count=("count", "sum"))
    assert per_minute["devices"].tolist() == want["devices"].tolist()
    assert per_minute["count"].tolist() == want["count"].tolist()
    assert per_minute["avg_sum"].tolist() == pytest.approx(want["avg_sum"].tolist())


def test_the_floor_row_is_reported_beside_the_panels_and_counts_toward_no_goal() -> None:
    from bench.dashboard_queries import BASELINE, FLOOR_NAME
    from bench.io_benchmarks import panel_table

    table = ["| panel query | p50 ms | p95 ms | goal p95 ≤ 100 ms |", "|---|---:|---:|---|",
             "| chart per region (chart_series) | 40.0 | 90.0 | met |",
             "| histogram (latest + temperature_histogram) | 300.0 | 410.5 | missed |",
             f"| {FLOOR_NAME} | 250.0 | 999.0 | {BASELINE} |"]
    r = panel_table(table, 1000, 24)
    assert r["worst_p95_ms"] == 410.5  # the floor's 999 is not a panel
    assert r["median_p95_ms"] == (90.0 + 410.5) / 2
    assert r["floor_p95_ms"] == 999.0
    assert len(r["table"]) == 3
    assert panel_table(table[:-1], 1000, 24)["floor_p95_ms"] is None  # a table of an earlier run
