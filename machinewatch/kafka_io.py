"""The one Kafka publisher every simulator and collector uses, plus the dead-letter path.

acks=all with the idempotent producer, batching and compression; a failed send is counted and
raised by ``flush()``, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
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
            **settings.kafka_client_config(),
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
        self.max_future_ms = round(settings.max_future_skew_s * 1000)
        self._recent_ids: OrderedDict[str, None] = OrderedDict()
        self._recent_max = settings.dedup_recent_ids
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
        """Queue one reading; returns the producer future (its metadata names the partition).

        A reading stamped more than ``max_future_skew_s`` ahead of this clock goes to the dead-letter
        topic instead (the returned future is then the dead letter's): a clock that is wrong by a day
        would otherwise move the jobs' watermarks a day ahead and make every correct reading late.
        """
        ahead_ms = reading.ts - time.time() * 1000
        if ahead_ms > self.max_future_ms:
            reason = (
                f"event time {reading.time.isoformat()} is {ahead_ms / 1000:.0f} s in the future "
                f"(max_future_skew_s={self.max_future_ms / 1000:g}); it would push the watermark ahead"
            )
            return self.dead_letter(reading.source, reading.to_json(), reason, reading.device_id)
        if self._recent_max:
            with self._lock:
                repeat = reading.event_id in self._recent_ids
                if not repeat:
                    self._recent_ids[reading.event_id] = None
                    if len(self._recent_ids) > self._recent_max:
                        self._recent_ids.popitem(last=False)
            if repeat:
                reason = f"duplicate event_id {reading.event_id}: this collector already sent it"
                return self.dead_letter(reading.source, reading.to_json(), reason, reading.device_id)
        future = self._producer.send(self.topic, key=reading.device_id.encode(), value=reading.to_json())
        future.add_callback(self._on_ok).add_errback(self._on_error)
        if self._recent_max:
            # A send that failed may be retried by the caller: it is not a duplicate then.
            future.add_errback(lambda _exc, eid=reading.event_id: self._forget(eid))
        self.sent += 1
        return future

    def _forget(self, event_id: str) -> None:
        with self._lock:
            self._recent_ids.pop(event_id, None)

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

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "") -> Any:
        """Send a payload that failed validation, with the reason, to the dead-letter topic (returns its future)."""
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
        return future

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


class DeadLetters:
    """Dead-lettering for consumers that rarely need it: the producer is made on first use, and each
    dead letter is flushed at once, so it is acknowledged before the consumer commits past it."""

    def __init__(self, settings: Settings, source: str) -> None:
        self.settings = settings
        self.source = source
        self._publisher: Publisher | None = None

    def send(self, raw: bytes | str, reason: str, origin: str) -> None:
        if self._publisher is None:
            self._publisher = Publisher(self.settings, topic=names.TOPIC_DEAD_LETTER)
        self._publisher.dead_letter(self.source, raw, reason, origin)
        self._publisher.flush()

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
