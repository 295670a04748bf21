"""Replay a source file through its mapping at a playback speed, paced by the rows' event times.

The format work is the history loader's (same decoders, same mappings, same event ids); only the
transport differs: rows are released when their event time comes round, ``speed`` times faster
than they were recorded. ``speed=0`` replays as fast as Kafka takes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ingest.formats import Mapping, RepeatTracker, RowMapper
from ingest.formats.decoders import iter_rows
from ingest.history.loader import Sink

log = logging.getLogger(__name__)


class ReplayConfig(BaseModel):
    """``[replay]`` in a collector config (see sample.conf)."""

    model_config = ConfigDict(extra="forbid")

    file: Path
    mapping: str = Field(description="shipped mapping name (equipment, servers, ...) or a TOML path")
    speed: float = Field(default=1.0, ge=0, description="playback speed; 10 = ten times faster, 0 = no pacing")
    limit_rows: int | None = Field(default=None, gt=0, description="stop after this many rows")


@dataclass
class ReplayReport:
    rows: int = 0
    readings: int = 0
    rejects: int = 0
    seconds: float = 0.0


class Replayer:
    """Paces one file's readings by event time into a sink (the Publisher)."""

    def __init__(self, sink: Sink, mapping: Mapping, speed: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 speed_source: Callable[[], float | None] | None = None) -> None:
        if speed < 0:
            msg = f"speed must be >= 0 (0 = no pacing), got {speed}"
            raise ValueError(msg)
        self.sink = sink
        self.mapping = mapping
        self.speed = speed
        self._sleep = sleep
        self._clock = clock
        # Asked between rows (e.g. the dashboard's speed control); None = keep the current speed.
        self._speed_source = speed_source

    def run(self, path: Path, limit_rows: int | None = None) -> ReplayReport:
        report = ReplayReport()
        mapper = RowMapper(self.mapping)
        repeats = RepeatTracker()
        started = anchor = self._clock()
        first_ts: int | None = None
        last_flush = started
        for row in iter_rows(path, self.mapping.format, self.mapping.encoding):
            if limit_rows is not None and report.rows >= limit_rows:
                break
            report.rows += 1
            origin = f"{path}:{row.number}"
            if row.data is None:
                self.sink.dead_letter(self.mapping.source, row.raw, f"{self.mapping.name}: {row.error}", origin)
                report.rejects += 1
                continue
            result = mapper.map(row.data, row.raw)
            wanted = self._speed_source() if self._speed_source else None
            if wanted is not None and wanted > 0 and wanted != self.speed and result.readings:
                # Re-anchor the pacing at this row, so the new speed applies from now on.
                log.info("playback speed %s -> %s", self.speed, wanted)
                self.speed, anchor, first_ts = wanted, self._clock(), result.readings[0].ts
            if result.readings and self.speed > 0:
                ts = result.readings[0].ts
                first_ts = ts if first_ts is None else first_ts
                due = anchor + (ts - first_ts) / 1000 / self.speed
                wait = due - self._clock()
                if wait > 0:
                    self._sleep(wait)
            for reading in result.readings:
                # The history loader's rule, so a replay gives the same ids: a time repeated with another
                # value (a clock stepped back) is a further reading of its own, the same value a duplicate.
                seen = repeats.check(reading, row.number)
                if seen.reading is None:
                    self.sink.dead_letter(self.mapping.source, row.raw, f"{self.mapping.name}: duplicate reading: "
                                          f"device {reading.device_id} metric {reading.metric} at ts {reading.ts} "
                                          f"= {reading.value:g}, the same value as row {seen.earlier_row}", origin)
                    report.rejects += 1
                    continue
                self.sink.send(seen.reading)
                report.readings += 1
            for reject in result.rejects:
                self.sink.dead_letter(self.mapping.source, reject.raw, reject.reason, origin)
            report.rejects += len(result.rejects)
            if self._clock() - last_flush >= 5:
                self.sink.flush()  # surfaces unacknowledged sends during long replays
                last_flush = self._clock()
        self.sink.flush()
        report.seconds = self._clock() - started
        log.info("replayed %s at speed %s: %d rows, %d readings, %d dead-lettered in %.1f s",
                 path, self.speed or "max", report.rows, report.readings, report.rejects, report.seconds)
        return report
