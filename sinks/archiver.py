"""Cold path: canonical readings from Kafka archived as hour-partitioned Parquet files, for audit and replay.

Layout: ``<root>/date=YYYY-MM-DD/hour=HH/part-<partition>-<first offset>-<last offset>.parquet`` by
event time (UTC). A file is written to a temporary name, fsynced and renamed before the Kafka
offsets it holds are committed, so a crash can only repeat readings (same event ids), never lose
them. ``machinewatch ingest archive`` replays an archive (format: machinewatch/archive.py).
Flink's own file sink would need flink-sql-parquet, which Maven Central does not serve for Flink 2.2.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from machinewatch import names
from machinewatch.archive import partition_dir, write_file
from machinewatch.config import Settings
from machinewatch.kafka_io import BrokerBackoff, DeadLetters
from machinewatch.record import Reading, RecordError

log = logging.getLogger(__name__)

class Archiver:
    """Consume readings, write a file per (hour, partition) batch, then commit the offsets."""

    def __init__(self, settings: Settings, root: Path, topic: str = names.TOPIC_READINGS,
                 group_id: str = "mw-archiver", max_rows: int = 50_000, max_age_s: float = 60.0) -> None:
        self.s = settings
        self.root = root
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.consumer = KafkaConsumer(
            topic, **settings.kafka_client_config(), group_id=group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=10_000, client_id="machinewatch-archiver",
        )
        self.stop_event = threading.Event()
        self.broker = BrokerBackoff(self.consumer, self.stop_event, "archiver")
        self.archived = 0
        self.rejected = 0
        self.files: list[Path] = []
        self._dead_letters = DeadLetters(settings, "archiver")

    def _reject(self, raw: bytes, reason: str, origin: str) -> None:
        self._dead_letters.send(raw, reason, origin)
        self.rejected += 1

    def _flush(self, buffer: dict[int, list[tuple[int, dict[str, Any]]]]) -> None:
        for partition, items in buffer.items():
            by_hour: dict[Path, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
            for offset, row in items:
                by_hour[partition_dir(self.root, int(row["ts"]))].append((offset, row))
            for folder, rows in sorted(by_hour.items()):
                path = folder / f"part-{partition}-{rows[0][0]:012d}-{rows[-1][0]:012d}.parquet"
                write_file(path, [row for _, row in rows])
                self.files.append(path)
                self.archived += len(rows)
        buffer.clear()
        self.broker.commit()  # only now: every row above is on disk (retried before the next poll if it fails)

    def run(self, idle_exit_s: float | None = None) -> None:
        buffer: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        buffered = 0
        oldest = last_data = time.monotonic()
        log.info("archiving %s into %s", self.consumer.subscription(), self.root)
        try:
            while not self.stop_event.is_set():
                for records in self.broker.poll(timeout_ms=500).values():
                    for rec in records:
                        last_data = time.monotonic()
                        try:
                            row = Reading.from_json(rec.value).to_dict()
                        except RecordError as exc:
                            self._reject(rec.value, str(exc), f"{rec.topic}/{rec.partition}@{rec.offset}")
                            continue
                        if not buffered:
                            oldest = time.monotonic()
                        buffer[rec.partition].append((rec.offset, row))
                        buffered += 1
                if buffered and (buffered >= self.max_rows or time.monotonic() - oldest >= self.max_age_s):
                    self._flush(buffer)
                    buffered = 0
                if idle_exit_s is not None and time.monotonic() - last_data > idle_exit_s:
                    break
            if buffered:
                self._flush(buffer)
        finally:
            self.consumer.close()
            self._dead_letters.close()


def main(settings: Settings, root: Path, max_age_s: float) -> None:
    archiver = Archiver(settings, root, max_age_s=max_age_s)
    signal.signal(signal.SIGTERM, lambda *_: archiver.stop_event.set())
    archiver.run()
    log.info("archived %d readings in %d files (%d rejected)", archiver.archived, len(archiver.files),
             archiver.rejected)
    print(json.dumps({"archived": archiver.archived, "files": len(archiver.files)}))
