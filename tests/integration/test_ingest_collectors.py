"""Collectors against the real Kafka: what the source held is what the topic holds.

Each test notes the end offsets before publishing and reads back only what was appended after
them, then compares, by event id, with an expectation computed here with pandas / json, not with
the collectors' code. The real files recorded by others (``../shared/realdata`` beside the clone, see
tests/realdata.py) are loaded in full when present; the other tests use files our simulators write in
the same formats, so they run on any clone.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kafka import KafkaConsumer, TopicPartition

from ingest import history as history_cli
from ingest.formats import load_mapping
from ingest.history.state import LoadState
from ingest.history.target import RetentionError, ensure_topic
from ingest.replay.source import ReplaySource
from ingest.tcp.source import TcpSettings as TcpConfig
from ingest.tcp.source import TcpSource as TcpListener
from machinewatch import names
from machinewatch.cli import build_parser
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from simulators.datacenter import DatacenterSimulator, write_history
from simulators.equipment import EquipmentSimulator
from simulators.servers import HEADER, ServerSimulator
from tests.collector_support import HistoryLoader, drive, kafka_runner
from tests.realdata import realdata_file
from tests.stack_support import read_topic

pytestmark = pytest.mark.integration

SENSORS = "sensors/dados_sensores.txt"
SERVERS = "servers/course-dataset-20-servers-5s.csv"


class Replayer:
    """The replay source in the old call shape: ``Replayer(sink, mapping, speed=...).run(path)`` on the runner."""

    def __init__(self, sink: Any, mapping: Any, speed: float = 1.0) -> None:
        self.sink, self.mapping, self.speed = sink, mapping, speed

    def run(self, path: Path, limit_rows: int | None = None) -> Any:
        return drive(ReplaySource(self.mapping, path, self.speed, limit_rows), self.sink).report


# -- reading back ---------------------------------------------------------------------------------
def _consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False, group_id=None,
                         consumer_timeout_ms=2000, max_poll_records=5000)


def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = _consumer(settings)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return dict(consumer.end_offsets(parts))
    finally:
        consumer.close()


def read_since(settings: Settings, since: dict[TopicPartition, int]) -> list[dict[str, Any]]:
    """Every record appended after ``since`` up to the current end, decoded from JSON."""
    consumer = _consumer(settings)
    try:
        parts = list(since)
        until = consumer.end_offsets(parts)
        consumer.assign(parts)
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < until[tp] for tp in parts):
            assert time.monotonic() < deadline, "reading back from Kafka took too long"
            for records in consumer.poll(timeout_ms=1000).values():
                out += [json.loads(r.value) for r in records if r.offset < until[TopicPartition(r.topic, r.partition)]]
        return out
    finally:
        consumer.close()


def mark(settings: Settings) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    return end_offsets(settings, names.TOPIC_READINGS), end_offsets(settings, names.TOPIC_DEAD_LETTER)


def as_frame(records: list[dict[str, Any]], source: str) -> pd.DataFrame:
    frame = pd.DataFrame([r for r in records if r["source"] == source])
    return frame.sort_values(["device_id", "ts", "metric"]).reset_index(drop=True)


# -- history loader -------------------------------------------------------------------------------
def test_history_real_sensor_file_twice_and_forced(stack: Stack, settings: Settings, tmp_path: Path) -> None:
    sensors = realdata_file(SENSORS)
    lines = [json.loads(line) for line in sensors.read_text().splitlines() if line.strip()]
    expected = pd.DataFrame({
        "device_id": [d["id_equipamento"] for d in lines],
        "ts": (pd.to_datetime([d["data_evento"] for d in lines], utc=True).as_unit("us").asi8 / 1000)
        .round().astype("int64"),
        "value": [float(d["padrao"]["leitura"]["temperatura"]) for d in lines],
    }).sort_values(["device_id", "ts"]).reset_index(drop=True)

    mapping = load_mapping("equipment")
    state = LoadState(tmp_path / "state.json")
    readings_at, _ = mark(settings)
    with Publisher(settings) as pub:
        report = HistoryLoader(pub, mapping, state, chunk_rows=2000, progress=False).load(sensors)
    assert (report.rows, report.readings, report.rejects) == (10_000, 10_000, 0)
    got = as_frame(read_since(settings, readings_at), "equipment-sensors")
    assert len(got) == len(lines) == 10_000
    assert got.event_id.is_unique
    pd.testing.assert_frame_equal(got[["device_id", "ts", "value"]], expected)
    assert set(got.metric) == {"temperature"} and set(got.unit) == {"°C"}

    # A second run sends nothing: the state says every row is acknowledged.
    again_at, _ = mark(settings)
    with Publisher(settings) as pub:
        assert HistoryLoader(pub, mapping, LoadState(tmp_path / "state.json"), progress=False).load(sensors).rows == 0
    assert [r for r in read_since(settings, again_at) if r["source"] == "equipment-sensors"
            and r["event_id"] in set(got.event_id)] == []

    # A forced run re-sends every row with the very same event ids.
    forced_at, _ = mark(settings)
    with Publisher(settings) as pub:
        HistoryLoader(pub, mapping, LoadState(tmp_path / "state.json"), progress=False).load(sensors, force=True)
    forced = as_frame(read_since(settings, forced_at), "equipment-sensors")
    assert sorted(forced.event_id) == sorted(got.event_id)


def test_history_real_servers_csv_full_file(stack: Stack, settings: Settings, tmp_path: Path) -> None:
    servers = realdata_file(SERVERS)
    raw = pd.read_csv(servers)
    base = pd.Timestamp("2024-01-01", tz="UTC")  # the mapping's documented base date
    raw["ts"] = ((base + pd.to_timedelta(raw["ts"])).astype("int64") // 1_000_000).astype("int64")
    long = raw.melt(id_vars=["ts", "server_id"], var_name="column", value_name="orig")
    # Metric names are the dataset's columns; values stay as recorded (its units are undocumented).
    expected = pd.DataFrame({
        "device_id": long.server_id, "ts": long.ts, "metric": long.column, "value": long.orig,
    }).sort_values(["device_id", "ts", "metric"]).reset_index(drop=True)

    readings_at, _ = mark(settings)
    started = time.monotonic()
    with Publisher(settings) as pub:
        report = HistoryLoader(pub, load_mapping("servers"), LoadState(tmp_path / "s.json"), progress=False).load(
            servers)
    print(f"servers CSV: {report.rows} rows, {report.readings} readings in {time.monotonic() - started:.1f} s")
    got = as_frame(read_since(settings, readings_at), "servers-course")
    assert len(got) == 28_800 * 5 and got.event_id.is_unique
    pd.testing.assert_frame_equal(got[["device_id", "ts", "metric"]], expected[["device_id", "ts", "metric"]])
    assert (got.value - expected.value).abs().max() < 1e-6
    net = got[~got.metric.isin(["cpu_pct", "mem_pct"])]
    assert set(net.unit) == {"unspecified"} and net.orig_unit.isna().all()
    assert set(got[got.metric.isin(["cpu_pct", "mem_pct"])].unit) == {"%"}


def test_history_datacentre_files_units_schema_evolution_dead_letters(
        stack: Stack, settings: Settings, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=2)
    sim = DatacenterSimulator(servers=3, seed=int(tag, 16), humidity_from_step=4)
    paths = write_history(tmp_path / "dc", islice(sim.stream(start.to_pydatetime()), 3 * 3 * 10))
    # Rename devices so this run's records are ours alone.
    for path in (paths["dc-india"], paths["dc-usa"]):
        path.write_text(path.read_text().replace("IN-MUM", f"IN-{tag}").replace("us-va", f"us-{tag}"))
    germany = pd.read_parquet(paths["dc-germany"])
    germany["rechner"] = germany.rechner.str.replace("DE-FRA", f"DE-{tag}")
    germany.to_parquet(paths["dc-germany"])

    # Bad rows beside good ones.
    with paths["dc-india"].open("a") as f:
        f.write(f"{start.isoformat()},,40.0,50,0.3,\n")                     # no device
        f.write(f"yesterday,IN-{tag}-009,40.0,50,0.3,\n")                   # unreadable time
        f.write(f"{start.isoformat()},IN-{tag}-008,hot,55.5,0.4,\n")        # one bad metric, others kept
    with paths["dc-usa"].open("a") as f:
        f.write("this is not json\n")
        f.write(json.dumps({"host": f"us-{tag}-009", "temp_f": 100.0}) + "\n")  # no time
    # Schema evolution: a later India file with a new column and without power.
    evolved = tmp_path / "dc" / "india-2.csv"
    evolved.write_text("timestamp,server_id,rack,temperature_c,cpu_load_pct,humidity_pct\n"
                       f"{start.isoformat()},IN-{tag}-007,r12,41.5,61.0,44.0\n")
    # ...and a later Germany file with an extra column and no power column.
    german2 = tmp_path / "dc" / "germany-2.parquet"
    pd.DataFrame({"zeit": [start], "rechner": [f"DE-{tag}-007"], "temperatur_k": [300.15], "last_pct": [12.5],
                  "zone": ["b"]}).to_parquet(german2)

    readings_at, dead_at = mark(settings)
    with Publisher(settings) as pub:
        for name, files in (("dc-india", [paths["dc-india"], evolved]), ("dc-usa", [paths["dc-usa"]]),
                            ("dc-germany", [paths["dc-germany"], german2])):
            loader = HistoryLoader(pub, load_mapping(name), LoadState(tmp_path / "state.json"), progress=False)
            for path in files:
                loader.load(path)
    got = pd.DataFrame([r for r in read_since(settings, readings_at) if tag in r["device_id"]])
    assert got.event_id.is_unique

    # Expectations straight from the files, converted here.
    india = pd.concat([pd.read_csv(paths["dc-india"]), pd.read_csv(evolved)]).dropna(subset=["server_id"])
    india = india[india.timestamp != "yesterday"]
    usa = [json.loads(line) for line in paths["dc-usa"].read_text().splitlines()[:30]]
    ger = pd.concat([pd.read_parquet(paths["dc-germany"]), pd.read_parquet(german2)])
    exp = []
    for _, r in india.iterrows():
        ts = pd.Timestamp(r.timestamp).value // 1_000_000
        for col, metric in (("temperature_c", "temperature"), ("cpu_load_pct", "load"), ("power_kw", "power"),
                            ("humidity_pct", "humidity")):
            if col in r and pd.notna(r[col]) and r[col] != "hot":
                exp.append((r.server_id, ts, metric, float(r[col])))
    for u in usa:
        ts = round(u["time"] * 1000)
        exp += [(u["host"], ts, "temperature", (u["temp_f"] - 32) * 5 / 9), (u["host"], ts, "load", u["load"] * 100),
                (u["host"], ts, "power", u["power_kw"])]
        if "humidity_pct" in u:
            exp.append((u["host"], ts, "humidity", u["humidity_pct"]))
    for _, r in ger.iterrows():
        ts = pd.Timestamp(r.zeit).value // 1_000_000
        exp += [(r.rechner, ts, "temperature", r.temperatur_k - 273.15), (r.rechner, ts, "load", r.last_pct)]
        if pd.notna(r.get("leistung_w")):
            exp.append((r.rechner, ts, "power", r.leistung_w / 1000))
        if pd.notna(r.get("feuchte_pct")):
            exp.append((r.rechner, ts, "humidity", r.feuchte_pct))
    expected = pd.DataFrame(exp, columns=["device_id", "ts", "metric", "value"])
    expected = expected.sort_values(["device_id", "ts", "metric"]).reset_index(drop=True)
    got = got.sort_values(["device_id", "ts", "metric"]).reset_index(drop=True)
    assert len(got) == len(expected)
    pd.testing.assert_frame_equal(got[["device_id", "ts", "metric"]], expected[["device_id", "ts", "metric"]])
    assert (got.value - expected.value.astype(float)).abs().max() < 1e-6
    assert set(got.unit) == {"°C", "%", "kW"}
    assert set(got[got.source == "dc-usa"].dropna(subset=["orig_unit"]).orig_unit) == {"°F", "fraction"}
    assert set(got[got.source == "dc-germany"].dropna(subset=["orig_unit"]).orig_unit) == {"K", "W"}
    assert {"humidity"} <= set(got.metric)  # the column that appeared later is picked up

    dead = [d for d in read_since(settings, dead_at) if str(tmp_path) in d["origin"]]
    assert len(dead) == 5, [d["reason"] for d in dead]
    texts = sorted(d["reason"] for d in dead)
    assert any("device field 'server_id'" in t for t in texts)
    assert any("time field 'timestamp'" in t and "yesterday" in t for t in texts)
    assert any("metric 'temperature'" in t and "'hot'" in t for t in texts)
    assert any("not JSON" in t for t in texts)
    assert any("time field 'time' is missing" in t for t in texts)
    assert all(d["raw"] for d in dead)


# -- history loader: constants, its own topic, repeated times, one summary -------------------------
PUMP_MAPPING = """name = "pump"
source = "plant-7-export"
format = "csv"
time_field = "timestamp"
site = "plant-7"

[[metrics]]
field = "temp"
metric = "temperature"
unit = "°C"
"""


def _history_cli(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``machinewatch ingest history ARGV`` against the test stack; the summary line it printed."""
    capsys.readouterr()
    args = build_parser().parse_args(["ingest", "history", "--no-progress", *argv])
    assert history_cli.run(args, settings) == 0
    (summary,) = capsys.readouterr().out.splitlines()
    return summary


def _count(summary: str, what: str) -> int:
    match = re.search(rf"(\d+) {what}", summary)
    assert match, f"no '{what}' in the summary: {summary}"
    return int(match.group(1))


def test_history_single_device_file_into_its_own_topic_summary_agrees_with_kafka(
        stack: Stack, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tag = uuid.uuid4().hex[:6]
    topic, device = f"mw.test-{tag}.history", f"pump-{tag}"
    mapping = tmp_path / "pump.toml"
    mapping.write_text(PUMP_MAPPING)  # no device field: the device comes from --set
    # A 5-minute series of one device; the clock steps back an hour (12 times again, other values),
    # one row is repeated exactly, one value is unreadable.
    start = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=6)
    stamp = [(start + pd.Timedelta(minutes=5 * i)).isoformat() for i in range(50)]
    lines = ["timestamp,temp", *(f"{stamp[i]},{40 + i * 0.5}" for i in range(50)),
             *(f"{stamp[38 + i]},{70 + i}" for i in range(12)), f"{stamp[49]},{40 + 49 * 0.5}", f"{stamp[0]},hot"]
    data = tmp_path / "pump-7.csv"
    data.write_text("\n".join(lines) + "\n")
    state = tmp_path / "state.json"
    argv = ["--mapping", str(mapping), "--set", f"device={device}", "--topic", topic, "--state", str(state), str(data)]

    readings_at, dead_at = mark(settings)
    quality_at = end_offsets(settings, names.TOPIC_QUALITY)
    summary = _history_cli(settings, capsys, *argv)

    # The topic did not exist: the loader created it like the stack's own topics.
    consumer = _consumer(settings)
    assert len(consumer.partitions_for_topic(topic) or ()) == settings.kafka_partitions
    consumer.close()
    got = read_topic(settings, topic)
    dead = [d for d in read_since(settings, dead_at) if d["origin"].startswith(f"{data}:")]
    notes = [n for n in read_since(settings, quality_at) if n["origin"].startswith(f"{data}:")]
    # What reached Kafka is what the summary says.
    assert _count(summary, "rows read") == 64
    assert _count(summary, f"readings to {re.escape(topic)}") == len(got) == 62
    assert _count(summary, "dead-lettered") == len(dead) == 2
    assert _count(summary, "data-quality notes") == len(notes) == 12
    assert "(bad_value 1, duplicate 1)" in summary and "(repeated_time 12)" in summary
    assert {(r["device_id"], r["site"]) for r in got} == {(device, "plant-7")}
    assert len({r["event_id"] for r in got}) == 62
    stepped_back = [r for r in got if r["value"] >= 70]
    assert len(stepped_back) == 12 and sorted(r["value"] for r in stepped_back) == [70.0 + i for i in range(12)]
    assert {n["kind"] for n in notes} == {"repeated_time"} and len({n["note_id"] for n in notes}) == 12
    assert sorted(int(n["origin"].rsplit(":", 1)[1]) for n in notes) == list(range(51, 63))
    assert sorted(d["reason"].split(": ")[1].split(" ")[0] for d in dead) == ["duplicate", "metric"]
    # The live topic got nothing of it.
    assert [r for r in read_since(settings, readings_at) if r["device_id"] == device] == []

    # A plain re-run sends nothing.
    before = end_offsets(settings, topic)
    again = _history_cli(settings, capsys, *argv)
    assert "0 rows read (64 skipped as already loaded), 0 readings" in again
    assert end_offsets(settings, topic) == before

    # A time-of-day file: a changed base date loads again (other times, other ids), a re-run of it sends nothing.
    servers = tmp_path / "servers.csv"
    servers.write_text("ts,server_id,cpu_pct\n" + "".join(f"08:00:{5 * i:02d},{tag}-s1,{i}\n" for i in range(6)))
    day = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=2)
    by_day = []
    for base, expected in ((day, 6), (day, 0), (day - pd.Timedelta(days=1), 6), (day - pd.Timedelta(days=1), 0)):
        at = end_offsets(settings, topic)
        line = _history_cli(settings, capsys, "--mapping", "servers", "--base-date", f"{base:%Y-%m-%d}",
                            "--topic", topic, "--state", str(state), str(servers))
        sent = read_since(settings, at)
        assert _count(line, "readings to") == len(sent) == expected, line
        by_day.append(sent)
    first, moved = by_day[0], by_day[2]
    assert sorted(r["ts"] - 86_400_000 for r in first) == sorted(r["ts"] for r in moved)
    assert not {r["event_id"] for r in first} & {r["event_id"] for r in moved}


def test_history_refuses_data_older_than_the_bucket_keeps_before_sending_anything(
        stack: Stack, settings: Settings, tmp_path: Path) -> None:
    pytest.importorskip("machinewatch.influx_admin", reason="the core cannot read bucket retention yet")
    tag = uuid.uuid4().hex[:6]
    topic = f"mw.test-{tag}.history-old"
    servers = tmp_path / "servers.csv"
    servers.write_text("ts,server_id,cpu_pct\n" + "".join(f"08:00:{5 * i:02d},{tag}-s1,{i}\n" for i in range(6)))
    args = build_parser().parse_args(["ingest", "history", "--no-progress", "--mapping", "servers", "--base-date",
                                      "2024-01-01", "--topic", topic, "--bucket", "aggregates",
                                      "--state", str(tmp_path / "s.json"), str(servers)])
    with pytest.raises(RetentionError, match="older than the 90-day retention of InfluxDB bucket 'aggregates'"):
        history_cli.run(args, settings)
    assert read_topic(settings, topic) == []


def test_history_sample_conf_is_a_backfill_that_lands(
        stack: Stack, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    realdata_file(SERVERS)
    monkeypatch.chdir(Path(__file__).parents[2])  # the sample's paths are from the clone's root
    topic = "mw.history.readings"
    ensure_topic(settings, topic)  # to note where it ends now (the loader would create it as well)
    at = end_offsets(settings, topic)
    summary = _history_cli(settings, capsys, "--config", "ingest/history/sample.conf",
                           "--state", str(tmp_path / "state.json"))
    assert _count(summary, "rows read") == 28_800
    assert _count(summary, f"readings to {re.escape(topic)}") == 28_800 * 5
    got = [r for r in read_since(settings, at) if r["source"] == "servers-course"]
    assert len(got) == 28_800 * 5
    assert min(r["ts"] for r in got) == int(pd.Timestamp("2024-01-01T20:53:00Z").value // 1_000_000)


# -- replay ---------------------------------------------------------------------------------------
def test_replay_gives_the_history_loaders_event_ids(stack: Stack, settings: Settings, tmp_path: Path) -> None:
    rows = 400
    # A file in the course dataset's format (time of day only), written by our simulator: 20 servers,
    # 20 steps of 5 s, and more rows after the limit.
    servers = tmp_path / "servers.csv"
    start = pd.Timestamp("2024-01-01T08:00:00Z").to_pydatetime()
    events = islice(ServerSimulator(servers=20, seed=7).stream(start), rows + 100)
    servers.write_text("\n".join([HEADER, *(e.line for e in events)]) + "\n")
    readings_at, _ = mark(settings)
    with Publisher(settings) as pub:
        report = Replayer(pub, load_mapping("servers"), speed=0).run(servers, limit_rows=rows)
    assert report.readings == rows * 5
    got = as_frame(read_since(settings, readings_at), "servers-course")
    assert len(got) == rows * 5 and got.event_id.is_unique
    head = pd.read_csv(servers, nrows=rows)
    assert sorted(set(got.device_id)) == sorted(set(head.server_id))
    assert got[got.metric == "cpu_pct"].value.sort_values().tolist() == sorted(head.cpu_pct.tolist())

    # The history loader reading the same rows produces the same ids (transport does not matter).
    class Collect:
        topic = names.TOPIC_READINGS
        dead_lettered = 0
        max_future_ms = 300_000

        def __init__(self) -> None:
            self.ids: list[str] = []

        def send(self, reading: Any) -> None:
            self.ids.append(reading.event_id)

        def dead_letter(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError(args)

        def note(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError(args)

        def flush(self, timeout: float | None = None) -> None:
            pass

    head_file = tmp_path / "head.csv"
    head_file.write_text("".join(servers.read_text().splitlines(keepends=True)[: rows + 1]))
    history_ids = Collect()
    HistoryLoader(history_ids, load_mapping("servers"), LoadState(tmp_path / "state.json"), progress=False).load(
        head_file)
    assert sorted(history_ids.ids) == sorted(got.event_id)
    replay_ids = Collect()
    Replayer(replay_ids, load_mapping("servers"), speed=0).run(servers, limit_rows=rows)
    assert sorted(replay_ids.ids) == sorted(got.event_id)


# -- TCP listener ---------------------------------------------------------------------------------
async def _send(port: int, lines: list[bytes]) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for line in lines:
        writer.write(line)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_tcp_listener_many_connections(stack: Stack, settings: Settings) -> None:
    tag = uuid.uuid4().hex[:6]
    # 2000 lines in the equipment-temperature seed's format, from our simulator.
    sensor_start = (pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=2)).to_pydatetime()
    sensor_lines = [e.line.encode() + b"\n" for e in islice(EquipmentSimulator(sensors=50).stream(sensor_start), 2000)]
    # Unique equipment ids for this run, otherwise the seed format's text.
    sensor_lines = [line.replace(b"Equipament-0323XH-", f"Eq-{tag}-".encode()) for line in sensor_lines]
    sim = DatacenterSimulator(servers=2, seed=3)
    start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=30)
    dc_lines = [e.line.replace('"feed"', '"x":1, "feed"').encode() + b"\n"
                for e in islice(sim.stream(start.to_pydatetime()), 60)]
    dc_lines = [line.replace(b"IN-MUM", f"IN-{tag}".encode()).replace(b"us-va", f"us-{tag}".encode())
                .replace(b"DE-FRA", f"DE-{tag}".encode()) for line in dc_lines]
    oversize = b'{"feed":"dc-usa","pad":"' + b"x" * 9000 + b'"}\n'
    bad = [b"{not json}\n", f'{{"feed":"dc-mars","host":"m-{tag}"}}\n'.encode(), oversize,
           f'{{"feed":"dc-usa","host":"us-{tag}-x","temp_f":"warm","time":1700000000}}\n'.encode()]
    connections = [sensor_lines[i::4] for i in range(4)] + [dc_lines[:30] + bad + dc_lines[30:]]

    readings_at, dead_at = mark(settings)
    config = TcpConfig(port=0, mappings=["equipment", "dc-india", "dc-usa", "dc-germany"],
                       default_mapping="equipment", max_line_bytes=4096, queue_size=16)

    async def scenario(listener: TcpListener) -> None:
        await asyncio.wait_for(asyncio.gather(*(_send(listener.port, c) for c in connections)), timeout=60)

    with Publisher(settings) as pub:
        listener = TcpListener(config)
        runner = kafka_runner(listener, pub)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        assert listener.listening.wait(30)
        asyncio.run(scenario(listener))
        runner.stop()
        thread.join(120)
        assert not thread.is_alive()
    assert listener.connections == 5
    got = [r for r in read_since(settings, readings_at) if tag in r["device_id"]]
    ids = [r["event_id"] for r in got]
    assert len(ids) == len(set(ids))
    sensors = [r for r in got if r["source"] == "equipment-sensors"]
    expected = Counter((json.loads(line)["id_equipamento"], float(json.loads(line)["padrao"]["leitura"]["temperatura"]))
                       for line in sensor_lines)
    assert Counter((r["device_id"], r["value"]) for r in sensors) == expected
    # 60 datacentre lines, 3 metrics each (no humidity); the "warm" line carried no other metric.
    dc = [r for r in got if r["source"].startswith("dc-")]
    assert len(dc) == 60 * 3
    assert {r["unit"] for r in dc} == {"°C", "%", "kW"}

    dead = [d for d in read_since(settings, dead_at) if d["origin"].startswith("tcp://")
            and (tag in d["raw"] or d["raw"].startswith(("{not json", '{"feed":"dc-usa","pad"')))]
    reasons = " | ".join(sorted(d["reason"] for d in dead))
    assert len(dead) == 4, reasons
    assert "not JSON" in reasons and "no mapping for this line" in reasons
    assert "line longer than max_line_bytes=4096" in reasons and "'warm'" in reasons
