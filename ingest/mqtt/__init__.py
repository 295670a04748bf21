"""MQTT collector plugin: subscribes to a broker with a persistent QoS 1 session and publishes canonical readings.

Registered as ``mqtt`` under the ``machinewatch.collectors`` entry points; written only against the core's
contract (``machinewatch.runtime``, ``machinewatch.plugins``, ``machinewatch.record``). paho-mqtt is imported
when the collector runs, not when the registry lists it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest.mqtt.config import MqttSettings
from machinewatch.config import Settings
from machinewatch.plugins import Collector
from machinewatch.runtime import Source


def _make_source(config: Any, _settings: Settings) -> Source:
    from ingest.mqtt.source import MqttSource

    return MqttSource(config)


plugin = Collector(
    name="mqtt",
    summary="subscribe to an MQTT broker (QoS 1, persistent session) and publish the messages as readings",
    description="Subscribes to the topic filters of the [[mqtt.subscription]] tables with a persistent session "
    "(MQTT 5 clean_start=False and a session expiry, or MQTT 3.1.1 clean_session=False), maps each message's "
    "topic levels and JSON fields to readings, and acknowledges a message only after Kafka acknowledged its "
    "readings: a collector killed at any moment loses nothing, and what it publishes twice carries the same "
    "event ids. Payloads that do not become readings go to the dead-letter topic with the reason and their "
    "exact bytes. See ingest/mqtt/README.md and sample.conf.",
    settings_model=MqttSettings,
    make_source=_make_source,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
)
