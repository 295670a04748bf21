"""The cold-path archive format, shared by its writer (sinks/archiver.py) and its replay (the ``archive``
collector plugin, ingest/archive/).

Hour-partitioned Parquet by event time (UTC): ``<root>/date=YYYY-MM-DD/hour=HH/part-*.parquet`` with
the canonical reading's columns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from machinewatch.record import READING_FIELDS, Reading

_ARROW = {str: pa.string(), float: pa.float64(), int: pa.int64()}
SCHEMA = pa.schema([(name, _ARROW[kind]) for name, kind, _ in READING_FIELDS])


def partition_dir(root: Path, ts_ms: int) -> Path:
    t = time.gmtime(ts_ms / 1000)
    return root / f"date={t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}" / f"hour={t.tm_hour:02d}"


def write_file(path: Path, rows: list[dict[str, Any]]) -> None:
    """Parquet file via a temporary name + fsync + rename: it exists whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def archive_files(root: Path) -> list[Path]:
    """The archive's files in path order (partitions, then offsets)."""
    return sorted(root.rglob("*.parquet"))


def read_archive(root: Path) -> Iterator[Reading]:
    """Every reading of an archive, file by file in path order (partitions, then offsets)."""
    for path in archive_files(root):
        for row in pq.read_table(path).to_pylist():
            yield Reading.from_dict(row)
