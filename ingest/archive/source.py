"""The archive collector's ``runtime.Source``: the cold-path Parquet archive read back as readings.

An archive written by ``machinewatch sink archive`` (``machinewatch.archive``'s format) holds canonical readings
with their original event ids, so publishing it again gives downstream the same readings (an idempotent
replay). The source is a finite batch: file by file in path order, at most ``max_batch`` rows a poll, finished
after the last file. A row that is not a valid reading, or a file that cannot be read as Parquet, is rejected
with the reason (and the row as JSON, or the file's head bytes), never ending the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from machinewatch import quality
from machinewatch.archive import archive_files
from machinewatch.plugins import CollectorSettings
from machinewatch.record import Reading, RecordError
from machinewatch.runtime import Batch, Rejected

log = logging.getLogger(__name__)


class ArchiveSettings(CollectorSettings):
    """``[archive]`` in a collector config (see sample.conf); ``topic`` is where the readings go again."""

    root: Path = Field(description="the archive's folder (sink archive's --root)")


class ArchiveSource:
    """Every reading of the archive under ``root``; ``readings``/``rejects``/``files`` count what it read."""

    def __init__(self, root: Path, max_batch: int = 5000) -> None:
        if not root.is_dir():  # here, not in open(): the runner would retry an OSError there for ever
            msg = f"archive root {root} is not a folder"
            raise ValueError(msg)
        self.name = "archive"
        self.root = root
        self.max_batch = max_batch
        self.finished = False
        self.files = 0
        self.readings = 0
        self.rejects = 0
        self._items: Iterator[Reading | Rejected] | None = None

    def open(self) -> None:
        self._items = self._read()

    def poll(self, timeout_s: float) -> Batch:
        assert self._items is not None
        batch = Batch()
        for item in self._items:
            if isinstance(item, Rejected):
                batch.rejected.append(item)
            else:
                batch.records.append(item)
            if len(batch) >= self.max_batch:
                return batch
        self.finished = True
        log.info("archive %s: %d files, %d readings, %d rejected", self.root, self.files, self.readings,
                 self.rejects)
        return batch

    def commit(self, checkpoint: object) -> None:
        """Nothing to save: an archive replay starts from its first file each time."""

    def close(self) -> None:
        self._items = None

    def _read(self) -> Iterator[Reading | Rejected]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for path in archive_files(self.root):
            self.files += 1
            try:
                rows = pq.read_table(path).to_pylist()
            except (OSError, pa.ArrowException) as exc:
                self.rejects += 1
                with path.open("rb") as fh:
                    head = fh.read(quality.MAX_RAW_BYTES)
                yield Rejected(head, f"not a readable Parquet file: {exc}", str(path), size=path.stat().st_size)
                continue
            for number, row in enumerate(rows):
                try:
                    reading = Reading.from_dict(row)
                except (RecordError, TypeError, ValueError) as exc:
                    self.rejects += 1
                    yield Rejected(json.dumps(row, default=str).encode(), f"not a reading: {exc}",
                                   f"{path}#{number}")
                    continue
                self.readings += 1
                yield reading
