"""The Publisher's guards, without a broker: future-dated readings and repeated event ids go to the
dead-letter topic; a failed send may be retried without being taken for a duplicate."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from machinewatch import kafka_io, names
from machinewatch.config import Settings
from machinewatch.record import Reading, make_event_id


class FakeFuture:
    def __init__(self) -> None:
        self.errbacks: list[Any] = []

    def add_callback(self, fn: Any) -> FakeFuture:
        return self

    def add_errback(self, fn: Any) -> FakeFuture:
        self.errbacks.append(fn)
        return self


class FakeProducer:
    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.futures: list[FakeFuture] = []

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append((topic, json.loads(value)))
        self.futures.append(FakeFuture())
        return self.futures[-1]


@pytest.fixture
def publisher(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> kafka_io.Publisher:
    monkeypatch.setattr(kafka_io, "KafkaProducer", FakeProducer)
    return kafka_io.Publisher(Settings(state_dir=tmp_path, max_future_skew_s=300, dedup_recent_ids=3))


def reading(ts: int, device: str = "d1") -> Reading:
    return Reading(source="unit", device_id=device, metric="temperature", value=1.0, unit="°C", ts=ts,
                   event_id=make_event_id("unit", device, ts))


def test_a_reading_from_tomorrow_is_dead_lettered(publisher: kafka_io.Publisher) -> None:
    now = int(time.time() * 1000)
    publisher.send(reading(now + 200_000))        # within the allowed skew
    publisher.send(reading(now + 86_400_000))     # tomorrow
    producer: FakeProducer = publisher._producer
    topics = [t for t, _ in producer.sent]
    assert topics == [names.TOPIC_READINGS, names.TOPIC_DEAD_LETTER]
    assert "in the future" in producer.sent[1][1]["reason"]
    assert publisher.dead_lettered == 1


def test_a_repeated_event_id_is_dead_lettered_unless_the_first_send_failed(publisher: kafka_io.Publisher) -> None:
    now = int(time.time() * 1000) - 60_000
    producer: FakeProducer = publisher._producer
    publisher.send(reading(now))
    publisher.send(reading(now))
    assert [t for t, _ in producer.sent] == [names.TOPIC_READINGS, names.TOPIC_DEAD_LETTER]
    assert "duplicate event_id" in producer.sent[1][1]["reason"]
    # The first send fails: the caller may send it again and it is published, not dead-lettered.
    for errback in producer.futures[0].errbacks:
        errback(RuntimeError("broker gone"))
    publisher.send(reading(now))
    assert producer.sent[-1][0] == names.TOPIC_READINGS
    # The memory is bounded: an id older than the last N is forgotten.
    for i in range(1, 5):
        publisher.send(reading(now + i))
    publisher.send(reading(now))
    assert producer.sent[-1][0] == names.TOPIC_READINGS
