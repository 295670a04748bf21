"""Both publisher clients on the real broker (``MW_KAFKA_CLIENT``): kafka-python and the librdkafka backend put
every key on the same partition of a 6-partition topic, every record is acknowledged once and reads back byte for
byte, and the Publisher's guards (dead letters of readings from tomorrow) work on either. A client that chose
partitions any other way (librdkafka's own default, crc32) would split one device's readings from its history."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import Reading, make_event_id
from machinewatch.stack import Stack

pytestmark = pytest.mark.integration
CLIENTS = ("kafka-python", "confluent-kafka")


def _topic(settings: Settings, partitions: int = 6) -> str:
    topic = f"mw.test.clients-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    return topic


def _readings(client: str, devices: int = 300) -> list[Reading]:
    now = int(time.time() * 1000)
    return [Reading(source=f"clients-{client}", device_id=f"dev-{d:04d}", metric="temperature", value=20.0 + d / 10,
                    unit="°C", ts=now - d, event_id=make_event_id(client, d, now)) for d in range(devices)]


def _read_back(settings: Settings, topic: str) -> list[Any]:
    consumer = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        got: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(p) < ends[p] for p in parts) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                got.extend(batch)
        return got
    finally:
        consumer.close()


def test_both_clients_put_each_key_on_the_same_partition_and_deliver_everything(stack: Stack,
                                                                                settings: Settings) -> None:
    topic = _topic(settings)
    partition_of: dict[str, dict[str, int]] = {}
    sent: dict[str, list[Reading]] = {}
    for client in CLIENTS:
        readings = sent[client] = _readings(client)
        with Publisher(settings.model_copy(update={"kafka_client": client}), topic=topic) as pub:
            futures = [pub.send(r) for r in readings]
            pub.flush()
            assert pub.acked == len(readings) and pub.failed == 0, client
        partition_of[client] = {r.device_id: f.get(timeout=30).partition
                                for r, f in zip(readings, futures, strict=True)}
    assert len(set(partition_of["kafka-python"].values())) == 6  # the keys spread over every partition
    assert partition_of["confluent-kafka"] == partition_of["kafka-python"]
    # each record once, byte for byte, on the partition its future named
    got = _read_back(settings, topic)
    stored = {(m.value, m.partition) for m in got}
    assert len(got) == len(stored) == sum(len(v) for v in sent.values())
    for client, readings in sent.items():
        for r in readings:
            assert (r.to_json(), partition_of[client][r.device_id]) in stored, (client, r.device_id)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_reading_from_tomorrow_is_dead_lettered_on_either_client(stack: Stack, settings: Settings,
                                                                    client: str) -> None:
    topic = _topic(settings, partitions=1)
    now = int(time.time() * 1000)
    source = f"tomorrow-{uuid.uuid4().hex[:6]}"
    early = Reading(source=source, device_id="d", metric="temperature", value=1.0, unit="°C", ts=now + 86_400_000,
                    event_id=make_event_id(source, 1))
    with Publisher(settings.model_copy(update={"kafka_client": client}), topic=topic) as pub:
        pub.send(early)
        pub.flush()
        assert (pub.dead_lettered, pub.acked) == (1, 1)
    letters = [m for m in _read_back(settings, names.TOPIC_DEAD_LETTER) if m.key == source.encode()]
    assert len(letters) == 1 and b"in the future" in letters[0].value
