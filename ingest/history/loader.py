"""The history collector's ``runtime.Source``: historical files through a mapping, chunked, acknowledged, resumable.

Every ``chunk_rows`` rows make one batch; the runner flushes it to Kafka (acks=all) and only then commits
its checkpoint, which advances the state, so a crash resumes after the last acknowledged chunk. One chunk
is in flight at a time; the source is finished after the last file. Progress is kept per file content *and* load key
(the options that change what is sent: mapping, base date, constants, topic), so a changed option
loads again while a plain re-run sends nothing. ``force`` ignores the state; the re-sent readings carry
the same event ids as before. A time repeated within a file with a different value is kept under an id
of its own and noted on ``mw.quality``; the same value again is dead-lettered as a duplicate. A guard
(the retention check of ``ingest.history.target``) sees a file's first event times before anything of
the file is published, and may refuse the load.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ingest.formats import Mapping, RepeatTracker, RowMapper, load_mapping
from ingest.formats.decoders import Row, count_rows, iter_rows
from ingest.formats.rows import DUPLICATE, UNDECODABLE
from ingest.history.state import LoadState
from ingest.history.target import check_topic_name
from machinewatch import names
from machinewatch.kafka_io import QualityNote
from machinewatch.plugins import CollectorSettings
from machinewatch.record import Reading, make_event_id
from machinewatch.runtime import Batch, Rejected

log = logging.getLogger(__name__)

# Data-quality note kind: a time repeated in a file with a different value, kept as another occurrence.
NOTE_REPEATED_TIME = "repeated_time"
# Dead-letter kind of a reading the publisher refused for a time too far in the future.
FUTURE_TIME = "future_time"
# Part of every load key: a change in how event ids are made must load files again.
ID_SCHEME = 2


# (file, oldest event time ms, newest event time ms) of a file's first chunk; raises to refuse the load.
Guard = Callable[[Path, int, int], None]


class HistoryConfig(CollectorSettings):
    """``[history]`` in a collector config (see sample.conf); ``[history.runner]`` the runner's retries."""

    files: list[str] = Field(description="paths or glob patterns")
    mapping: str = Field(description="shipped mapping name or path to a mapping TOML")
    state_file: Path = Field(default=Path("history-state.json"), description="resume state (JSON)")
    chunk_rows: int = Field(default=5000, gt=0, description="rows between acknowledged checkpoints")
    base_date: date | None = Field(default=None, description="overrides the mapping's base_date")
    constants: dict[str, str] = Field(default_factory=dict,
                                      description="device/site/region for every row, e.g. {device = 'pump-7'}")
    topic: str = Field(default=names.TOPIC_READINGS, description="Kafka topic the readings go to")
    bucket: str = Field(default=names.BUCKET_AGGREGATES,
                        description="InfluxDB bucket the results will land in: its retention is checked")
    progress: bool = Field(default=True, description="a progress bar on a terminal")
    force: bool = Field(default=False, description="ignore the state and load every row again (same event ids)")

    @field_validator("topic")
    @classmethod
    def _topic(cls, topic: str) -> str:
        return check_topic_name(topic)

    def paths(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self.files:
            matches = sorted(glob.glob(pattern)) or [pattern]
            found += [Path(m) for m in matches]
        return found

    def load_mapping(self) -> Mapping:
        return load_mapping(self.mapping, constants=self.constants, base_date=self.base_date)


def load_key(mapping: Mapping, topic: str) -> tuple[str, dict[str, object]]:
    """(key, what it is made of): a hash of everything that changes what a load sends, and a readable summary.

    The mapping enters as its validated content (name, fields, units, base date, constants...), so a changed
    option is a new load while a comment in the TOML is not.
    """
    options = {"mapping": mapping.model_dump(mode="json"), "topic": topic, "ids": ID_SCHEME}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    about: dict[str, object] = {"mapping": mapping.name, "topic": topic, **mapping.constants()}
    if mapping.base_date:
        about["base_date"] = mapping.base_date.isoformat()
    return key, about


@dataclass
class LoadReport:
    """What a load did, for one file or (``add``) several; every dead letter and note is counted by kind."""

    path: Path | None = None
    topic: str = ""
    files: int = 0
    rows: int = 0           # rows read in this run
    skipped: int = 0        # rows already acknowledged in an earlier run with the same options
    readings: int = 0       # readings sent to the topic (not refused by the publisher)
    dead_letters: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rejects(self) -> int:
        """Every dead letter, of any kind."""
        return sum(self.dead_letters.values())

    def add(self, other: LoadReport) -> None:
        self.files += other.files
        self.rows += other.rows
        self.skipped += other.skipped
        self.readings += other.readings
        self.dead_letters.update(other.dead_letters)
        self.notes.update(other.notes)
        self.seconds += other.seconds
        self.topic = self.topic or other.topic

    def describe(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        what = f"{self.path}" if self.path else f"{self.files} file{'' if self.files == 1 else 's'}"
        return (f"{what}: {self.rows} rows read ({self.skipped} skipped as already loaded), {self.readings} readings "
                f"to {self.topic or '?'}, {self.rejects} dead-lettered{_kinds(self.dead_letters)}, "
                f"{sum(self.notes.values())} data-quality notes{_kinds(self.notes)}, {rate:.0f} rows/s")


def _kinds(counts: Counter[str]) -> str:
    return f" ({', '.join(f'{kind} {n}' for kind, n in sorted(counts.items()))})" if counts else ""


@dataclass(frozen=True, slots=True)
class _Send:
    reading: Reading


@dataclass(frozen=True, slots=True)
class _Dead:
    raw: bytes | str
    reason: str
    origin: str
    kind: str


@dataclass(frozen=True, slots=True)
class _Note:
    raw: bytes | str
    reason: str
    origin: str
    kind: str
    note_id: str


_Out = _Send | _Dead | _Note


@dataclass
class _Held:
    """A file's output kept back until the guard has seen its first event times."""

    outs: list[_Out] = field(default_factory=list)
    oldest: int | None = None
    newest: int | None = None

    def add(self, outs: list[_Out]) -> None:
        self.outs += outs
        for out in outs:
            if isinstance(out, _Send):
                ts = out.reading.ts
                self.oldest = ts if self.oldest is None else min(self.oldest, ts)
                self.newest = ts if self.newest is None else max(self.newest, ts)


class HistorySource:
    """Loads files of one mapping: a batch per chunk of rows, the load state as checkpoint; ``reports`` per file.

    ``max_future_ms`` is the publisher's limit (``max_future_skew_s``): a refused reading beyond it is counted
    as ``future_time``, any other refusal as a ``duplicate`` (an event id the publisher sent already).
    """

    def __init__(self, mapping: Mapping, paths: list[Path], state: LoadState, topic: str = names.TOPIC_READINGS,
                 chunk_rows: int = 5000, progress: bool = True, guard: Guard | None = None, force: bool = False,
                 max_future_ms: int = 300_000, sleep: Callable[[float], None] = time.sleep) -> None:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:  # here, not in poll(): the runner would retry an OSError there for ever
            msg = f"no such file: {', '.join(missing)}"
            raise ValueError(msg)
        self.name = mapping.source  # the dead letters' source, as the mapping's readings
        self.mapping = mapping
        self.paths = list(paths)
        self.state = state
        self.topic = topic
        self.chunk_rows = chunk_rows
        self.progress = progress
        self.guard = guard
        self.force = force
        self.max_future_ms = max_future_ms
        self._sleep = sleep
        self.load_key, self.options = load_key(mapping, topic)
        self.reports: list[LoadReport] = []
        self.finished = False
        self._chunks: Any = None
        self._inflight: tuple[Path, int, bool] | None = None  # the chunk handed over: (file, rows, complete)
        self._report: LoadReport | None = None

    # -- runtime.Source ----------------------------------------------------------------------------
    def open(self) -> None:
        self.finished = False
        self.reports = []
        self._chunks = self._all_chunks()

    def poll(self, timeout_s: float) -> Batch:
        if self._inflight is not None:
            self._sleep(timeout_s)  # one chunk in flight: wait for its commit
            return Batch()
        chunk = next(self._chunks, None)
        if chunk is None:
            self.finished = True
            return Batch()
        outs, path, rows, complete = chunk
        batch = self._batch(outs)
        batch.checkpoint = (path, rows, complete)
        self._inflight = (path, rows, complete)
        return batch

    def commit(self, checkpoint: object) -> None:
        assert isinstance(checkpoint, tuple)
        path, rows, complete = checkpoint
        self.state.mark(path, rows, complete, self.load_key, self.options)
        self._inflight = None

    def refused(self, rejected: list[Rejected]) -> None:
        """The publisher refused these readings (and the runner dead-letters them): count them by kind."""
        report = self._report
        if report is None:
            return
        now_ms = time.time() * 1000
        for item in rejected:
            report.readings -= 1
            try:
                ts = json.loads(item.raw)["ts"]
            except (ValueError, KeyError, TypeError):
                ts = 0
            report.dead_letters[FUTURE_TIME if ts > now_ms + self.max_future_ms else DUPLICATE] += 1

    def close(self) -> None:
        self._chunks = None
        self._inflight = None

    # -- files and chunks ------------------------------------------------------------------------
    def _all_chunks(self) -> Any:
        for path in self.paths:
            yield from self._file_chunks(path)

    def _file_chunks(self, path: Path) -> Any:
        """(outputs, file, rows done, complete) per chunk of one file; its report is in ``reports`` at the end."""
        report = LoadReport(path=path, topic=self.topic, files=1)
        self._report = report
        started = time.monotonic()
        skip = 0 if self.force else self.state.rows_done(path, self.load_key)
        report.skipped = skip
        mapper = RowMapper(self.mapping)
        repeats = RepeatTracker()
        if skip:
            # Day rollover and occurrence numbers depend on every earlier row: pass the skipped ones through
            # the mapper again (nothing is sent), so a resumed load gives the ids a whole one gives.
            for row in iter_rows(path, self.mapping.format, self.mapping.encoding):
                if row.number > skip:
                    break
                self._map(row, path, mapper, repeats)
        total = count_rows(path, self.mapping.format)
        bar = _progress(total, skip, path.name, self.progress)
        held: _Held | None = _Held() if self.guard else None
        outs: list[_Out] = []
        last_row = skip
        pending = 0
        for row in iter_rows(path, self.mapping.format, self.mapping.encoding, skip=skip):
            mapped = self._map(row, path, mapper, repeats)
            if held is None:
                outs += mapped
            else:
                held.add(mapped)
            report.rows += 1
            last_row = row.number
            pending += 1
            if pending >= self.chunk_rows:
                if held is not None:
                    if held.oldest is None:
                        continue  # no event time yet: the guard cannot judge, nothing may be published
                    outs = self._release(path, held)
                    held = None
                yield outs, path, last_row, False
                outs = []
                bar.update(pending)
                pending = 0
        if held is not None:
            outs = self._release(path, held)
        report.seconds = time.monotonic() - started
        self.reports.append(report)
        yield outs, path, last_row, True
        bar.update(pending)
        bar.close()
        report.seconds = time.monotonic() - started
        log.info("%s", report.describe())

    def _release(self, path: Path, held: _Held) -> list[_Out]:
        if self.guard is not None and held.oldest is not None and held.newest is not None:
            self.guard(path, held.oldest, held.newest)
        return held.outs

    def _batch(self, outs: list[_Out]) -> Batch:
        report = self._report
        assert report is not None
        source = self.mapping.source
        batch = Batch()
        for out in outs:
            if isinstance(out, _Send):
                batch.records.append(out.reading)
                report.readings += 1  # less what the publisher refuses (``refused``)
            elif isinstance(out, _Dead):
                batch.rejected.append(Rejected(out.raw, out.reason, out.origin, source=source))
                report.dead_letters[out.kind] += 1
            else:
                batch.records.append(QualityNote(source, out.kind, out.raw, out.reason, out.origin, out.note_id))
                report.notes[out.kind] += 1
        return batch

    # -- one row -------------------------------------------------------------------------------
    def _map(self, row: Row, path: Path, mapper: RowMapper, repeats: RepeatTracker) -> list[_Out]:
        name = self.mapping.name
        origin = f"{path}:{row.number}"
        if row.data is None:
            return [_Dead(row.raw, f"{name}: {row.error}", origin, UNDECODABLE)]
        result = mapper.map(row.data, row.raw)
        outs: list[_Out] = [_Dead(r.raw, r.reason, origin, r.kind) for r in result.rejects]
        repeated: list[tuple[Reading, int, int]] = []
        for reading in result.readings:
            seen = repeats.check(reading, row.number)
            if seen.reading is None:
                reason = (f"{name}: duplicate reading: device {reading.device_id} metric {reading.metric} at "
                          f"{_iso(reading.ts)} = {reading.value:g} {reading.unit}, the same value as row "
                          f"{seen.earlier_row} of this file")
                outs.append(_Dead(row.raw, reason, origin, DUPLICATE))
                continue
            outs.append(_Send(seen.reading))
            if seen.occurrence:
                repeated.append((seen.reading, seen.occurrence, seen.earlier_row))
        if repeated:
            first = repeated[0][0]
            kept = ", ".join(f"{r.metric} = {r.value:g} {r.unit} (occurrence {k}, first at row {earlier})"
                             for r, k, earlier in repeated)
            reason = (f"{name}: time {_iso(first.ts)} of device {first.device_id} was already read from this file "
                      f"with other values (a clock stepped back?); kept as further readings: {kept}")
            note_id = make_event_id(NOTE_REPEATED_TIME, *(r.event_id for r, _, _ in repeated))
            outs.append(_Note(row.raw, reason, origin, NOTE_REPEATED_TIME, note_id))
        return outs


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


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
