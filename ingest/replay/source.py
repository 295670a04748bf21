"""The replay collector's ``runtime.Source``: a source file through its mapping, paced by the rows' event times.

The format work is the history loader's (same decoders, same mappings, same event ids); only the
transport differs: rows are released when their event time comes round, ``speed`` times faster
than they were recorded. ``speed=0`` replays as fast as Kafka takes it. A replay is a finite batch:
the source says it is finished at the end of the file (or ``limit_rows``) and the runner ends the run.
It keeps no resume state (``ingest history`` does): there is no checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import Field

from ingest.formats import Mapping, RepeatTracker, RowMapper, load_mapping
from ingest.formats.decoders import iter_rows
from machinewatch.plugins import CollectorSettings
from machinewatch.record import Reading
from machinewatch.runtime import Batch, Rejected

log = logging.getLogger(__name__)


class ReplaySettings(CollectorSettings):
    """``[replay]`` in a collector config (see sample.conf)."""

    file: Path = Field(description="the source file to replay")
    mapping: str = Field(description="shipped mapping name (equipment, servers, ...) or a TOML path")
    speed: float = Field(default=1.0, ge=0, description="playback speed; 10 = ten times faster, 0 = no pacing")
    limit_rows: int | None = Field(default=None, gt=0, description="stop after this many rows")
    base_date: date | None = Field(default=None, description="date of time-of-day sources (UTC)")


@dataclass
class ReplayReport:
    rows: int = 0
    readings: int = 0
    rejects: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class _Row:
    readings: list[Reading]
    rejected: list[Rejected]


class ReplaySource:
    """Paces one file's readings by event time; ``report`` says what it read."""

    def __init__(self, mapping: Mapping, path: Path, speed: float = 1.0, limit_rows: int | None = None, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 speed_source: Callable[[], float | None] | None = None, announce_in: Path | None = None) -> None:
        """``announce_in``: the state dir where the replay announces itself to the dashboard while it runs."""
        if speed < 0:
            msg = f"speed must be >= 0 (0 = no pacing), got {speed}"
            raise ValueError(msg)
        if not path.is_file():  # here, not in poll(): the runner would retry an OSError there for ever
            msg = f"no such file: {path}"
            raise ValueError(msg)
        self.name = mapping.source
        self.mapping = mapping
        self.path = path
        self.speed = speed
        self.limit_rows = limit_rows
        self.report = ReplayReport()
        self.finished = False
        self._sleep = sleep
        self._clock = clock
        # Asked between rows (e.g. the dashboard's speed control); None = keep the current speed.
        self._speed_source = speed_source
        self._announce_in = announce_in
        self._announced: Path | None = None
        self._rows: Iterator[tuple[int, _Row]] | None = None
        self._next: tuple[int, _Row] | None = None  # the row waiting for its time: (its event time, its output)
        self._started = 0.0
        self._anchor = 0.0
        self._first_ts: int | None = None

    # -- runtime.Source ----------------------------------------------------------------------------
    def open(self) -> None:
        if self._announce_in is not None:
            from machinewatch import playback

            # The dashboard shows its speed control while this file exists.
            self._announced = playback.announce(self._announce_in, self.speed, f"{self.mapping.name}: {self.path}")
        self._rows = self._mapped_rows()
        self._started = self._anchor = self._clock()

    def poll(self, timeout_s: float) -> Batch:
        """The rows due by now; waits at most ``timeout_s`` for the next one to come due."""
        assert self._rows is not None
        batch = Batch()
        deadline = self._clock() + timeout_s
        while not self.finished:
            if self._next is None:
                self._next = next(self._rows, None)
                if self._next is None:
                    self._finish()
                    break
            ts, row = self._next
            if ts >= 0 and self.speed > 0:
                self._first_ts = ts if self._first_ts is None else self._first_ts
                wait = self._anchor + (ts - self._first_ts) / 1000 / self.speed - self._clock()
                if wait > 0:
                    if batch.records or batch.rejected:
                        break  # hand over what is due before waiting for more
                    if self._clock() + wait > deadline:
                        self._sleep(max(0.0, deadline - self._clock()))
                        break
                    self._sleep(wait)
            batch.records += row.readings
            batch.rejected += row.rejected
            self._next = None
        return batch

    def commit(self, checkpoint: object) -> None:
        """Nothing to save: a replay starts from the top each time."""

    def close(self) -> None:
        self._rows = None
        if self._announced is not None:
            self._announced.unlink(missing_ok=True)
            self._announced = None

    # -- rows ----------------------------------------------------------------------------------------
    def _finish(self) -> None:
        self.finished = True
        self.report.seconds = self._clock() - self._started
        log.info("replayed %s at speed %s: %d rows, %d readings, %d dead-lettered in %.1f s", self.path,
                 self.speed or "max", self.report.rows, self.report.readings, self.report.rejects, self.report.seconds)

    def _mapped_rows(self) -> Iterator[tuple[int, _Row]]:
        """(event time of the row's first reading or -1, its readings and rejects), the speed control applied."""
        mapper = RowMapper(self.mapping)
        repeats = RepeatTracker()
        source, name = self.mapping.source, self.mapping.name
        for row in iter_rows(self.path, self.mapping.format, self.mapping.encoding):
            if self.limit_rows is not None and self.report.rows >= self.limit_rows:
                return
            self.report.rows += 1
            origin = f"{self.path}:{row.number}"
            if row.data is None:
                self.report.rejects += 1
                yield -1, _Row([], [Rejected(row.raw, f"{name}: {row.error}", origin, source=source)])
                continue
            result = mapper.map(row.data, row.raw)
            wanted = self._speed_source() if self._speed_source else None
            if wanted is not None and wanted > 0 and wanted != self.speed and result.readings:
                # Re-anchor the pacing at this row, so the new speed applies from now on.
                log.info("playback speed %s -> %s", self.speed, wanted)
                self.speed, self._anchor, self._first_ts = wanted, self._clock(), result.readings[0].ts
            out = _Row([], [])
            for reading in result.readings:
                # The history loader's rule, so a replay gives the same ids: a time repeated with another
                # value (a clock stepped back) is a further reading of its own, the same value a duplicate.
                seen = repeats.check(reading, row.number)
                if seen.reading is None:
                    out.rejected.append(Rejected(
                        row.raw, f"{name}: duplicate reading: device {reading.device_id} metric {reading.metric} at "
                        f"ts {reading.ts} = {reading.value:g}, the same value as row {seen.earlier_row}", origin,
                        source=source))
                    continue
                out.readings.append(seen.reading)
            out.rejected += [Rejected(reject.raw, reject.reason, origin, source=source) for reject in result.rejects]
            self.report.readings += len(out.readings)
            self.report.rejects += len(out.rejected)
            yield (result.readings[0].ts if result.readings else -1), out


def make_replay_source(config: ReplaySettings, state_dir: Path | None = None) -> ReplaySource:
    """The source of ``machinewatch ingest replay``; with ``state_dir`` it follows the dashboard's speed control."""
    mapping = load_mapping(config.mapping, base_date=config.base_date)
    speed_source = None if state_dir is None else _dashboard_speed(state_dir)
    return ReplaySource(mapping, config.file, config.speed, config.limit_rows, speed_source=speed_source,
                        announce_in=state_dir)


def _dashboard_speed(state_dir: Path) -> Callable[[], float | None]:
    """The speed chosen on the dashboard, read at most twice a second."""
    from machinewatch import playback

    cache: dict[str, float] = {"at": 0.0}
    last: list[float | None] = [None]

    def requested() -> float | None:
        now = time.monotonic()
        if now - cache["at"] >= 0.5:
            cache["at"] = now
            last[0] = playback.requested_speed(state_dir)
        return last[0]

    return requested
