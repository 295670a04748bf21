"""Window results become InfluxDB points with deterministic time and tags (replays overwrite)."""

from __future__ import annotations

import pytest
from influxdb_client import WritePrecision

from sinks.influxdb_writer import BadResult, parse, to_point

RESULT = {
    "device_id": "sensor-1", "metric": "temperature", "source": "sim", "region": "plant-1", "site": "",
    "unit": "°C", "window_ms": 10000, "window_start_ms": 1_795_000_000_000, "window_end_ms": 1_795_000_010_000,
    "avg_value": 55.25, "min_value": 50.0, "max_value": 60.5, "count": 4,
}


def test_point_is_timestamped_at_window_end_with_tags() -> None:
    line = to_point(RESULT).to_line_protocol(precision=WritePrecision.MS)
    assert line.startswith("window_agg,")
    assert "device_id=sensor-1" in line and "metric=temperature" in line and "window=10s" in line
    assert "site=" not in line  # empty tags are left out: InfluxDB has no empty tag values
    assert "avg=55.25" in line and "count=4i" in line and "max=60.5" in line and "min=50" in line
    assert line.endswith(" 1795000010000")


def test_same_result_gives_identical_line() -> None:
    assert to_point(dict(RESULT)).to_line_protocol() == to_point(dict(RESULT)).to_line_protocol()


def test_incomplete_or_broken_results_are_rejected() -> None:
    with pytest.raises(BadResult, match="lacks count"):
        to_point({k: v for k, v in RESULT.items() if k != "count"})
    with pytest.raises(BadResult, match="not JSON"):
        parse(b"\xff\xfe")
    with pytest.raises(BadResult, match="not a JSON object"):
        parse(b"[]")
