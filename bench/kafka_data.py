"""The benchmarks' Kafka side: topics, fast producers, the canonical readings of the backlog and the load, and
reading result topics back."""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

from machinewatch.config import Settings
from machinewatch.record import Reading, make_event_id


def create_topic(settings: Settings, topic: str, partitions: int, append_time: bool = False) -> None:
    """``append_time``: records carry the broker's clock when appended (LogAppendTime), not the writer's
    timestamp (Flink's sink stamps them with event time): what times an engine to its last output record."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        if topic not in admin.list_topics():
            configs = {"message.timestamp.type": "LogAppendTime"} if append_time else {}
            admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        admin.close()


def output_state(settings: Settings, topics: list[str]) -> tuple[int, int | None]:
    """(records in ``topics``, broker append time in epoch ms of the newest of them, None if none).

    The topics must have been created with ``append_time``: a record with another kind of timestamp raises,
    so an engine is never timed by a clock it set itself.
    """
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_servers, "group.id": f"bench-tail-{time.time_ns()}",
                         "enable.auto.commit": False})
    try:
        total, newest = 0, None
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += high - low
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, p, high - 1)])
                msg = None
                deadline = time.monotonic() + 10
                while msg is None and time.monotonic() < deadline:
                    msg = consumer.poll(0.5)
                    if msg is not None and msg.error():
                        msg = None
                if msg is None:
                    err = f"could not read the last record of {topic}[{p}]"
                    raise RuntimeError(err)
                kind, ts = msg.timestamp()
                if kind != TIMESTAMP_LOG_APPEND_TIME:
                    err = f"{topic} has no LogAppendTime timestamps (create it with append_time=True)"
                    raise RuntimeError(err)
                newest = ts if newest is None else max(newest, ts)
        return total, newest
    finally:
        consumer.close()


def wait_output_done(settings: Settings, topics: list[str], quiet_s: float = 5.0, first_s: float = 120,
                     timeout: float = 300) -> dict[str, Any]:
    """Wait until ``topics`` have had no new record for ``quiet_s``; their record count and the broker time of
    the last one (what ends the one clock both engines are timed by). Nothing written yet is not quiet: that is
    waited for up to ``first_s`` (a job still busy with the backlog it has read)."""
    start = time.monotonic()
    deadline = start + timeout
    last: tuple[int, int | None] = (-1, None)
    stable_since = start
    while time.monotonic() < deadline:
        state = output_state(settings, topics)
        now = time.monotonic()
        if state != last:
            last, stable_since = state, now
        elif now - stable_since >= quiet_s and (state[0] > 0 or now - start >= first_s):
            break
        time.sleep(0.5)
    else:
        err = f"{topics} still growing after {timeout:.0f}s"
        raise RuntimeError(err)
    return {"records": last[0], "last_ms": last[1], "quiet_s": quiet_s}


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


def preload(settings: Settings, topic: str, events: int, devices: int, hot_devices: int = 20,
            hover_fraction: float = 0.0, stats: dict[str, Any] | None = None) -> float:
    """``events`` readings of ``devices`` devices, one per device per second of event time; returns seconds.

    ``hot_devices`` overheat for good from a third of the way on. With ``hover_fraction`` that share of the
    devices instead hovers around the overheat threshold: a 120 s swing of ±8 °C about threshold − 1 °C (each
    device at its own phase), so each crosses it every two minutes and cools below the hysteresis in between;
    the prefilter's typical case rather than its best. ``stats`` gets the overheat ratio: the share of readings
    at or above the threshold.
    """
    create_topic(settings, topic, settings.kafka_partitions)
    rng = random.Random(7)
    steps = -(-events // devices)
    start_ms = (int(time.time()) - steps - 60) * 1000
    temps = [55 + rng.uniform(-5, 5) for _ in range(devices)]
    hovering = int(devices * hover_fraction)
    threshold = settings.overheat_threshold_c
    phase = [rng.uniform(0, 2 * math.pi) for _ in range(hovering)]
    prod = producer(settings)
    t0 = time.monotonic()
    sent = over = 0
    for step in range(steps):
        ts = start_ms + step * 1000
        for i in range(devices):
            if sent == events:
                break
            temps[i] += rng.gauss(0, 0.8) + (55 - temps[i]) * 0.05
            if i < hovering:
                value = threshold - 1 + 8 * math.sin(2 * math.pi * step / 120 + phase[i]) + rng.gauss(0, 0.3)
            else:
                hot = 40 if i < hot_devices and step >= steps // 3 else 0  # some devices overheat for good
                value = temps[i] + hot
            value = round(value, 3)
            over += value >= threshold
            device = f"dev-{i:06d}"
            produce(prod, topic, device.encode(), reading_json(device, value, ts))
            sent += 1
            if sent % 20_000 == 0:
                prod.poll(0)
    prod.flush(300)
    if stats is not None:
        stats.update({"readings": sent, "over_threshold": over, "overheat_ratio": over / max(sent, 1),
                      "hover_devices": hovering, "threshold_c": threshold})
    return time.monotonic() - t0


def end_offsets(settings: Settings, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka_client_config())
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def read_alerts(settings: Settings, topic: str, since_ms: int | None = None) -> list[dict[str, Any]]:
    """Every record of ``topic`` (JSON), from the start to the end offsets at call time; with ``since_ms`` only
    those the broker appended from then on (a topic written by several runs: the last run's records)."""
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
            if since_ms is None or msg.timestamp()[1] >= since_ms:
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
