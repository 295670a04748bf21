"""Decoders: bytes of a CSV, JSON-lines or Parquet file (or one JSON line from a socket) -> dict rows.

Each row keeps its 1-based number within the file and its exact bytes, so a bad row can be
dead-lettered as it was and a resumed load can skip exactly the rows already acknowledged. Text is
decoded with ``surrogateescape``: a byte that is not valid in the file's encoding costs only its own
row (dead-lettered with the bytes as they were), never the rest of the file.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ingest.formats.mapping import FileFormat

PARQUET_BATCH_ROWS = 4096
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes surrogateescape could not decode


@dataclass(frozen=True, slots=True)
class Row:
    """One decoded source row: ``data`` is None when ``error`` says why it could not be decoded."""

    number: int
    raw: bytes
    data: dict[str, Any] | None
    error: str | None = None


def decode_json_line(line: bytes | str) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) or (None, reason) for one JSON line."""
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, None


class _Tap:
    """Feeds lines to csv.reader and remembers them, so each record's raw text is known."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self.taken: list[str] = []

    def __iter__(self) -> Iterator[str]:
        for line in self._handle:
            self.taken.append(line)
            yield line


def _codec(encoding: str) -> str:
    # Text back to the file's bytes: the BOM of utf-8-sig belongs to the file's start, not to a row.
    return "utf-8" if codecs.lookup(encoding).name == "utf-8-sig" else encoding


def _undecodable(text: str, encoding: str) -> str | None:
    """Why a row's text is not valid in the file's encoding (surrogateescape left its bytes as U+DCxx)."""
    bad = _ESCAPED.search(text)
    if bad is None:
        return None
    return f"byte 0x{ord(bad.group()) - 0xDC00:02x} at character {bad.start() + 1} is not valid {encoding}"


def _csv_rows(path: Path, encoding: str, skip: int) -> Iterator[Row]:
    codec = _codec(encoding)
    with path.open(encoding=encoding, errors="surrogateescape", newline="") as handle:
        tap = _Tap(handle)
        reader = csv.reader(tap)
        header = next(reader, None)
        tap.taken.clear()
        if header is None:
            return
        header = [h.strip() for h in header]
        number = 0
        for cells in reader:
            text = "".join(tap.taken)
            tap.taken.clear()
            if not cells or all(not c.strip() for c in cells):
                continue  # blank lines are not rows; numbering counts records only
            number += 1
            if number <= skip:
                continue
            raw = text.encode(codec, "surrogateescape")
            bad = _undecodable(text, encoding)
            if bad:
                yield Row(number, raw, None, bad)
                continue
            if len(cells) > len(header):
                yield Row(number, raw, None, f"{len(cells)} cells but the header names {len(header)} columns")
                continue
            # Short rows: trailing columns are simply absent (schema evolution, not an error).
            yield Row(number, raw, dict(zip(header, cells, strict=False)))


def _jsonl_rows(path: Path, encoding: str, skip: int) -> Iterator[Row]:
    codec = _codec(encoding)
    with path.open(encoding=encoding, errors="surrogateescape", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip or not line.strip():
                continue
            raw = line.encode(codec, "surrogateescape")
            bad = _undecodable(line, encoding)
            if bad:
                yield Row(number, raw, None, bad)
                continue
            data, error = decode_json_line(line)
            yield Row(number, raw, data, error)


def _parquet_rows(path: Path, skip: int) -> Iterator[Row]:
    import pyarrow.parquet as pq

    number = 0
    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            if number + batch.num_rows <= skip:
                number += batch.num_rows
                continue
            for data in batch.to_pylist():
                number += 1
                if number <= skip:
                    continue
                # A Parquet row has no bytes of its own: its JSON is what a dead letter can show.
                yield Row(number, json.dumps(data, default=str).encode(), data)


def iter_rows(path: str | Path, fmt: FileFormat, encoding: str = "utf-8-sig", skip: int = 0) -> Iterator[Row]:
    """Rows of a file in order, after the first ``skip`` rows."""
    path = Path(path)
    if fmt == "csv":
        return _csv_rows(path, encoding, skip)
    if fmt == "jsonl":
        return _jsonl_rows(path, encoding, skip)
    return _parquet_rows(path, skip)


def count_rows(path: str | Path, fmt: FileFormat) -> int | None:
    """Row count for progress reporting (cheap: Parquet metadata, or a line count); None if unknown."""
    path = Path(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return max(lines - 1, 0) if fmt == "csv" else lines
