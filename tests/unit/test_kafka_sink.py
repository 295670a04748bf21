"""The Publisher as the runner's sink and dead-letter output, without a broker: refusals come back as data,
unacknowledged records are sent again by the next flush, which raises TransientError until all are acknowledged."""

from __future__ import annotations

import time
from typing import Any

import pytest

from machinewatch import kafka_io, names, quality
from machinewatch.config import Settings
from machinewatch.runtime import Rejected, TransientError
from tests.unit.test_publisher_guards import FakeProducer, reading


@pytest.fixture
def publisher(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> kafka_io.Publisher:
    monkeypatch.setattr(kafka_io, "KafkaProducer", FakeProducer)
    pub = kafka_io.Publisher(Settings(state_dir=tmp_path, max_future_skew_s=300, dedup_recent_ids=100))
    pub._producer.flush = lambda timeout=None: None
    return pub


def test_refusals_are_returned_as_rejected_with_the_readings_bytes(publisher: kafka_io.Publisher) -> None:
    now = int(time.time() * 1000)
    sink = kafka_io.PublisherSink(publisher)
    ok, tomorrow = reading(now - 1000), reading(now + 86_400_000)
    refused = sink.write([ok, tomorrow, ok])
    assert [r.reason.split(" ")[0] for r in refused] == ["event", "duplicate"]
    assert refused[0].raw == tomorrow.to_json()
    assert refused[0].origin == "d1"
    producer: FakeProducer = publisher._producer
    assert [t for t, _ in producer.sent] == [names.TOPIC_READINGS]  # the runner dead-letters the refusals


def test_flush_raises_until_every_record_is_acknowledged_and_resends_the_failed_ones(
        publisher: kafka_io.Publisher) -> None:
    now = int(time.time() * 1000) - 60_000
    sink = kafka_io.PublisherSink(publisher)
    producer: FakeProducer = publisher._producer
    sink.write([reading(now, "d1"), reading(now, "d2")])
    producer.futures[0].success(None)
    producer.futures[1].failure(RuntimeError("not enough replicas"))
    with pytest.raises(TransientError, match="1 of 2 records"):
        sink.flush()
    # The next flush sends d2 again (not a duplicate: its id was forgotten when it failed).
    producer.flush = lambda timeout=None: producer.futures[-1].success(None)
    sink.flush()
    assert [doc["device_id"] for _, doc in producer.sent] == ["d1", "d2", "d2"]


def test_a_record_the_producer_could_not_queue_is_sent_by_the_next_flush(publisher: kafka_io.Publisher) -> None:
    now = int(time.time() * 1000) - 60_000
    sink = kafka_io.PublisherSink(publisher)
    producer: FakeProducer = publisher._producer
    producer.fail_next = True
    assert sink.write([reading(now)]) == []
    assert producer.sent == []
    producer.flush = lambda timeout=None: producer.futures[-1].success(None)
    sink.flush()
    assert len(producer.sent) == 1


def test_dead_letters_carry_the_exact_bytes_and_are_sent_again_until_acknowledged(
        publisher: kafka_io.Publisher) -> None:
    letters = kafka_io.KafkaDeadLetters(publisher)
    producer: FakeProducer = publisher._producer
    raw = b"\xff\xfe not utf-8"
    letters.send("mqtt", Rejected(raw, "not JSON", "mqtt://h:1/a/b"))
    topic, doc = producer.sent[0]
    assert topic == names.TOPIC_DEAD_LETTER
    assert quality.raw_bytes(doc) == raw
    assert (doc["source"], doc["reason"], doc["origin"]) == ("mqtt", "not JSON", "mqtt://h:1/a/b")
    producer.futures[0].failure(RuntimeError("gone"))
    with pytest.raises(TransientError, match="1 of 1 dead letters"):
        letters.flush()
    producer.flush = lambda timeout=None: producer.futures[-1].success(None)
    letters.flush()
    assert len(producer.sent) == 2
    assert quality.raw_bytes(producer.sent[1][1]) == raw


def test_one_sink_routes_each_record_kind_to_its_topic_and_resends_a_failed_note(
        publisher: kafka_io.Publisher) -> None:
    now = int(time.time() * 1000) - 60_000
    sink = kafka_io.PublisherSink(publisher)
    producer: FakeProducer = publisher._producer
    note = kafka_io.QualityNote("perfmon", "zone-assumed", b"\xff header", "zone from the file name", "f.csv", "n1")
    assert sink.write([reading(now), note]) == []
    assert [t for t, _ in producer.sent] == [names.TOPIC_READINGS, names.TOPIC_QUALITY]
    doc = producer.sent[1][1]
    assert (doc["kind"], doc["note_id"], doc["source"]) == ("zone-assumed", "n1", "perfmon")
    assert quality.raw_bytes(doc) == b"\xff header"
    producer.futures[0].success(None)
    producer.futures[1].failure(RuntimeError("broker away"))
    with pytest.raises(TransientError, match="1 of 2 records"):
        sink.flush()
    producer.flush = lambda timeout=None: producer.futures[-1].success(None)
    sink.flush()
    assert [t for t, _ in producer.sent] == [names.TOPIC_READINGS, names.TOPIC_QUALITY, names.TOPIC_QUALITY]
    with pytest.raises(TypeError, match="Reading and QualityNote"):
        sink.write([object()])


def test_device_events_go_to_their_own_topic(publisher: kafka_io.Publisher) -> None:
    from machinewatch.device_events import DeviceEvent

    now = int(time.time() * 1000) - 60_000
    sink = kafka_io.PublisherSink(publisher, device_events_topic="t-events")
    producer: FakeProducer = publisher._producer
    event = DeviceEvent(source="mtconnect", device_id="CNC01", kind="observation", ts=now, event_id="e1",
                        category="EVENT", item="avail", item_type="AVAILABILITY", value="UNAVAILABLE")
    assert sink.write([event, reading(now)]) == []
    assert [t for t, _ in producer.sent] == ["t-events", names.TOPIC_READINGS]
    assert producer.sent[0][1] == event.to_dict()
