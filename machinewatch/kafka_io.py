"""The one Kafka publisher every simulator and collector uses, plus the dead-letter path.

acks=all with the idempotent producer, batching and compression; a failed send is counted and
raised by ``flush()``, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaProducer

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.record import Reading

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """At least one record was not acknowledged by the broker after the producer's retries."""


class Publisher:
    """Serialises canonical readings to the readings topic, keyed by device id."""

    def __init__(self, settings: Settings, topic: str = names.TOPIC_READINGS, **overrides: Any) -> None:
        self.topic = topic
        config: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_servers,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 20,
            "batch_size": 256 * 1024,
            "compression_type": "zstd",
            "retries": 2**31 - 1,
            "delivery_timeout_ms": 120_000,
            "client_id": "machinewatch-publisher",
        }
        config.update(overrides)
        self._producer = KafkaProducer(**config)
        self._lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.dead_lettered = 0
        self._errors: list[str] = []

    def _on_ok(self, _meta: Any) -> None:
        with self._lock:
            self.acked += 1

    def _on_error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if len(self._errors) < 10:
                self._errors.append(repr(exc))
        log.error("kafka send failed: %r", exc)

    def send(self, reading: Reading) -> Any:
        """Queue one reading; returns the producer future (its metadata names the partition)."""
        future = self._producer.send(self.topic, key=reading.device_id.encode(), value=reading.to_json())
        future.add_callback(self._on_ok).add_errback(self._on_error)
        self.sent += 1
        return future

    def send_many(self, readings: Iterable[Reading]) -> int:
        count = 0
        for reading in readings:
            self.send(reading)
            count += 1
        return count

    def send_json(self, key: str, value: bytes, topic: str | None = None) -> Any:
        """Queue an already serialised record (e.g. a DeviceEvent) keyed by ``key``; default topic is ours.

        Same producer, acks and failure accounting as ``send``, so ``flush()`` covers both.
        """
        future = self._producer.send(topic or self.topic, key=key.encode(), value=value)
        future.add_callback(self._on_ok).add_errback(self._on_error)
        self.sent += 1
        return future

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "") -> None:
        """Send a payload that failed validation, with the reason, to the dead-letter topic."""
        payload = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        doc = {
            "source": source, "origin": origin, "reason": reason,
            "raw": payload[:65536], "truncated": len(payload) > 65536,
            "received_ms": int(time.time() * 1000),
        }
        future = self._producer.send(names.TOPIC_DEAD_LETTER, key=source.encode(), value=json.dumps(doc).encode())
        future.add_callback(self._on_ok).add_errback(self._on_error)
        self.sent += 1
        self.dead_lettered += 1
        log.warning("dead-lettered a %s record from %s: %s", source, origin or "?", reason)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued record; raise PublishError if any was not acknowledged."""
        self._producer.flush(timeout=timeout)
        with self._lock:
            if self.failed:
                msg = f"{self.failed} of {self.sent} records were not acknowledged: {self._errors}"
                raise PublishError(msg)

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self.close()
