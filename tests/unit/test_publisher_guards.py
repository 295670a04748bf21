"""The Publisher's guards, without a broker: future-dated readings and repeated event ids go to the
dead-letter topic; a failed send may be retried without being taken for a duplicate."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kafka.future import Future

from machinewatch import kafka_io, names
from machinewatch.config import Settings
from machinewatch.record import Reading, make_event_id


class FakeProducer:
    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.futures: list[Future] = []
        self.fail_next = False

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        if self.fail_next:
            self.fail_next = False
            msg = "no metadata within max_block_ms"
            raise TimeoutError(msg)
        self.sent.append((topic, json.loads(value)))
        self.futures.append(Future())
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
    producer.futures[0].failure(RuntimeError("broker gone"))
    publisher.send(reading(now))
    assert producer.sent[-1][0] == names.TOPIC_READINGS
    # The memory is bounded: an id older than the last N is forgotten.
    for i in range(1, 5):
        publisher.send(reading(now + i))
    publisher.send(reading(now))
    assert producer.sent[-1][0] == names.TOPIC_READINGS


def test_a_failed_send_is_counted_raised_by_flush_and_may_be_retried(publisher: kafka_io.Publisher) -> None:
    now = int(time.time() * 1000) - 60_000
    producer: FakeProducer = publisher._producer
    producer.flush = lambda timeout=None: None  # type: ignore[attr-defined]
    publisher.send(reading(now, "d1"))
    publisher.send(reading(now, "d2"))
    producer.futures[1].failure(RuntimeError("not enough replicas"))
    producer.futures[0].success(None)
    assert (publisher.acked, publisher.failed) == (1, 1)
    assert publisher.acked == 1  # reading the count does not change it
    with pytest.raises(kafka_io.PublishError, match="1 of 2 records"):
        publisher.flush()
    publisher.send(reading(now, "d2"))
    publisher.send(reading(now, "d1"))
    assert [t for t, _ in producer.sent] == [names.TOPIC_READINGS] * 3 + [names.TOPIC_DEAD_LETTER]


def test_a_send_the_producer_refused_is_not_taken_for_a_duplicate(publisher: kafka_io.Publisher) -> None:
    now = int(time.time() * 1000) - 60_000
    producer: FakeProducer = publisher._producer
    producer.fail_next = True
    with pytest.raises(TimeoutError):
        publisher.send(reading(now))
    publisher.send(reading(now))
    assert [t for t, _ in producer.sent] == [names.TOPIC_READINGS]
    assert publisher.sent == 1
