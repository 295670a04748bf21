"""bench/rollup_cost.py's pure parts: the task bound to a fixed now, its boundaries, and the output check."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.rollup_cost import bound_task, compare_minutes, minute_boundaries
from machinewatch import rollups

T0 = 1_700_000_040_000  # a minute boundary, ms


def minute(device: str, end_ms: int, count: int = 60, avg: float = 50.0) -> dict[str, Any]:
    return {"device_id": device, "metric": "temperature", "window_end_ms": end_ms, "count": count,
            "min_value": 40.0, "max_value": 60.0, "avg_value": avg}


def test_the_bound_task_is_the_scheduled_flux_at_a_fixed_now() -> None:
    flux = bound_task(rollups.ROLLUP_1M, "org", datetime(2026, 1, 1, 12, 0, 20, tzinfo=UTC))
    assert "option task" not in flux
    assert "now()" not in flux
    assert 'stop = date.truncate(t: time(v: "2026-01-01T12:00:20Z"), unit: 1m)' in flux
    assert 'to(bucket: "rollup_1m", org: "org")' in flux


def test_the_boundaries_cover_every_window_for_the_whole_lookback() -> None:
    got = minute_boundaries(T0 + 10_000, T0 + 100_000, timedelta(minutes=5))
    ms = [int(b.timestamp() * 1000) for b in got]
    # the first minute end holding a window, up to the last run whose 5-minute lookback still reaches the last one
    assert ms[0] == T0 + 60_000
    assert ms[-1] == T0 + 120_000 + 4 * 60_000
    assert all(b - a == 60_000 for a, b in itertools.pairwise(ms))


def test_same_minutes_are_equal_and_a_partial_minutes_average_is_not_compared() -> None:
    flink = [minute("d1", T0), minute("d1", T0 + 60_000, count=30, avg=51.0)]
    task = [minute("d1", T0), minute("d1", T0 + 60_000, count=30, avg=51.5)]
    assert compare_minutes(flink, task, T0 + 60_000).equal


def test_a_different_count_or_whole_minute_average_or_missing_row_differs() -> None:
    flink = [minute("d1", T0), minute("d2", T0)]
    assert not compare_minutes(flink, [minute("d1", T0, count=59), minute("d2", T0)], T0).equal
    assert not compare_minutes(flink, [minute("d1", T0, avg=50.1), minute("d2", T0)], T0).equal
    assert not compare_minutes(flink, [minute("d1", T0)], T0).equal


def test_task_rows_after_the_newest_closed_window_are_left_out() -> None:
    flink = [minute("d1", T0)]
    task = [minute("d1", T0), minute("d1", T0 + 60_000, count=20)]  # the minute Flink has not closed yet
    assert compare_minutes(flink, task, T0 + 10_000).equal
    assert not compare_minutes(flink, task, T0 + 60_000).equal
