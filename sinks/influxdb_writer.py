"""Writes Flink's window results from Kafka into InfluxDB's aggregates bucket, idempotently.

Each result becomes one point timestamped at its window end and tagged by device/metric/site, so
a replay overwrites the same point. Offsets are committed only after InfluxDB accepted the batch:
an InfluxDB outage leaves the results buffered in Kafka (back-pressure), never dropped.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from kafka import KafkaConsumer

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher

log = logging.getLogger(__name__)

_TAGS = ("device_id", "metric", "source", "region", "site", "unit")
_REQUIRED = ("device_id", "metric", "window_ms", "window_end_ms", "avg_value", "min_value", "max_value", "count")


class BadResult(ValueError):
    """A message on the aggregates topic that is not a window result."""


def to_point(doc: dict[str, Any]) -> Point:
    """One window result as an InfluxDB point (time = window end, ms precision)."""
    missing = [k for k in _REQUIRED if doc.get(k) is None]
    if missing:
        msg = f"window result lacks {', '.join(missing)}"
        raise BadResult(msg)
    point = Point(names.MEASUREMENT_WINDOW).tag("window", f"{int(doc['window_ms']) // 1000}s")
    for tag in _TAGS:
        value = doc.get(tag)
        if value:  # InfluxDB has no empty tag values
            point = point.tag(tag, str(value))
    return (
        point.field("avg", float(doc["avg_value"]))
        .field("min", float(doc["min_value"]))
        .field("max", float(doc["max_value"]))
        .field("count", int(doc["count"]))
        .time(int(doc["window_end_ms"]), WritePrecision.MS)
    )


def parse(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"not JSON: {exc}"
        raise BadResult(msg) from exc
    if not isinstance(doc, dict):
        msg = "not a JSON object"
        raise BadResult(msg)
    return doc


class InfluxWriter:
    """Consume the aggregates topic and write every result to InfluxDB with retries."""

    def __init__(self, settings: Settings, group_id: str = "mw-influx-writer") -> None:
        self.s = settings
        self.consumer = KafkaConsumer(
            names.TOPIC_AGGREGATES,
            bootstrap_servers=settings.kafka_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
            client_id="machinewatch-influx-writer",
        )
        self.client = InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)
        self.dead_letters: Publisher | None = None
        self.stop_event = threading.Event()
        self.written = 0
        self.rejected = 0

    def _dead_letter(self, raw: bytes, reason: str, origin: str) -> None:
        if self.dead_letters is None:
            self.dead_letters = Publisher(self.s, topic=names.TOPIC_DEAD_LETTER)
        self.dead_letters.dead_letter("influx-writer", raw, reason, origin)
        self.dead_letters.flush()

    def write(self, points: list[Point]) -> None:
        """Write until InfluxDB accepts; back off on failure (the caller has not committed yet)."""
        delay = 0.5
        while True:
            try:
                self.write_api.write(bucket=names.BUCKET_AGGREGATES, record=points)
                return
            except Exception as exc:  # noqa: BLE001 - any failure: keep the data and retry
                if self.stop_event.is_set():
                    raise
                log.warning("InfluxDB write of %d points failed (%s); retrying in %.1fs", len(points), exc, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 30.0)

    def handle(self, messages: Iterable[Any]) -> int:
        points = []
        for msg in messages:
            try:
                points.append(to_point(parse(msg.value)))
            except (BadResult, ValueError, TypeError) as exc:
                self.rejected += 1
                self._dead_letter(msg.value, str(exc), f"{msg.topic}/{msg.partition}@{msg.offset}")
        if points:
            self.write(points)
            self.written += len(points)
        return len(points)

    def run(self, idle_exit_s: float | None = None) -> None:
        """Loop until stopped (or until no message came for ``idle_exit_s`` seconds)."""
        log.info("writing %s -> %s bucket '%s'", names.TOPIC_AGGREGATES, self.s.influx, names.BUCKET_AGGREGATES)
        last_data = time.monotonic()
        try:
            while not self.stop_event.is_set():
                batch = self.consumer.poll(timeout_ms=1000)
                if batch:
                    for records in batch.values():
                        self.handle(records)
                    self.consumer.commit()
                    last_data = time.monotonic()
                    log.info("written %d points so far (%d rejected)", self.written, self.rejected)
                elif idle_exit_s is not None and time.monotonic() - last_data > idle_exit_s:
                    break
        finally:
            self.close()

    def close(self) -> None:
        self.consumer.close()
        self.client.close()
        if self.dead_letters is not None:
            self.dead_letters.close()


def main(settings: Settings, idle_exit_s: float | None = None) -> None:
    writer = InfluxWriter(settings)
    signal.signal(signal.SIGTERM, lambda *_: writer.stop_event.set())
    writer.run(idle_exit_s)
