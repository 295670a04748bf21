"""The InfluxDB writer on both Kafka clients (``MW_KAFKA_CLIENT``) on the real broker and InfluxDB: every result
lands once, a message that is not a result is dead-lettered with its exact bytes and where it came from, the
group's offsets are committed at the end of what was written, and a restart resumes there: nothing is read
twice, nothing skipped. The writer writes from a thread of its own while the next poll is decoded, so this also
checks that a commit never runs ahead of the writes."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from machinewatch import names, quality, query
from machinewatch.config import Settings
from machinewatch.stack import Stack
from sinks.influxdb_writer import InfluxWriter, window_line
from tests.stack_support import create_topics
from tests.waiting import poll

pytestmark = pytest.mark.integration
CLIENTS = ("kafka-python", "confluent-kafka")


def _window(run: str, device: int, end_ms: int) -> bytes:
    return json.dumps({
        "device_id": f"wc{run}-{device:04d}", "metric": "temperature", "source": "sim", "region": "r", "site": "s",
        "unit": "°C", "window_ms": 10000, "slide_ms": 10000, "window_start_ms": end_ms - 10000,
        "window_end_ms": end_ms, "avg_value": 50.0 + device / 10, "min_value": 40.0, "max_value": 60.0, "count": 10,
    }).encode()


def _stored(settings: Settings, run: str) -> int:
    flux = f'''
from(bucket: "{names.BUCKET_AGGREGATES}")
  |> range(start: -1h)
  |> filter(fn: (r) => r._field == "count" and r.device_id =~ /^wc{run}-/)
  |> group()
  |> count()'''
    frame = query.run_flux(settings, flux)
    return 0 if frame.empty else int(frame["_value"].sum())


def _letters(settings: Settings, topic: str) -> list[dict[str, object]]:
    consumer = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False)
    try:
        parts = [TopicPartition(names.TOPIC_DEAD_LETTER, p)
                 for p in sorted(consumer.partitions_for_topic(names.TOPIC_DEAD_LETTER) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        docs: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(p) < ends[p] for p in parts) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                docs += [d for m in batch if (d := json.loads(m.value)).get("origin", "").startswith(topic)]
        return docs
    finally:
        consumer.close()


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(**settings.kafka_client_config(), group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(consumer.partitions_for_topic(topic))}
    finally:
        consumer.close()


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(**settings.kafka_client_config())
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: end for tp, end in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_the_writer_on_either_client_writes_each_result_once_and_resumes_after_its_commit(
        stack: Stack, settings: Settings, client: str) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"mw.test-{run}.aggregates"
    create_topics(settings, [topic])
    end = int(time.time()) * 1000
    producer = KafkaProducer(**settings.kafka_client_config())
    bad = b'{"device_id": "not a window result"}'
    for device in range(3000):
        producer.send(topic, key=str(device).encode(), value=_window(run, device, end))
    producer.send(topic, key=b"bad", value=bad)
    producer.flush()
    ours = settings.model_copy(update={"kafka_client": client})
    group = f"w-{run}"

    writer = InfluxWriter(ours, group_id=group, routes={topic: (window_line, names.BUCKET_AGGREGATES)})
    writer.run(idle_exit_s=4)
    assert (writer.written, writer.rejected) == (3000, 1), client
    assert poll(lambda: _stored(settings, run), lambda n: n >= 3000, 60, "the first 3,000 points") == 3000
    assert _committed(settings, group, topic) == _ends(settings, topic), "offsets committed to the end"
    letters = poll(lambda: _letters(settings, topic), bool, 30, "the dead letter")
    assert [quality.raw_bytes(d) for d in letters] == [bad] and "lacks" in str(letters[0]["reason"])

    # Restarted on the same group: only what came after the commit (new devices), each once.
    for device in range(3000, 3500):
        producer.send(topic, key=str(device).encode(), value=_window(run, device, end))
    producer.flush()
    producer.close()
    again = InfluxWriter(ours, group_id=group, routes={topic: (window_line, names.BUCKET_AGGREGATES)})
    again.run(idle_exit_s=4)
    assert (again.written, again.rejected) == (500, 0), client
    assert poll(lambda: _stored(settings, run), lambda n: n >= 3500, 60, "all 3,500 points") == 3500
    assert _committed(settings, group, topic) == _ends(settings, topic)
