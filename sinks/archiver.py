"""Cold path: canonical readings from Kafka archived as hour-partitioned Parquet files, for audit and replay;
a sink on the one runner (``machinewatch.runtime``, with ``kafka_io.KafkaSource``).

Layout: ``<root>/date=YYYY-MM-DD/hour=HH/part-<partition>-<first offset>-<last offset>.parquet`` by
event time (UTC). A file is written to a temporary name, fsynced and renamed in ``flush``, and the runner
commits the Kafka offsets it holds only after that, so a crash can only repeat readings (same event ids),
never lose them. What is not a reading goes to the dead-letter topic with its exact bytes.
``machinewatch ingest archive`` replays an archive (format: machinewatch/archive.py).
Flink's own file sink would need flink-sql-parquet, which Maven Central does not serve for Flink 2.2.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machinewatch import names
from machinewatch.archive import partition_dir, write_file
from machinewatch.config import Settings
from machinewatch.kafka_io import KafkaMessage, KafkaSource, message_origin, run_consumer
from machinewatch.record import Reading, RecordError
from machinewatch.runtime import Counters, Rejected, RunOptions

log = logging.getLogger(__name__)


class Archiver:
    """A ``machinewatch.runtime.Sink`` of readings: ``write`` buffers them, ``flush`` writes a file per (hour,
    partition); ``run()`` consumes the readings topic into it on the runner, which flushes after ``max_rows``
    messages or ``max_age_s`` seconds and then commits the offsets."""

    name = "archiver"  # the dead letters' source

    def __init__(self, settings: Settings, root: Path, topic: str = names.TOPIC_READINGS,
                 group_id: str = "mw-archiver", max_rows: int = 50_000, max_age_s: float = 60.0) -> None:
        self.s = settings
        self.root = root
        self.topic = topic
        self.group_id = group_id
        self.options = RunOptions(max_batch=max_rows, flush_interval_s=max_age_s, poll_timeout_s=0.5)
        self.stop_event = threading.Event()
        self.archived = 0
        self.rejected = 0
        self.files: list[Path] = []
        self._buffer: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)  # partition -> (offset, row)

    # ------------------------------------------------------------------ runtime.Sink

    def write(self, records: Sequence[KafkaMessage]) -> list[Rejected]:
        refused = []
        for rec in records:
            try:
                row = Reading.from_json(rec.value or b"").to_dict()
            except RecordError as exc:
                refused.append(Rejected(rec.value or b"", str(exc), message_origin(rec)))
                continue
            self._buffer[rec.partition].append((rec.offset, row))
        self.rejected += len(refused)
        return refused

    def flush(self) -> None:
        """Write the buffered rows, one file per (partition, event hour); a file written stays written if a later
        one fails (OSError: the runner retries the rest, committing nothing before all are on disk)."""
        for partition in sorted(self._buffer):
            by_hour: dict[Path, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
            for offset, row in self._buffer[partition]:
                by_hour[partition_dir(self.root, int(row["ts"]))].append((offset, row))
            files = sorted(by_hour.items())
            for n, (folder, rows) in enumerate(files):
                path = folder / f"part-{partition}-{rows[0][0]:012d}-{rows[-1][0]:012d}.parquet"
                try:
                    write_file(path, [row for _, row in rows])
                except BaseException:
                    self._buffer[partition] = [item for _, left in files[n:] for item in left]  # kept for the retry
                    raise
                self.files.append(path)
                self.archived += len(rows)
            del self._buffer[partition]

    def close(self) -> None:
        """Nothing to release; what was not flushed is not committed either, and is consumed again."""

    def run(self, idle_exit_s: float | None = None) -> Counters:
        """Consume the readings topic until stopped (``stop_event``, SIGTERM/SIGINT in the main thread) or until
        no message came for ``idle_exit_s`` seconds; the last rows are flushed before it returns."""
        log.info("archiving %s into %s", self.topic, self.root)
        source = KafkaSource(self.s, [self.topic], self.group_id, name=self.name, client_id="machinewatch-archiver",
                             max_poll_records=10_000)
        return run_consumer(source, self, self.s, self.options, stop_event=self.stop_event, idle_exit_s=idle_exit_s)


def main(settings: Settings, root: Path, max_age_s: float, idle_exit_s: float | None = None) -> None:
    archiver = Archiver(settings, root, max_age_s=max_age_s)
    archiver.run(idle_exit_s)
    log.info("archived %d readings in %d files (%d rejected)", archiver.archived, len(archiver.files),
             archiver.rejected)
    print(json.dumps({"archived": archiver.archived, "files": len(archiver.files)}))
