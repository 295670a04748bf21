"""Window results become InfluxDB points with deterministic time and tags (replays overwrite)."""

from __future__ import annotations

import json
import threading

import pytest
from influxdb_client import Point, WritePrecision
from influxdb_client.rest import ApiException

from sinks.influxdb_writer import BadResult, InfluxWriter, parse, to_point

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


class _FakeWriteApi:
    """Answers like InfluxDB: a scripted exception per call, then success; records what was stored."""

    def __init__(self, failures: list[Exception], bad_marker: str = "") -> None:
        self.failures = failures
        self.bad_marker = bad_marker
        self.stored: list[str] = []

    def write(self, bucket: str, record: list[Point]) -> None:
        lines = [p.to_line_protocol() for p in record]
        if self.failures:
            raise self.failures.pop(0)
        if self.bad_marker and any(self.bad_marker in line for line in lines):
            raise _api_error(400, "unable to parse point")
        self.stored += lines


def _api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"code": "invalid", "message": message}).encode()
    return exc


def _writer(api: _FakeWriteApi) -> tuple[InfluxWriter, list[tuple[bytes, str]]]:
    writer = InfluxWriter.__new__(InfluxWriter)  # no Kafka, no InfluxDB: only the write path
    writer.write_api = api
    writer.stop_event = threading.Event()
    writer.rejected = 0
    letters: list[tuple[bytes, str]] = []
    writer._dead_letter = lambda raw, reason, origin: letters.append((raw, reason))  # type: ignore[method-assign]
    return writer, letters


def _points(n: int) -> list[Point]:
    return [to_point({**RESULT, "device_id": f"d{i}"}) for i in range(n)]


def test_partial_write_is_not_retried_and_is_dead_lettered() -> None:
    api = _FakeWriteApi([_api_error(422, "partial write: dropped 2 points outside retention policy")])
    writer, letters = _writer(api)
    writer.write("b", _points(5))
    assert writer.rejected == 2 and len(letters) == 1 and "dropped 2 points" in letters[0][1]
    assert api.stored == []  # InfluxDB kept the others itself; nothing is written twice


def test_a_bad_point_is_isolated_and_the_rest_is_written() -> None:
    api = _FakeWriteApi([], bad_marker="device_id=d3")
    writer, letters = _writer(api)
    writer.write("b", _points(6))
    assert len(api.stored) == 5 and not any("d3" in line for line in api.stored)
    assert len(letters) == 1 and b"device_id=d3" in letters[0][0] and "unable to parse" in letters[0][1]


def test_outages_are_retried_until_the_server_is_back() -> None:
    api = _FakeWriteApi([_api_error(503, "unavailable"), ConnectionError("refused")])
    writer, letters = _writer(api)
    writer.write("b", _points(3))
    assert len(api.stored) == 3 and letters == []
