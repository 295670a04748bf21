"""History loader with an in-memory sink: resume after a failed acknowledgement, no double loads."""

from __future__ import annotations

import argparse
import json
import logging
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ingest import history as history_cli
from ingest.formats import load_mapping
from ingest.history.loader import HistoryConfig
from ingest.history.state import LoadState
from ingest.history.target import HISTORY_BUCKET, HISTORY_TOPIC, RetentionError, RetentionGuard
from machinewatch import influx_admin, quality
from machinewatch.cli import build_parser
from machinewatch.config import Settings
from machinewatch.kafka_io import PublishError
from machinewatch.record import Reading
from tests.collector_support import HistoryLoader

ROOT = Path(__file__).parents[2]


class MemorySink:
    """The Publisher's interface in memory; ``dedup`` refuses an event id sent before, as the Publisher does."""

    def __init__(self, fail_on_flush: int | None = None, topic: str = "mw.readings", dedup: bool = False) -> None:
        self.topic = topic
        self.max_future_ms = 300_000
        self.readings: list[Reading] = []
        self.dead: list[tuple[bytes, str, str]] = []
        self.notes: list[dict[str, str]] = []
        self.dead_lettered = 0
        self.flushes = 0
        self.fail_on_flush = fail_on_flush
        self.dedup = dedup

    def send(self, reading: Reading) -> None:
        if self.dedup and reading.event_id in {r.event_id for r in self.readings}:
            self.dead_letter(reading.source, reading.to_json(), f"duplicate event_id {reading.event_id}")
            return
        self.readings.append(reading)

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "",
                    size: int | None = None) -> None:
        self.dead.append((raw if isinstance(raw, bytes) else raw.encode(), reason, origin))
        self.dead_lettered += 1

    def note(self, source: str, kind: str, raw: bytes | str, reason: str, origin: str = "", note_id: str = "") -> None:
        self.notes.append({"kind": kind, "reason": reason, "origin": origin, "note_id": note_id,
                           "raw": raw.decode() if isinstance(raw, bytes) else raw})

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        if self.flushes == self.fail_on_flush:
            msg = "1 of 10 records were not acknowledged"
            raise PublishError(msg)


def _usa_file(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "usa.jsonl"
    path.write_text("".join(json.dumps({"time": 1717236000 + i, "host": f"h{i % 3}", "temp_f": 50 + i}) + "\n"
                            for i in range(rows)))
    return path


def test_resume_after_failed_ack_sends_each_row_at_least_once_and_state_is_exact(tmp_path: Path) -> None:
    path = _usa_file(tmp_path, 95)
    state_file = tmp_path / "state.json"
    failing = MemorySink(fail_on_flush=3)
    loader = HistoryLoader(failing, load_mapping("dc-usa"), LoadState(state_file), chunk_rows=20, progress=False)
    with pytest.raises(PublishError):
        loader.load(path)
    # Two chunks were acknowledged; the third was not, so the state stops at row 40.
    (entry,) = json.loads(state_file.read_text()).values()
    assert entry["rows"] == 40
    assert entry["options"] == {"mapping": "dc-usa", "topic": "mw.readings", "region": "us", "site": "dc-virginia"}
    resumed = MemorySink()
    report = HistoryLoader(resumed, load_mapping("dc-usa"), LoadState(state_file), chunk_rows=20,
                           progress=False).load(path)
    assert (report.skipped, report.rows) == (40, 55)
    assert [r.orig_value for r in resumed.readings] == [50.0 + i for i in range(40, 95)]
    # Nothing lost: every id of the file is in one of the two runs.
    everything = MemorySink()
    HistoryLoader(everything, load_mapping("dc-usa"), LoadState(tmp_path / "other.json"), progress=False).load(path)
    sent = {r.event_id for r in failing.readings} | {r.event_id for r in resumed.readings}
    assert sent == {r.event_id for r in everything.readings}


def test_second_run_sends_nothing_force_sends_same_ids_rewritten_file_starts_over(tmp_path: Path) -> None:
    path = _usa_file(tmp_path, 10)
    state = tmp_path / "state.json"
    first, second, forced = MemorySink(), MemorySink(), MemorySink()
    HistoryLoader(first, load_mapping("dc-usa"), LoadState(state), progress=False).load(path)
    HistoryLoader(second, load_mapping("dc-usa"), LoadState(state), progress=False).load(path)
    HistoryLoader(forced, load_mapping("dc-usa"), LoadState(state), progress=False).load(path, force=True)
    assert len(first.readings) == 10 and second.readings == []
    assert [r.event_id for r in forced.readings] == [r.event_id for r in first.readings]
    path.write_text(path.read_text().replace('"h0"', '"h9"'))  # content changed at the head
    rewritten = MemorySink()
    HistoryLoader(rewritten, load_mapping("dc-usa"), LoadState(state), progress=False).load(path)
    assert len(rewritten.readings) == 10


def test_jsonl_testdata_dead_letters_with_origin(tmp_path: Path) -> None:
    sink = MemorySink()
    path = ROOT / "ingest/history/testdata/usa.jsonl"
    report = HistoryLoader(sink, load_mapping("dc-usa"), LoadState(tmp_path / "s.json"), progress=False)
    result = report.load(path)
    assert result.readings == 3 + 2 + 3 and result.rejects == 2
    reasons = {origin: reason for _, reason, origin in sink.dead}
    assert "not JSON" in reasons[f"{path}:4"]
    assert "time field 'time' is missing" in reasons[f"{path}:5"]


def test_bad_lines_are_dead_lettered_with_their_exact_bytes_and_the_rest_is_published(tmp_path: Path) -> None:
    good = [json.dumps({"time": 1717236000 + i, "host": "h1", "temp_f": 50 + i}).encode() + b"\n" for i in range(4)]
    undecodable = b'{"time": 1717236100, "host": "h\xff", "temp_f": 60}\n'
    not_json = b"{oops\r\n"
    path = tmp_path / "usa.jsonl"
    path.write_bytes(good[0] + undecodable + good[1] + not_json + good[2] + good[3])
    sink = MemorySink()
    report = HistoryLoader(sink, load_mapping("dc-usa"), LoadState(tmp_path / "s.json"), progress=False).load(path)
    assert report.readings == 4 and report.rejects == 2 and len(sink.readings) == 4
    dead = {origin: (raw, reason) for raw, reason, origin in sink.dead}
    assert dead[f"{path}:2"][0] == undecodable and "byte 0xff" in dead[f"{path}:2"][1]
    assert dead[f"{path}:4"][0] == not_json and "not JSON" in dead[f"{path}:4"][1]
    for raw, _, _ in sink.dead:  # what the publisher sends round-trips byte for byte
        assert quality.raw_bytes(json.loads(json.dumps(quality.letter("x", raw, "r")))) == raw


def test_parquet_resume_skips_batches(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "g.parquet"
    pd.DataFrame({"zeit": pd.date_range("2024-01-01", periods=30, freq="s", tz="UTC"), "rechner": "r1",
                  "temperatur_k": [300.0 + i for i in range(30)]}).to_parquet(path)
    state = LoadState(tmp_path / "s.json")
    sink = MemorySink()
    loader = HistoryLoader(sink, load_mapping("dc-germany"), state, progress=False)
    state.mark(path, 25, load_key=loader.load_key)
    loader.load(path)
    assert [round(r.orig_value or 0) for r in sink.readings] == [325, 326, 327, 328, 329]


def test_sample_conf_loads() -> None:
    with (ROOT / "ingest/history/sample.conf").open("rb") as handle:
        config = HistoryConfig.model_validate(tomllib.load(handle)["history"])
    assert config.mapping == "servers" and config.chunk_rows == 5000
    assert load_mapping(config.mapping, base_date=config.base_date).base_date == config.base_date
    # The course data is from 2024: a backfill into its own topic and the history bucket, where it lands.
    assert (config.topic, config.bucket) == (HISTORY_TOPIC, HISTORY_BUCKET) == ("mw.history.readings", "history")
    assert config.load_mapping().constants() == {"region": "lab", "site": "servers"}



# -- constants, load keys, repeated times, the summary, the guard ------------------------------------
PUMP_MAPPING = """name = "pump"
source = "plant-7-export"
format = "csv"
device = "pump-7"
time_field = "timestamp"
site = "plant-7"

[[metrics]]
field = "temp"
metric = "temperature"
unit = "°C"
"""
START = datetime(2024, 3, 1, tzinfo=UTC)


def _pump_files(tmp_path: Path) -> tuple[Path, Path]:
    """A 5-minute single-device series without a device column: 50 rows, then the clock steps back an hour
    (12 repeated times, other values), one row repeated exactly, one unreadable value."""
    mapping = tmp_path / "pump.toml"
    mapping.write_text(PUMP_MAPPING)
    stamp = [(START + timedelta(minutes=5 * i)).isoformat() for i in range(50)]
    lines = ["timestamp,temp", *(f"{stamp[i]},{40 + i * 0.5}" for i in range(50)),
             *(f"{stamp[38 + i]},{70 + i}" for i in range(12)),   # stepped back: 12 times again, other values
             f"{stamp[49]},{40 + 49 * 0.5}",                        # the last row again, same value: a duplicate
             f"{stamp[0]},hot"]                                     # a bad value
    data = tmp_path / "pump-7.csv"
    data.write_text("\n".join(lines) + "\n")
    return mapping, data


def test_a_constant_device_mapping_loads_a_single_device_file(tmp_path: Path) -> None:
    mapping, data = _pump_files(tmp_path)
    sink = MemorySink()
    report = HistoryLoader(sink, load_mapping(mapping), LoadState(tmp_path / "s.json"), progress=False).load(data)
    assert report.readings == len(sink.readings) == 62
    assert {(r.device_id, r.site, r.source) for r in sink.readings} == {("pump-7", "plant-7", "plant-7-export")}


def test_repeated_times_with_other_values_all_arrive_with_one_note_each(tmp_path: Path) -> None:
    mapping, data = _pump_files(tmp_path)
    sink = MemorySink(dedup=True)  # refuses a repeated id, as the Publisher does
    report = HistoryLoader(sink, load_mapping(mapping), LoadState(tmp_path / "s.json"), progress=False).load(data)
    assert len({r.event_id for r in sink.readings}) == 62
    repeated = [r for r in sink.readings if r.value >= 70]
    assert len(repeated) == 12 and len({r.ts for r in repeated}) == 12
    assert len(sink.notes) == 12 and len({n["note_id"] for n in sink.notes}) == 12
    assert {n["kind"] for n in sink.notes} == {"repeated_time"}
    assert sink.notes[0]["origin"] == f"{data}:51" and sink.notes[0]["raw"].startswith("2024-03-01T03:10:00+00:00,70")
    assert "occurrence 1, first at row 39" in sink.notes[0]["reason"]
    dead = {origin: reason for _, reason, origin in sink.dead}
    assert "duplicate reading" in dead[f"{data}:63"] and "same value as row 50" in dead[f"{data}:63"]
    assert "'hot'" in dead[f"{data}:64"]
    # One summary that agrees with what the sink received.
    assert (report.rows, report.readings, report.rejects, sum(report.notes.values())) == (64, 62, 2, 12)
    assert dict(report.dead_letters) == {"duplicate": 1, "bad_value": 1} and dict(report.notes) == {"repeated_time": 12}
    assert report.describe().endswith("64 rows read (0 skipped as already loaded), 62 readings to mw.readings, "
                                      "2 dead-lettered (bad_value 1, duplicate 1), 12 data-quality notes "
                                      f"(repeated_time 12), {report.rows / report.seconds:.0f} rows/s")


def test_a_resumed_load_gives_the_occurrence_ids_and_note_ids_of_a_whole_one(tmp_path: Path) -> None:
    mapping, data = _pump_files(tmp_path)
    whole = MemorySink()
    HistoryLoader(whole, load_mapping(mapping), LoadState(tmp_path / "whole.json"), progress=False).load(data)
    state = tmp_path / "s.json"
    failing, resumed = MemorySink(fail_on_flush=6), MemorySink()
    with pytest.raises(PublishError):  # rows 1-50 acknowledged, the chunk with six of the repeats is not
        HistoryLoader(failing, load_mapping(mapping), LoadState(state), chunk_rows=10, progress=False).load(data)
    report = HistoryLoader(resumed, load_mapping(mapping), LoadState(state), chunk_rows=10, progress=False).load(data)
    assert report.skipped == 50
    assert [r.event_id for r in resumed.readings] == [r.event_id for r in whole.readings[50:]]
    assert [n["note_id"] for n in resumed.notes] == [n["note_id"] for n in whole.notes]
    assert len(resumed.dead) == 2  # the duplicate is still known as one after the resume


def test_publisher_refusals_are_counted_by_kind(tmp_path: Path) -> None:
    path = _usa_file(tmp_path, 10)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes() + json.dumps({"time": 4102444700, "host": "h0", "temp_f": 1}).encode() + b"\n")
    sink = MemorySink(dedup=True)
    loader = HistoryLoader(sink, load_mapping("dc-usa"), LoadState(tmp_path / "s.json"), progress=False)
    assert loader.load(path).readings == 10
    report = loader.load(copy)  # the same events again: the publisher refuses their ids
    assert report.readings == 1 and dict(report.dead_letters) == {"duplicate": 10}


def _servers_csv(tmp_path: Path) -> Path:
    path = tmp_path / "servers.csv"
    path.write_text("ts,server_id,cpu_pct\n" + "".join(f"08:00:{5 * i:02d},s1,{i}\n" for i in range(6)))
    return path


def test_a_changed_option_loads_again_a_plain_rerun_sends_nothing(tmp_path: Path) -> None:
    path = _servers_csv(tmp_path)
    state = tmp_path / "state.json"

    def run(topic: str = "mw.readings", **options: object) -> MemorySink:
        sink = MemorySink(topic=topic)
        HistoryLoader(sink, load_mapping("servers", **options), LoadState(state), progress=False).load(path)  # type: ignore[arg-type]
        return sink

    first = run(base_date=date(2024, 1, 1))
    assert len(first.readings) == 6 and run(base_date=date(2024, 1, 1)).readings == []
    moved = run(base_date=date(2024, 1, 2))
    assert len(moved.readings) == 6 and run(base_date=date(2024, 1, 2)).readings == []
    assert {r.ts - 86_400_000 for r in moved.readings} == {r.ts for r in first.readings}
    assert not {r.event_id for r in moved.readings} & {r.event_id for r in first.readings}
    assert run(base_date=date(2024, 1, 1)).readings == []  # each set of options keeps its own progress
    # Another topic: the same output elsewhere, so the same ids; constants change the readings and their ids.
    other_topic = run("mw.history.readings", base_date=date(2024, 1, 1))
    assert [r.event_id for r in other_topic.readings] == [r.event_id for r in first.readings]
    single = run(base_date=date(2024, 1, 1), constants={"device": "one"})
    assert {r.device_id for r in single.readings} == {"one"} and len(single.readings) == 6
    assert run(base_date=date(2024, 1, 1), constants={"device": "one"}).readings == []


def test_the_guard_sees_the_first_chunk_before_anything_is_sent_and_can_refuse(tmp_path: Path) -> None:
    path = _usa_file(tmp_path, 25)
    seen: list[tuple[Path, int, int]] = []
    sink = MemorySink()

    def guard(file: Path, oldest: int, newest: int) -> None:
        seen.append((file, oldest, newest))
        assert sink.readings == [], "published before the guard ran"

    HistoryLoader(sink, load_mapping("dc-usa"), LoadState(tmp_path / "a.json"), chunk_rows=10, progress=False,
                  guard=guard).load(path)
    assert seen == [(path, 1717236000_000, 1717236009_000)] and len(sink.readings) == 25

    def refuse(file: Path, oldest: int, newest: int) -> None:
        msg = "too old"
        raise RetentionError(msg)

    refused, state = MemorySink(), tmp_path / "b.json"
    with pytest.raises(RetentionError, match="too old"):
        HistoryLoader(refused, load_mapping("dc-usa"), LoadState(state), chunk_rows=10, progress=False,
                      guard=refuse).load(path)
    assert refused.readings == [] and refused.dead == [] and refused.flushes == 0 and not state.exists()


def _fake_influx_admin(monkeypatch: pytest.MonkeyPatch, retention: int | None) -> None:
    # The retention InfluxDB would answer (the lookup itself is checked against the real server in test_stack).
    monkeypatch.setattr(influx_admin, "bucket_retention_s", lambda settings, bucket: retention)


def test_retention_guard_refuses_data_older_than_the_bucket_keeps(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    old = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    recent = int((datetime.now(tz=UTC) - timedelta(days=1)).timestamp() * 1000)
    _fake_influx_admin(monkeypatch, 90 * 86400)
    guard = RetentionGuard(settings, "aggregates")
    guard(Path("new.csv"), recent, recent)
    with pytest.raises(RetentionError) as refused:
        guard(Path("old.csv"), old, old + 1000)
    text = str(refused.value)
    assert "old.csv: not loaded" in text and "2024-01-01 00:00:00 UTC" in text and "90-day retention" in text
    assert "'aggregates'" in text and "--topic mw.history.readings --bucket history" in text
    _fake_influx_admin(monkeypatch, 0)  # kept forever
    RetentionGuard(settings, HISTORY_BUCKET)(Path("old.csv"), old, old)
    _fake_influx_admin(monkeypatch, None)  # cannot be read: a warning, not a refusal
    with caplog.at_level(logging.WARNING):
        RetentionGuard(settings, "aggregates")(Path("old.csv"), old, old)
    assert any("not checking the data against the retention of InfluxDB bucket 'aggregates'" in m
               for m in caplog.messages)


def test_topic_names_are_checked() -> None:
    base = {"files": ["x"], "mapping": "servers"}
    assert HistoryConfig.model_validate({**base, "topic": HISTORY_TOPIC}).topic == HISTORY_TOPIC
    with pytest.raises(ValueError, match="carries window results, not readings"):
        HistoryConfig.model_validate({**base, "topic": "mw.aggregates"})
    with pytest.raises(ValueError, match="is not a Kafka topic name"):
        HistoryConfig.model_validate({**base, "topic": "my topic"})


def test_cli_options_override_the_config_file_and_constants_merge(tmp_path: Path) -> None:
    conf = tmp_path / "h.conf"
    conf.write_text('[history]\nfiles = ["a.csv"]\nmapping = "servers"\ntopic = "mw.history.readings"\n'
                    '[history.constants]\ndevice = "pump-1"\nsite = "plant-1"\n')
    settings = Settings(_env_file=None, state_dir=tmp_path)  # type: ignore[call-arg]

    def config(*argv: str) -> HistoryConfig:
        args = build_parser().parse_args(["ingest", "history", "--config", str(conf), *argv])
        return history_cli.config_from(args, settings)

    plain = config()
    assert (plain.topic, plain.bucket, plain.constants) == (HISTORY_TOPIC, "aggregates",
                                                           {"device": "pump-1", "site": "plant-1"})
    assert plain.state_file == tmp_path / "history-state.json"
    given = config("--set", "device=pump-7", "--set", "region=eu", "--topic", "mw.other", "--bucket", "history")
    assert given.constants == {"device": "pump-7", "site": "plant-1", "region": "eu"}
    assert (given.topic, given.bucket) == ("mw.other", "history")
    assert given.load_mapping().constants() == {"device": "pump-7", "site": "plant-1", "region": "eu"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "history", "--set", "device"])
    with pytest.raises(ValueError, match="'colour' is not a field a mapping can set"):
        config("--set", "colour=red").load_mapping()
    with pytest.raises(RuntimeError, match="carries dead letters"):
        config("--topic", "mw.deadletter")
    assert isinstance(build_parser().parse_args(["ingest", "history"]), argparse.Namespace)
