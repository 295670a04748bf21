"""Helpers for tests that start a real stack of their own (free loopback ports)."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from machinewatch.config import Settings


def create_topics(settings: Settings, topics: Iterable[str]) -> None:
    """A test's own topics, so its event times never meet another test's watermark."""
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        admin.create_topics([NewTopic(t, settings.kafka_partitions, 1) for t in topics])
    finally:
        admin.close()
