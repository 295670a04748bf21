"""Window results become InfluxDB points with deterministic time and tags (replays overwrite)."""

from __future__ import annotations

import gzip
import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from influxdb_client import Point, WritePrecision
from influxdb_client.rest import ApiException

from sinks import influxdb_writer
from sinks.influxdb_writer import (
    BadResult,
    InfluxWriter,
    alert_line,
    late_line,
    parse,
    window_line,
)
from tests.influx_points import alert_point, late_point, to_point

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
    # Written out by hand: a result replayed through Kafka (a JSON round trip) must give exactly this line,
    # tags sorted and the time at the window end, so that InfluxDB overwrites the point instead of adding one.
    expected = ("window_agg,device_id=sensor-1,metric=temperature,region=plant-1,source=sim,unit=°C,window=10s "
                "avg=55.25,count=4i,max=60.5,min=50 1795000010000")
    replayed = json.loads(json.dumps(RESULT))
    assert to_point(dict(RESULT)).to_line_protocol(precision=WritePrecision.MS) == expected
    assert to_point(replayed).to_line_protocol(precision=WritePrecision.MS) == expected
    assert window_line(replayed) == expected


def test_incomplete_or_broken_results_are_rejected() -> None:
    with pytest.raises(BadResult, match="lacks count"):
        to_point({k: v for k, v in RESULT.items() if k != "count"})
    with pytest.raises(BadResult, match="not JSON"):
        parse(b"\xff\xfe")
    with pytest.raises(BadResult, match="not a JSON object"):
        parse(b"[]")


def test_parse_gives_what_json_loads_gives() -> None:
    # parse reads with orjson where it can: documents orjson reads otherwise (ints beyond 64 bits as floats) or
    # refuses (NaN, lone surrogates, a BOM, UTF-16) must come out as json.loads reads them.
    docs = [b'{"a":1,"a":2}', b'{"a":18446744073709551617}', b'{"a":-9223372036854775809}',
            b'{"a":{"b":[123456789012345678901]}}', b'{"a":NaN,"b":-Infinity}', b'{"a":1E400}', b'{"a":"\\ud800"}',
            b'\xef\xbb\xbf{"a":1}', '{"a":"\u00e9"}'.encode("utf-16"), b' {"a":-0.0,"b":5e-324} ',
            json.dumps(RESULT).encode()]
    for raw in docs:
        doc, expected = parse(raw), json.loads(raw)
        assert repr(doc) == repr(expected), raw
        assert [type(v) for v in doc.values()] == [type(v) for v in expected.values()], raw


# Results that exercise every rule of the line protocol Point writes: escaping in tags and field keys,
# empty / falsy / non-string tags, None and non-finite fields, ints given as floats and floats as ints.
_ODD = "a b,c=d\\"
WINDOWS: list[dict[str, Any]] = [
    RESULT,
    {**RESULT, "device_id": "press 7,line=2", "unit": "kg/m³", "region": "x\\", "site": "s\nt\tu\rv"},
    {**RESULT, "avg_value": float("nan"), "min_value": float("inf"), "max_value": -float("inf")},
    {**RESULT, "avg_value": 55, "min_value": "50.5", "max_value": 1e16, "count": 4.0, "slide_ms": 5000},
    {**RESULT, "avg_value": -0.0, "min_value": 1e-7, "max_value": 123456789.125, "window_end_ms": "17"},
    {**RESULT, "source": None, "region": 0, "site": False, "unit": 1.5, "metric": True, "window_ms": 60000},
    {**RESULT, "device_id": 42, "region": ["r", 1], "slide_ms": 0, "window_ms": 999},
    {k: v for k, v in RESULT.items() if k not in ("source", "region", "site", "unit")},
]
LATES: list[dict[str, Any]] = [
    {"source": "sim", "device_id": "d 1", "metric": "t=1", "ts": 1_795_000_000_123, "event_id": "e1",
     "watermark": 1_795_000_000_000},
    {"source": "", "device_id": _ODD, "metric": "t", "ts": 5, "event_id": 'say "hi" \\o/', "watermark": None},
]
ALERTS: list[dict[str, Any]] = [
    {"device_id": "d1", "rule_group": "overheat", "severity": "critical", "kind": "threshold", "state": "open",
     "window_end_ms": 1_795_000_010_000, "avg_value": 91.5, "threshold": 90, "count": 3, "message": 'a "b"'},
    {"device_id": _ODD, "ts": 7, "kind": "offline", "site": "", "open": True, "closed": False, "gap_ms": 1e300,
     "nan": float("nan"), "detail": {"b": [1, 2], "a": None}, "with space": "x", "k,=": 1.25, "none": None},
    {"device_id": "d2", "ts": 8, "region": 3, "source": "opc ua", "n": -0.5},
]


@pytest.mark.parametrize(("line", "point", "docs"), [
    (window_line, to_point, WINDOWS), (late_line, late_point, LATES), (alert_line, alert_point, ALERTS),
], ids=["window", "late", "alert"])
def test_line_builders_write_exactly_what_points_wrote(
    line: Callable[[dict[str, Any]], str], point: Callable[[dict[str, Any]], Point], docs: list[dict[str, Any]],
) -> None:
    for doc in docs:
        expected = point(doc).to_line_protocol(precision=WritePrecision.MS)
        assert line(dict(doc)) == expected, doc
        assert line(dict(doc)) == expected, doc  # the second time from the cache of window series


def test_line_builders_spot_checks() -> None:
    assert window_line(WINDOWS[1]).startswith(
        "window_agg,device_id=press\\ 7\\,line\\=2,metric=temperature,region=x\\ ,site=s\\nt\\tu\\rv,")
    assert " avg=55,count=4i,max=1e+16,min=50.5 " in window_line(WINDOWS[3])
    assert " count=4i 1795000010000" in window_line(WINDOWS[2])  # NaN and inf are left out
    odd = alert_line(ALERTS[1])
    assert 'detail="{\\"a\\": null, \\"b\\": [1, 2]}"' in odd and "k\\,\\==1.25" in odd and "nan" not in odd


def test_incomplete_results_are_rejected_by_the_line_builders_too() -> None:
    with pytest.raises(BadResult, match="lacks avg_value, count"):
        window_line({k: v for k, v in RESULT.items() if k not in ("count", "avg_value")})
    with pytest.raises(BadResult, match="lacks ts"):
        late_line({**LATES[0], "ts": None})
    with pytest.raises(BadResult, match="lacks device_id"):
        alert_line({"ts": 1})


class _FakeWriteService:
    """Answers like InfluxDB's write endpoint: a scripted exception per call, then success."""

    def __init__(self, failures: list[Exception], bad_marker: str = "", drop_marker: str = "") -> None:
        self.failures = failures
        self.bad_marker = bad_marker
        self.drop_marker = drop_marker  # points InfluxDB keeps quiet about: a partial write, as for retention
        self.stored: list[str] = []
        self.requests = 0

    def post_write(self, org: str, bucket: str, body: bytes, **kwargs: Any) -> None:
        assert kwargs["precision"] == WritePrecision.MS and kwargs["content_encoding"] == "gzip"
        lines = gzip.decompress(body).decode().split("\n")
        self.requests += 1
        if self.failures:
            raise self.failures.pop(0)
        if self.bad_marker and any(self.bad_marker in line for line in lines):
            raise _api_error(400, "unable to parse point")
        kept = [line for line in lines if not (self.drop_marker and self.drop_marker in line)]
        self.stored += kept
        if len(kept) < len(lines):
            # InfluxDB 2.x's answer: which points it dropped, it does not say
            raise _api_error(422, f"failure writing points to database: partial write: points beyond retention "
                             f"policy dropped={len(lines) - len(kept)}")


def _api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"code": "invalid", "message": message}).encode()
    return exc


def _writer(api: _FakeWriteService, retention_s: int | None = None) -> tuple[InfluxWriter, list[tuple[bytes, str]]]:
    writer = InfluxWriter.__new__(InfluxWriter)  # no Kafka, no InfluxDB: only the write path
    writer.retention_s = lambda bucket: retention_s  # type: ignore[method-assign]
    writer.write_service = api  # type: ignore[assignment]
    writer.org = "o"
    writer.stop_event = threading.Event()
    writer.rejected = 0
    writer.written = 0
    writer._lock = threading.Lock()
    writer._writes = None
    letters: list[tuple[bytes, str]] = []
    writer._dead_letter = lambda raw, reason, origin: letters.append((raw, reason))  # type: ignore[method-assign]
    return writer, letters


def _points(n: int) -> list[str]:
    return [window_line({**RESULT, "device_id": f"d{i:03d}"}) for i in range(n)]  # all of one length


def test_points_a_partial_write_dropped_are_found_dead_lettered_and_never_counted_as_written() -> None:
    api = _FakeWriteService([], drop_marker="device_id=d00")  # d000..d009 of 64: dropped, the rest stored
    writer, letters = _writer(api)
    points = _points(64)
    refused = writer.write("b", points)
    dropped = [p for p in points if "device_id=d00" in p]
    assert refused == writer.rejected == 10
    assert sorted(line for raw, _ in letters for line in raw.decode().split("\n")) == dropped
    assert all("dropped" in reason for _, reason in letters)
    assert set(api.stored) == set(points) - set(dropped)  # the rest stored (some twice: the same point again)
    assert api.requests <= 2 * 10 * math.log2(64) + 1  # halving, not one request per point


def test_a_batch_dropped_whole_is_dead_lettered_at_once() -> None:
    api = _FakeWriteService([], drop_marker="window_agg")
    writer, letters = _writer(api)
    assert writer.write("b", _points(64)) == 64 and api.requests == 1
    assert b"\n".join(raw for raw, _ in letters) == "\n".join(_points(64)).encode()


def test_points_older_than_the_buckets_retention_are_dead_lettered_before_writing() -> None:
    api = _FakeWriteService([])
    writer, letters = _writer(api, retention_s=3600)
    now_ms = int(time.time() * 1000)
    old = [window_line({**RESULT, "device_id": f"old{i}", "window_end_ms": now_ms - 7200_000}) for i in range(3)]
    new = [window_line({**RESULT, "device_id": f"new{i}", "window_end_ms": now_ms - 60_000}) for i in range(3)]
    assert writer.write("b", [*old, *new]) == 3
    assert api.stored == new and letters[0][0] == "\n".join(old).encode()
    assert "older than bucket 'b' keeps (3600 s retention)" in letters[0][1] and "--history" in letters[0][1]


def test_a_bad_point_is_isolated_and_the_rest_is_written() -> None:
    api = _FakeWriteService([], bad_marker="device_id=d003,")
    writer, letters = _writer(api)
    writer.write("b", _points(64))
    assert api.stored == [line for line in _points(64) if "device_id=d003," not in line]
    assert len(letters) == 1 and b"device_id=d003," in letters[0][0] and "unable to parse" in letters[0][1]
    assert api.requests <= 2 * math.log2(64) + 1  # halving, not one request per point


def test_outages_are_retried_until_the_server_is_back() -> None:
    api = _FakeWriteService([_api_error(503, "unavailable"), ConnectionError("refused")])
    writer, letters = _writer(api)
    writer.stop_event.wait = lambda timeout=None: False  # type: ignore[method-assign]  # no real back-off
    writer.write("b", _points(3))
    assert api.stored == _points(3) and letters == []


def test_a_too_large_request_is_split() -> None:
    api = _FakeWriteService([_api_error(413, "request too large")])
    writer, letters = _writer(api)
    writer.write("b", _points(7))
    assert api.stored == _points(7) and letters == [] and api.requests == 3


def test_requests_are_limited_by_size_and_keep_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _points(50)
    monkeypatch.setattr(influxdb_writer, "_MAX_BODY", 10 * (len(lines[0]) + 1))
    api = _FakeWriteService([])
    writer, _ = _writer(api)
    writer.write("b", lines)
    assert api.stored == lines and api.requests == 5


def test_points_are_accepted_as_their_ms_line_and_empty_ones_dropped() -> None:
    api = _FakeWriteService([])
    writer, _ = _writer(api)
    writer.write("b", [to_point(RESULT), "", window_line(RESULT)])
    assert api.stored == [window_line(RESULT)] * 2
    with pytest.raises(ValueError, match="ms timestamps"):
        writer.write("b", [Point("m").field("f", 1).time(1, WritePrecision.NS)])


class _Msg:
    def __init__(self, topic: str, value: bytes | None, offset: int = 0) -> None:
        self.topic, self.value, self.partition, self.offset = topic, value, 0, offset


def test_handle_routes_results_and_dead_letters_broken_ones() -> None:
    api = _FakeWriteService([])
    writer, letters = _writer(api)
    writer.routes = influxdb_writer.Topics().routes()
    topics = list(writer.routes)
    msgs = [_Msg(topics[0], json.dumps(RESULT).encode()), _Msg(topics[0], b"{"), _Msg(topics[0], None),
            _Msg(topics[0], json.dumps({**ALERTS[0], "gap": 10**400}).encode()),
            _Msg(topics[2], json.dumps({**ALERTS[2], "big": 10**400}).encode())]
    assert writer.handle(msgs) == 1
    assert api.stored == [window_line(RESULT)] and len(letters) == 3


def test_results_of_a_listed_site_go_to_that_sites_writer_and_its_refusals_are_ours() -> None:
    default_api, plant_api = _FakeWriteService([]), _FakeWriteService([], bad_marker="device_id=bad")
    writer, letters = _writer(default_api)
    plant, _ = _writer(plant_api)
    plant._refused = []
    plant._dead_letter = influxdb_writer.InfluxWriter._dead_letter.__get__(plant)  # type: ignore[method-assign]
    writer._refused = []
    writer.sites = {"plant-2": plant}
    writer.routes = influxdb_writer.Topics().routes()
    topic = next(iter(writer.routes))
    docs = [{**RESULT, "site": "plant-1", "device_id": "a"}, {**RESULT, "site": "plant-2", "device_id": "b"},
            {**RESULT, "site": "plant-2", "device_id": "bad"}, {**RESULT, "device_id": "c"}]
    assert writer.handle([_Msg(topic, json.dumps(d).encode()) for d in docs]) == 3
    assert default_api.stored == [window_line(docs[0]), window_line(docs[3])]
    assert plant_api.stored == [window_line(docs[1])]
    assert writer.rejected == 1 and plant.rejected == 0
    assert [r.raw for r in writer.take_refused()] == [window_line(docs[2]).encode()] and not letters


def test_an_influx_site_needs_exactly_one_token_source() -> None:
    from pydantic import ValidationError

    from machinewatch.config import InfluxSite, load_settings

    with pytest.raises(ValidationError, match="exactly one of token_file, token_env"):
        InfluxSite(url="http://x:8086")
    with pytest.raises(ValidationError, match="exactly one of token_file, token_env"):
        InfluxSite(url="http://x:8086", token_env="A", token_file="/f")  # type: ignore[arg-type]
    s = load_settings(influx_sites={"p": {"url": "http://x:8086", "token_env": "MW_TEST_PLANT_TOKEN"}})
    assert s.to_env()["MW_INFLUX_SITES"] == '{"p": {"url": "http://x:8086", "org": null, "token_file": null, ' \
        '"token_env": "MW_TEST_PLANT_TOKEN"}}'


def test_the_window_jobs_rollups_go_to_the_rollup_buckets_tagged_1m_and_1h() -> None:
    """A window result of a roll-up's shape lands in that roll-up's bucket (tag window=1m / 1h); every other
    window, tumbling or sliding, in the windows' bucket; a backfill's roll-up shapes stay in history."""
    from machinewatch import names
    from tests.unit.test_kafka_source import Msg

    writer, letters = _writer(_FakeWriteService([]))
    writer.sites = {}
    writer.routes = influxdb_writer.Topics().routes()
    buckets: list[tuple[str, str]] = []

    def write(bucket: str, points: Any) -> int:
        buckets.extend((bucket, str(p)) for p in points)
        return 0

    writer.write = write  # type: ignore[method-assign]
    shapes = [(10_000, 10_000), (30_000, 10_000), (60_000, 60_000), (3_600_000, 3_600_000), (60_000, 20_000)]
    msgs = [Msg(names.TOPIC_AGGREGATES, 0, i, json.dumps({**RESULT, "window_ms": w, "slide_ms": s}).encode())
            for i, (w, s) in enumerate(shapes)]
    assert writer.handle(msgs) == len(shapes) and not letters
    got = [(bucket, line.split(",window=")[1].split()[0].split(",")[0]) for bucket, line in buckets]
    assert sorted(got) == sorted([(names.BUCKET_AGGREGATES, "10s"), (names.BUCKET_AGGREGATES, "30s@10s"),
                                  (names.BUCKET_ROLLUP_1M, "1m"), (names.BUCKET_ROLLUP_1H, "1h"),
                                  (names.BUCKET_AGGREGATES, "60s@20s")])
    history = influxdb_writer.Topics(history=True).routes()[names.TOPIC_AGGREGATES][1]
    assert history == names.BUCKET_HISTORY
    # a fleet roll-up on the same topic: its own measurement, the roll-up's bucket
    buckets.clear()
    fleet = {"source": "sim", "region": "plant-1", "site": "a", "metric": "temperature", "unit": "°C",
             "window_ms": 60_000, "slide_ms": 60_000, "window_end_ms": 1_795_000_020_000, "devices": 3,
             "avg_sum": 150.5, "min_value": 40.0, "max_value": 60.0, "count": 180}
    assert writer.handle([Msg(names.TOPIC_AGGREGATES, 0, 9, json.dumps(fleet).encode())]) == 1 and not letters
    assert buckets == [(names.BUCKET_ROLLUP_1M, "fleet_agg,metric=temperature,region=plant-1,site=a,source=sim,"
                        "unit=°C,window=1m avg_sum=150.5,count=180i,devices=3i,max=60,min=40 1795000020000")]
    # a fleet row without its devices count is no fleet row: refused as a device's window without a device
    writer.handle([Msg(names.TOPIC_AGGREGATES, 0, 10, json.dumps({**fleet, "devices": None}).encode())])
    assert len(letters) == 1
