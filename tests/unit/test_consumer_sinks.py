"""The InfluxDB writer, the notifier and the archiver as sinks on the one runner, without Kafka or InfluxDB:
what they refuse becomes dead letters with the exact bytes, and offsets are committed only after they flushed."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka.structs import TopicPartition
from pydantic import SecretStr

from machinewatch import kafka_io, names, quality
from machinewatch.archive import partition_dir, read_archive
from machinewatch.config import Settings
from machinewatch.record import Reading, make_event_id
from sinks.archiver import Archiver
from sinks.influxdb_writer import InfluxWriter, Topics, WritesStopped, window_line
from sinks.notifier import Notifier
from tests.unit.test_influx_writer import RESULT, _FakeWriteService
from tests.unit.test_kafka_source import AckingProducer, FakeConsumer, Msg

FAST = {"flush_interval_s": 0.01, "poll_timeout_s": 0.01, "retry_min_s": 0.001, "retry_max_s": 0.004}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path, influx_write_token=SecretStr("unit-token"))


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> list[AckingProducer]:
    made: list[AckingProducer] = []

    def producer(**config: Any) -> AckingProducer:
        made.append(AckingProducer(**config))
        return made[-1]

    monkeypatch.setattr(kafka_io, "KafkaProducer", producer)
    return made


def letters(producers: list[AckingProducer]) -> list[dict[str, Any]]:
    return [doc for p in producers for topic, doc in p.sent if topic == names.TOPIC_DEAD_LETTER]


def test_the_writer_writes_results_dead_letters_the_rest_and_commits_after_writing(
        monkeypatch: pytest.MonkeyPatch, settings: Settings, producers: list[AckingProducer],
        caplog: pytest.LogCaptureFixture) -> None:
    topic = names.TOPIC_AGGREGATES
    result = {**RESULT, "window_end_ms": int(time.time() * 1000) // 1000 * 1000 - 60_000}
    consumer = FakeConsumer([{TopicPartition(topic, 0): [
        Msg(topic, 0, 7, json.dumps(result).encode()), Msg(topic, 0, 8, b"{\xff"), Msg(topic, 0, 9, None),
        Msg(topic, 0, 10, json.dumps({**RESULT, "device_id": "old", "window_end_ms": 1000}).encode()),
    ]}])
    monkeypatch.setattr(kafka_io, "KafkaConsumer", consumer)
    writer = InfluxWriter(settings, group_id="w-unit", routes=Topics().routes())
    api = _FakeWriteService([])
    writer.write_service = api  # type: ignore[assignment]
    writer.retention_s = lambda bucket: 3600  # type: ignore[method-assign]
    writer.options = writer.options.model_copy(update=FAST)
    api_posts_before_commit: list[int] = []
    consumer.on_commit = lambda: api_posts_before_commit.append(api.requests)
    with caplog.at_level("INFO", logger="sinks.influxdb_writer"):
        writer.run(idle_exit_s=0.3)
    assert consumer.config["group_id"] == "w-unit" and set(consumer.topics) == set(Topics().routes())
    assert api.stored == [window_line(result)]
    assert consumer.commits == [{TopicPartition(topic, 0): 11}] and api_posts_before_commit == [1]
    bad, old = letters(producers)
    assert (bad["source"], bad["origin"], quality.raw_bytes(bad)) == ("influx-writer", f"{topic}/0@8", b"{\xff")
    assert "not JSON" in bad["reason"]
    assert old["origin"] == f"bucket {names.BUCKET_AGGREGATES}" and "older than bucket" in old["reason"]
    assert quality.raw_bytes(old).startswith(b"window_agg,device_id=old,")
    assert (writer.written, writer.rejected) == (1, 2)
    assert "written 1 points so far (2 dead-lettered, never written)" in caplog.text


def test_the_writer_stops_while_influxdb_is_away_without_committing(
        monkeypatch: pytest.MonkeyPatch, settings: Settings, producers: list[AckingProducer]) -> None:
    topic = names.TOPIC_AGGREGATES
    consumer = FakeConsumer([{TopicPartition(topic, 0): [Msg(topic, 0, 0, json.dumps(RESULT).encode())]}])
    monkeypatch.setattr(kafka_io, "KafkaConsumer", consumer)
    writer = InfluxWriter(settings, routes=Topics().routes())
    writer.write_service = _FakeWriteService([ConnectionError("refused")] * 10**6)  # type: ignore[assignment]
    writer.retention_s = lambda bucket: None  # type: ignore[method-assign]
    writer.options = writer.options.model_copy(update=FAST)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            writer.run()
        except WritesStopped as exc:  # raised by the flush that waited for the writer thread's last write
            failure.append(exc.__cause__ or exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)
    writer.stop_event.set()
    thread.join(10)
    # As without the writer thread: the write's error ends the run, nothing committed.
    assert not thread.is_alive() and failure and isinstance(failure[0], ConnectionError)
    assert consumer.commits == [] and consumer.closed


def test_the_notifier_dead_letters_what_is_not_an_alert_and_delivers_each_alert_once(
        monkeypatch: pytest.MonkeyPatch, settings: Settings, producers: list[AckingProducer]) -> None:
    alert = {"alert_id": "a1", "state": "opened", "kind": "sustained_overheat", "device_id": "d1", "ts": 1}
    topic = "alerts"
    polls: list[Any] = [{TopicPartition(topic, 0): [
        Msg(topic, 0, 0, json.dumps(alert).encode()), Msg(topic, 0, 1, b"not json"), Msg(topic, 0, 2, b"[1]"),
        Msg(topic, 0, 3, json.dumps(alert).encode()), Msg(topic, 0, 4, None)]}]
    sent: list[str] = []

    class Channel:
        name = "unit"

        def send(self, doc: dict[str, Any]) -> None:
            sent.append(doc["alert_id"])

    consumer = FakeConsumer(polls)
    monkeypatch.setattr(kafka_io, "KafkaConsumer", consumer)
    notifier = Notifier(settings, channels=[Channel()], topic=topic, ledger_path=settings.state_dir / "ledger.sqlite")
    notifier.options = notifier.options.model_copy(update=FAST)
    notifier.run(idle_exit_s=0.3)
    assert sent == ["a1"] and (notifier.delivered, notifier.skipped, notifier.rejected) == (1, 1, 2)
    assert consumer.commits == [{TopicPartition(topic, 0): 5}]
    got = [(d["source"], d["origin"], quality.raw_bytes(d)) for d in letters(producers)]
    assert got == [("notifier", "alerts/0@1", b"not json"), ("notifier", "alerts/0@2", b"[1]")]
    # The same alert read again (a restart, a new group) is not delivered again: the ledger outlived the run.
    consumer2 = FakeConsumer([{TopicPartition(topic, 0): [Msg(topic, 0, 0, json.dumps(alert).encode())]}])
    monkeypatch.setattr(kafka_io, "KafkaConsumer", consumer2)
    again = Notifier(settings, channels=[Channel()], topic=topic, ledger_path=settings.state_dir / "ledger.sqlite")
    again.options = notifier.options
    again.run(idle_exit_s=0.3)
    assert sent == ["a1"] and again.skipped == 1


def reading(ts: int, device: str = "d1") -> Reading:
    return Reading(source="unit", device_id=device, metric="temperature", value=20.5, unit="°C", ts=ts,
                   event_id=make_event_id("unit", device, ts))


def test_the_archiver_commits_only_after_its_files_are_on_disk_and_a_failed_file_is_retried(
        monkeypatch: pytest.MonkeyPatch, settings: Settings, producers: list[AckingProducer], tmp_path: Path) -> None:
    hour = 3_600_000
    base = 1_700_000_000_000 // hour * hour
    rows = [reading(base + 1000), reading(base + hour + 1000), reading(base + 2000)]
    topic = "readings"
    consumer = FakeConsumer([{TopicPartition(topic, 1): [Msg(topic, 1, 20 + n, r.to_json()) for n, r in enumerate(rows)]
                              + [Msg(topic, 1, 23, b'{"not": "a reading"}')]}])
    monkeypatch.setattr(kafka_io, "KafkaConsumer", consumer)
    root = tmp_path / "archive"
    archiver = Archiver(settings, root, topic=topic, max_rows=100, max_age_s=0.01)
    archiver.options = archiver.options.model_copy(update=FAST)
    from sinks import archiver as archiver_mod

    real_write, failures = archiver_mod.write_file, [OSError("disk full")]
    second_hour = partition_dir(root, base + hour)
    files_at_commit: list[int] = []

    def write_file(path: Path, data: list[dict[str, Any]]) -> None:
        if path.parent == second_hour and failures:  # the second file fails once, after the first was written
            raise failures.pop()
        real_write(path, data)

    monkeypatch.setattr(archiver_mod, "write_file", write_file)
    consumer.on_commit = lambda: files_at_commit.append(len(list(root.rglob("*.parquet"))))
    archiver.run(idle_exit_s=0.3)
    assert consumer.commits == [{TopicPartition(topic, 1): 24}] and files_at_commit == [2]
    assert sorted(p.name for p in root.rglob("*.parquet")) == ["part-1-000000000020-000000000022.parquet",
                                                                "part-1-000000000021-000000000021.parquet"]
    assert sorted(r.event_id for r in read_archive(root)) == sorted(r.event_id for r in rows)
    assert (archiver.archived, len(archiver.files), archiver.rejected) == (3, 2, 1)
    [letter] = letters(producers)
    assert (letter["source"], letter["origin"], quality.raw_bytes(letter)) == (
        "archiver", "readings/1@23", b'{"not": "a reading"}')

