"""Writes the Flink jobs' results from Kafka into InfluxDB, idempotently.

Window aggregates, late events and alerts each become one point with a deterministic timestamp
(window end or event time) and tags, so a replay overwrites the same point. Offsets are committed
only after InfluxDB accepted the batch: an InfluxDB outage leaves the results buffered in Kafka
(back-pressure), never dropped.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from kafka import KafkaConsumer

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.kafka_io import DeadLetters

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
    size_s = int(doc["window_ms"]) // 1000
    slide_s = int(doc.get("slide_ms") or doc["window_ms"]) // 1000
    window = f"{size_s}s" if slide_s == size_s else f"{size_s}s@{slide_s}s"
    point = Point(names.MEASUREMENT_WINDOW).tag("window", window)
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


def late_point(doc: dict[str, Any]) -> Point:
    """One reading that arrived after its window fired: a point at its event time (count = 1)."""
    missing = [k for k in ("source", "device_id", "metric", "ts") if doc.get(k) is None]
    if missing:
        msg = f"late event lacks {', '.join(missing)}"
        raise BadResult(msg)
    return (
        Point(names.MEASUREMENT_LATE)
        .tag("source", str(doc["source"])).tag("device_id", str(doc["device_id"])).tag("metric", str(doc["metric"]))
        .field("count", 1)
        .field("event_id", str(doc.get("event_id") or ""))
        .field("watermark", str(doc.get("watermark") or ""))
        .time(int(doc["ts"]), WritePrecision.MS)
    )


_ALERT_TAGS = ("device_id", "rule_group", "severity", "kind", "state", "region", "site", "source")


def alert_point(doc: dict[str, Any]) -> Point:
    """An alert record (threshold or device alert): tags for filtering, the rest as fields."""
    when = doc.get("window_end_ms", doc.get("ts"))
    if not doc.get("device_id") or when is None:
        msg = "alert lacks device_id or a time (window_end_ms / ts)"
        raise BadResult(msg)
    measurement = names.MEASUREMENT_THRESHOLD_ALERT if doc.get("rule_group") else "device_alert"
    point = Point(measurement)
    for tag in _ALERT_TAGS:
        if doc.get(tag):
            point = point.tag(tag, str(doc[tag]))
    for key, value in doc.items():
        if key in _ALERT_TAGS or value is None:
            continue
        if isinstance(value, bool | str):
            point = point.field(key, value)
        elif isinstance(value, int | float):
            point = point.field(key, float(value))
        else:
            point = point.field(key, json.dumps(value, sort_keys=True))
    return point.time(int(when), WritePrecision.MS)


# topic -> (converter, bucket)
ROUTES: dict[str, tuple[Callable[[dict[str, Any]], Point], str]] = {
    names.TOPIC_AGGREGATES: (to_point, names.BUCKET_AGGREGATES),
    names.TOPIC_LATE: (late_point, names.BUCKET_AGGREGATES),
    names.TOPIC_ALERTS: (alert_point, names.BUCKET_ALERTS),
}


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

    def __init__(
        self, settings: Settings, group_id: str = "mw-influx-writer",
        routes: dict[str, tuple[Callable[[dict[str, Any]], Point], str]] | None = None,
    ) -> None:
        self.s = settings
        self.routes = routes or ROUTES
        self.consumer = KafkaConsumer(
            *self.routes,
            **settings.kafka_client_config(),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
            client_id="machinewatch-influx-writer",
        )
        self.client = InfluxDBClient(url=settings.influx, token=settings.write_token(), org=settings.influx_org)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)
        self.dead_letters = DeadLetters(settings, "influx-writer")
        self.stop_event = threading.Event()
        self.written = 0
        self.rejected = 0

    def _dead_letter(self, raw: bytes, reason: str, origin: str) -> None:
        self.dead_letters.send(raw, reason, origin)

    def write(self, bucket: str, points: list[Point]) -> None:
        """Write until InfluxDB accepts; back off on outages (the caller has not committed yet).

        Rejections of the data itself (400/422) are never retried as they are: they would block every
        result behind them. A partial write already stored the rest; otherwise points are retried one
        by one and only the rejected ones go to the dead-letter topic with InfluxDB's message.
        """
        delay = 0.5
        while True:
            try:
                self.write_api.write(bucket=bucket, record=points)
                return
            except ApiException as exc:
                if exc.status in (400, 422):
                    self._rejected_by_server(bucket, points, exc)
                    return
                if exc.status == 413 and len(points) > 1:
                    half = len(points) // 2
                    self.write(bucket, points[:half])
                    self.write(bucket, points[half:])
                    return
                error: Exception = exc
            except Exception as exc:  # noqa: BLE001 - connection errors and the like: keep the data, retry
                error = exc
            if self.stop_event.is_set():
                raise error
            log.warning("InfluxDB write of %d points failed (%s); retrying in %.1fs",
                        len(points), str(error).splitlines()[0][:200], delay)
            self.stop_event.wait(delay)
            delay = min(delay * 2, 30.0)

    def _rejected_by_server(self, bucket: str, points: list[Point], exc: ApiException) -> None:
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
        if "partial write" in body:
            match = re.search(r"dropped (\d+) points", body)
            dropped = int(match[1]) if match else 0
            self.rejected += dropped
            self._dead_letter(body.encode(), f"InfluxDB kept the batch but dropped {dropped} points: {body[:300]}",
                              f"bucket {bucket}")
            return
        if len(points) == 1:
            self.rejected += 1
            self._dead_letter(points[0].to_line_protocol().encode(), f"InfluxDB rejected the point: {body[:300]}",
                              f"bucket {bucket}")
            return
        for point in points:
            self.write(bucket, [point])

    def handle(self, messages: Iterable[Any]) -> int:
        by_bucket: dict[str, list[Point]] = {}
        for msg in messages:
            if msg.value is None:
                continue  # a tombstone of an upsert topic: the point it replaced stays as written
            convert, bucket = self.routes[msg.topic]
            try:
                by_bucket.setdefault(bucket, []).append(convert(parse(msg.value)))
            except (BadResult, ValueError, TypeError) as exc:
                self.rejected += 1
                self._dead_letter(msg.value, str(exc), f"{msg.topic}/{msg.partition}@{msg.offset}")
        written = 0
        for bucket, points in by_bucket.items():
            self.write(bucket, points)
            written += len(points)
        self.written += written
        return written

    def run(self, idle_exit_s: float | None = None) -> None:
        """Loop until stopped (or until no message came for ``idle_exit_s`` seconds)."""
        for topic, (_, bucket) in self.routes.items():
            log.info("writing %s -> %s bucket '%s'", topic, self.s.influx, bucket)
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
        self.dead_letters.close()


def main(settings: Settings, idle_exit_s: float | None = None) -> None:
    writer = InfluxWriter(settings)
    signal.signal(signal.SIGTERM, lambda *_: writer.stop_event.set())
    writer.run(idle_exit_s)
