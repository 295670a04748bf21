"""Helpers for tests that start a real stack of their own (free loopback ports)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from machinewatch.config import Settings


def create_topics(settings: Settings, topics: Iterable[str]) -> None:
    """A test's own topics, so its event times never meet another test's watermark."""
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        admin.create_topics([NewTopic(t, settings.kafka_partitions, 1) for t in topics])
    finally:
        admin.close()


def read_messages(settings: Settings, topic: str) -> list[Any]:
    """Every message of ``topic`` from the beginning (all partitions), without joining a group."""
    consumer = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return list(consumer)
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """The JSON records of ``topic`` from the beginning (tombstones left out)."""
    return [json.loads(m.value) for m in read_messages(settings, topic) if m.value is not None]
