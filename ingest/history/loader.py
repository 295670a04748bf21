"""Load historical files through a mapping into Kafka: chunked, acknowledged, resumable.

Every ``chunk_rows`` rows the publisher is flushed (acks=all) and only then is the state advanced, so
a crash resumes after the last acknowledged chunk. ``force`` ignores the state; the re-sent readings
carry the same event ids as before.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from ingest.formats import Mapping, RowMapper, load_mapping
from ingest.formats.decoders import count_rows, iter_rows
from ingest.history.state import LoadState
from machinewatch.record import Reading

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What the loader needs of machinewatch.kafka_io.Publisher (a test double can stand in)."""

    def send(self, reading: Reading) -> object: ...
    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "",
                    size: int | None = None) -> object: ...
    def flush(self, timeout: float | None = None) -> None: ...


class HistoryConfig(BaseModel):
    """``[history]`` in a collector config (see sample.conf)."""

    model_config = ConfigDict(extra="forbid")

    files: list[str] = Field(description="paths or glob patterns")
    mapping: str = Field(description="shipped mapping name or path to a mapping TOML")
    state_file: Path = Field(default=Path("history-state.json"), description="resume state (JSON)")
    chunk_rows: int = Field(default=5000, gt=0, description="rows between acknowledged checkpoints")
    base_date: date | None = Field(default=None, description="overrides the mapping's base_date")
    progress: bool = True

    def paths(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self.files:
            matches = sorted(glob.glob(pattern)) or [pattern]
            found += [Path(m) for m in matches]
        return found


@dataclass
class FileReport:
    path: Path
    rows: int = 0           # rows read in this run
    skipped: int = 0        # rows already acknowledged in an earlier run
    readings: int = 0
    rejects: int = 0
    seconds: float = 0.0


class HistoryLoader:
    """Loads files of one mapping into a sink (the Publisher)."""

    def __init__(self, sink: Sink, mapping: Mapping, state: LoadState, chunk_rows: int = 5000,
                 progress: bool = True) -> None:
        self.sink = sink
        self.mapping = mapping
        self.state = state
        self.chunk_rows = chunk_rows
        self.progress = progress

    @classmethod
    def from_config(cls, sink: Sink, config: HistoryConfig) -> HistoryLoader:
        mapping = load_mapping(config.mapping, base_date=config.base_date)
        return cls(sink, mapping, LoadState(config.state_file), config.chunk_rows, config.progress)

    def load(self, path: Path, force: bool = False) -> FileReport:
        report = FileReport(path)
        if not path.exists():
            msg = f"no such file: {path}"
            raise FileNotFoundError(msg)
        started = time.monotonic()
        skip = 0 if force else self.state.rows_done(path)
        report.skipped = skip
        mapper = RowMapper(self.mapping)
        total = count_rows(path, self.mapping.format)
        bar = _progress(total, skip, path.name, self.progress)
        last_row = skip
        pending = 0
        if self.mapping.time_format == "time_of_day" and skip:
            # Day rollover needs every time of day from the top; re-read the skipped rows cheaply.
            for row in iter_rows(path, self.mapping.format, self.mapping.encoding):
                if row.number > skip:
                    break
                if row.data is not None:
                    stamp = row.data.get(self.mapping.time_field)
                    if stamp:
                        with contextlib.suppress(ValueError, TypeError):
                            mapper.parse_time(stamp)
        for row in iter_rows(path, self.mapping.format, self.mapping.encoding, skip=skip):
            origin = f"{path}:{row.number}"
            if row.data is None:
                self.sink.dead_letter(self.mapping.source, row.raw, f"{self.mapping.name}: {row.error}", origin)
                report.rejects += 1
            else:
                result = mapper.map(row.data, row.raw)
                for reading in result.readings:
                    self.sink.send(reading)
                for reject in result.rejects:
                    self.sink.dead_letter(self.mapping.source, reject.raw, reject.reason, origin)
                report.readings += len(result.readings)
                report.rejects += len(result.rejects)
            report.rows += 1
            last_row = row.number
            pending += 1
            if pending >= self.chunk_rows:
                self._checkpoint(path, last_row, complete=False)
                bar.update(pending)
                pending = 0
        self._checkpoint(path, last_row, complete=True)
        bar.update(pending)
        bar.close()
        report.seconds = time.monotonic() - started
        rate = report.rows / report.seconds if report.seconds else 0.0
        log.info("%s: %d rows (%d skipped as already loaded), %d readings, %d dead-lettered, %.0f rows/s",
                 path, report.rows, report.skipped, report.readings, report.rejects, rate)
        return report

    def _checkpoint(self, path: Path, rows: int, complete: bool) -> None:
        # Flush raises PublishError if anything was not acknowledged: the state is then not advanced.
        self.sink.flush()
        self.state.mark(path, rows, complete)


class _NoBar:
    def update(self, _n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int | None, done: int, name: str, enabled: bool) -> _NoBar:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    # disable=None: a bar on a terminal, silence in logs and CI (the summary line is logged anyway).
    return tqdm(total=total, initial=done, desc=name, unit="rows", disable=None)  # type: ignore[return-value]
