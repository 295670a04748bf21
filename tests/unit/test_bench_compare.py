"""bench/compare.py: the engines' outputs compared record for record, and percentiles that carry their count."""

from __future__ import annotations

import math
from typing import Any

from bench.compare import compare, percentile, percentiles, transition_key, tumbling_windows, window_key, window_value


def win(device: str, end: int, avg: float, count: int = 10, size: int = 10_000, slide: int = 10_000) -> dict[str, Any]:
    return {"device_id": device, "metric": "temperature", "window_ms": size, "slide_ms": slide, "window_end_ms": end,
            "avg_value": avg, "min_value": avg - 1, "max_value": avg + 1, "count": count}


def test_the_same_windows_in_another_order_and_repeated_are_equal() -> None:
    flink = [win("a", 10_000, 50.1), win("b", 10_000, 51.0), win("a", 20_000, 52.0)]
    # Spark computes the average in another order (last bits differ), writes in another order, and a replay twice.
    spark = [win("a", 20_000, 52.0), win("b", 10_000, 51.00000000000001), win("a", 10_000, 50.1),
             win("a", 10_000, 50.1)]
    c = compare("10 s windows", ("flink", flink), ("pyspark", spark), window_key, window_value)
    assert c.equal, c.summary()
    assert c.summary() == "10 s windows: same 3 on both"


def test_a_missing_window_an_extra_one_and_a_different_count_are_reported() -> None:
    flink = [win("a", 10_000, 50.0), win("b", 10_000, 51.0), win("c", 10_000, 52.0)]
    spark = [win("a", 10_000, 50.0), win("b", 10_000, 51.0, count=9), win("d", 10_000, 53.0)]
    c = compare("10 s windows", ("flink", flink), ("pyspark", spark), window_key, window_value)
    assert not c.equal
    assert (c.missing_right, c.missing_left, c.mismatched) == (1, 1, 1)
    assert c.only_left == [("c", "temperature", 10_000, 10_000)]
    assert c.only_right == [("d", "temperature", 10_000, 10_000)]
    assert "DIFFER" in c.summary()


def test_a_key_written_twice_with_different_values_on_one_side_is_a_difference() -> None:
    c = compare("w", ("flink", [win("a", 10_000, 50.0)]), ("pyspark", [win("a", 10_000, 50.0), win("a", 10_000, 49.0)]),
                window_key, window_value)
    assert not c.equal
    assert any(d.get("on") == "one side, twice" for d in c.differ)


def test_nothing_on_either_side_is_not_equal() -> None:
    c = compare("alerts", ("flink", []), ("pyspark", []), transition_key)
    assert not c.equal
    assert "nothing was compared" in c.summary()


def test_alert_transitions_compare_by_device_state_and_time() -> None:
    base = {"kind": "sustained_overheat", "started_ms": 1000}
    flink = [{**base, "device_id": "a", "state": "pending", "ts": 1000}, {**base, "device_id": "a", "state": "opened",
                                                                          "ts": 61_000}]
    same = [dict(d, alert_id="other-format") for d in reversed(flink)]
    assert compare("t", ("flink", flink), ("pyspark", same), transition_key).equal
    later = [flink[0], {**flink[1], "ts": 62_000}]
    assert not compare("t", ("flink", flink), ("pyspark", later), transition_key).equal


def test_tumbling_windows_leave_out_the_sliding_ones() -> None:
    docs = [win("a", 10_000, 1.0), win("a", 30_000, 1.0, size=30_000, slide=10_000), win("a", 60_000, 1.0, size=60_000,
                                                                                          slide=60_000)]
    assert tumbling_windows(docs, 10_000) == [docs[0]]


def test_percentiles_carry_their_count_and_p99_of_ten_is_the_maximum() -> None:
    ten = percentiles([float(x) for x in range(1, 11)])
    assert (ten.count, ten.p50, ten.p99) == (10, 5.0, 10.0)
    assert not ten.enough(200)
    many = percentiles([float(x) for x in range(1, 1001)])
    assert (many.p50, many.p95, many.p99, many.count) == (500.0, 950.0, 990.0, 1000)
    assert many.enough(200)
    assert many.text() == "500 / 950 / 990 ms (n=1,000)"
    assert percentiles([]).text() == "no samples"
    assert math.isnan(percentile([], 0.5))
