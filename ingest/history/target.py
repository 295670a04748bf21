"""Where a history load goes: its Kafka topic (created when the broker lacks it) and the InfluxDB bucket
whose retention its event times must fit (checked before a file's first chunk is published)."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from machinewatch import influx_admin, names
from machinewatch.config import Settings

log = logging.getLogger(__name__)

# The backfill flow's own readings topic and bucket (ingest/history/README.md): never the live ones.
HISTORY_TOPIC = names.TOPIC_HISTORY_READINGS
HISTORY_BUCKET = names.BUCKET_HISTORY

# Topics that carry something other than readings: a load into one of them would corrupt its consumers.
_NOT_READINGS = {
    names.TOPIC_AGGREGATES: "window results", names.TOPIC_ALERTS: "alerts", names.TOPIC_LATE: "late events",
    names.TOPIC_DEAD_LETTER: "dead letters", names.TOPIC_QUALITY: "data-quality notes",
    names.TOPIC_DEVICE_EVENTS: "device events",
}
_LEGAL = re.compile(r"[A-Za-z0-9._-]{1,249}")


class TargetError(RuntimeError):
    """The load's target cannot be used: the message says why and what to do."""


class RetentionError(TargetError):
    """A file's event times are older than the target bucket keeps: nothing of it was published."""


def check_topic_name(topic: str) -> str:
    """The topic if it can take readings; ValueError names the problem."""
    if not _LEGAL.fullmatch(topic) or topic in {".", ".."}:
        msg = f"topic {topic!r} is not a Kafka topic name (1-249 of the characters A-Z a-z 0-9 . _ -)"
        raise ValueError(msg)
    if topic in _NOT_READINGS:
        msg = (f"topic {topic!r} carries {_NOT_READINGS[topic]}, not readings; load into "
               f"{names.TOPIC_READINGS} (live) or a topic of its own such as {HISTORY_TOPIC} (backfill)")
        raise ValueError(msg)
    return topic


def ensure_topic(settings: Settings, topic: str) -> bool:
    """Create ``topic`` (``MW_KAFKA_PARTITIONS`` partitions) unless it exists; True when it was created. The
    stack's broker does not create topics on first use, and a send to a missing topic would only fail after
    the producer's metadata timeout. Creation itself is the core's (``kafka_io.ensure_topics``)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from machinewatch.kafka_io import ensure_topics

    try:
        admin = KafkaAdminClient(**settings.kafka_client_config(), client_id="machinewatch-history")
    except KafkaError as exc:
        msg = f"cannot reach Kafka at {settings.kafka_servers} to check topic {topic!r}: {exc!r}"
        raise TargetError(msg) from exc
    try:
        created = bool(ensure_topics(admin, settings.kafka_partitions, [topic], settings.kafka_replication_factor))
    except KafkaError as exc:
        msg = (f"topic {topic!r} does not exist on {settings.kafka_servers} and could not be created ({exc!r}); "
               "create it (partitions keyed by device, like mw.readings) or choose another --topic")
        raise TargetError(msg) from exc
    finally:
        admin.close()
    if created:
        log.info("created Kafka topic %s (%d partitions) on %s", topic, settings.kafka_partitions,
                 settings.kafka_servers)
    return created


class RetentionGuard:
    """Refuses a file whose first chunk holds event times older than the bucket's retention allows.

    The retention is read once, on the first check. When it cannot be read the load goes on with a
    warning (Kafka alone needs no InfluxDB); 0 (keep forever) accepts everything.
    """

    def __init__(self, settings: Settings, bucket: str) -> None:
        self.settings = settings
        self.bucket = bucket
        self._retention: int | None = None
        self._read = False

    def retention(self) -> int | None:
        if not self._read:
            self._retention, self._read = influx_admin.bucket_retention_s(self.settings, self.bucket), True
            if self._retention is None:
                log.warning("not checking the data against the retention of InfluxDB bucket '%s': it could not be "
                            "read; results older than it keeps will be dropped by InfluxDB", self.bucket)
        return self._retention

    def __call__(self, path: Path, oldest_ms: int, newest_ms: int) -> None:
        retention = self.retention()
        if not retention:
            return
        cutoff_ms = time.time() * 1000 - retention * 1000
        if oldest_ms >= cutoff_ms:
            return
        msg = (f"{path}: not loaded (nothing of it was sent): its first rows are from {_day(oldest_ms)} "
               f"to {_day(newest_ms)}, older than the {_span(retention)} retention of InfluxDB bucket "
               f"'{self.bucket}' (nothing before {_day(cutoff_ms)} is kept), so their results would be dropped. "
               f"Load old data as a backfill: --topic {HISTORY_TOPIC} --bucket {HISTORY_BUCKET} "
               "(see ingest/history/README.md)")
        if self.bucket != HISTORY_BUCKET:
            msg += ", or move it into the retention period (e.g. --base-date for time-of-day files)"
        raise RetentionError(msg)


def _day(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: int) -> str:
    return f"{seconds / 86400:g}-day" if seconds % 86400 == 0 else f"{seconds} s"
