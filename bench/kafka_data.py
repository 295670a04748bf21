"""The benchmarks' Kafka side: topics, fast producers, the canonical readings of the backlog and the load, and
reading result topics back."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from machinewatch.config import Settings
from machinewatch.record import Reading, make_event_id


def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def producer(settings: Settings, linger_ms: int = 20) -> Any:
    from confluent_kafka import Producer

    return Producer({
        "bootstrap.servers": settings.kafka_servers, "acks": "all", "linger.ms": linger_ms,
        "batch.size": 256 * 1024, "compression.type": "zstd", "queue.buffering.max.messages": 500_000,
    })


def produce(prod: Any, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            prod.produce(topic, key=key, value=value)
            return
        except BufferError:
            prod.poll(0.05)


def reading_json(device: str, value: float, ts: int) -> bytes:
    """A canonical reading of the benchmark, encoded by the core's one reading encoder (``Reading.to_json``)."""
    return Reading(source="bench", region=f"r{hash(device) % 5}", site="line-a", device_id=device,
                   metric="temperature", value=value, unit="°C", ts=ts,
                   event_id=make_event_id("bench", device, ts)).to_json()


def preload(settings: Settings, topic: str, events: int, devices: int, hot_devices: int = 20) -> float:
    """``events`` readings of ``devices`` devices, one per device per second of event time; returns seconds."""
    create_topic(settings, topic, settings.kafka_partitions)
    rng = random.Random(7)
    steps = -(-events // devices)
    start_ms = (int(time.time()) - steps - 60) * 1000
    temps = [55 + rng.uniform(-5, 5) for _ in range(devices)]
    prod = producer(settings)
    t0 = time.monotonic()
    sent = 0
    for step in range(steps):
        ts = start_ms + step * 1000
        for i in range(devices):
            if sent == events:
                break
            temps[i] += rng.gauss(0, 0.8) + (55 - temps[i]) * 0.05
            hot = 40 if i < hot_devices and step >= steps // 3 else 0  # some devices overheat for good
            device = f"dev-{i:06d}"
            produce(prod, topic, device.encode(), reading_json(device, round(temps[i] + hot, 3), ts))
            sent += 1
            if sent % 20_000 == 0:
                prod.poll(0)
    prod.flush(300)
    return time.monotonic() - t0


def end_offsets(settings: Settings, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka_client_config())
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def read_alerts(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` (JSON), from the start to the end offsets at call time."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_servers, "group.id": f"bench-read-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        parts = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        docs: list[dict[str, Any]] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            docs.append(json.loads(msg.value() or b"{}"))
            if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                done.add(msg.partition())
        return docs
    finally:
        consumer.close()


def opened_summary(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Distinct transitions (replays give identical records, so (alert_id, state) identifies one) and opens."""
    distinct = {(d.get("alert_id"), d.get("state")): d for d in docs}
    opened: dict[str, int] = {}
    states: dict[str, int] = {}
    for (_, state), d in distinct.items():
        states[str(state)] = states.get(str(state), 0) + 1
        if state == "opened":
            opened[d["device_id"]] = opened.get(d["device_id"], 0) + 1
    return {"transitions": len(docs), "distinct": len(distinct), "by_state": states,
            "opened_devices": sorted(opened), "devices_opened_more_than_once": sorted(k for k, v in opened.items()
                                                                                     if v > 1)}
