"""PerfMon folder watcher as a ``runtime.Source``: finished PDH-CSV files -> parser -> records, then done/ or error/.

Per batch of rows: ``poll`` records the batch as pending (atomic state write) and hands its readings, bad
rows (rejects with their exact bytes) and, with a file's first batch, its data-quality notes to the runner;
once the runner has flushed them to Kafka it calls ``commit``, which records the rows as acknowledged
(atomic state write); when every row of a file is acknowledged the file moves to ``done/``. One batch is in
flight at a time. A restart resumes after the acknowledged rows. If it finds a pending batch (the previous
run died between handing it over and the state write), it first reads back what of that batch already
reached the topics and hands over only the rest, so a crash at any point yields each event id exactly once.
Event ids come from the file's content, not its name.

Envelope problems never cost a file's values: a header without a usable offset is read in the zone
its name or the ``timezone`` setting gives (with a data-quality note). A file for which neither gives
a zone is *parked*: moved to ``error/`` with a reason naming the setting to add, and remembered in the
state with the fingerprint of the settings that parked it. The watcher re-reads its config file when
its mtime changes; when the fingerprint differs from a parked file's, the file is moved back to where
it came from and processed like any other. A file that is not PDH-CSV (or too large) is dead-lettered
whole and moved to ``error/`` once the dead letter is flushed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.perfmon.config import ConfigError, PerfmonConfig, load_config
from ingest.perfmon.parser import SOURCE, PdhFormatError, PerfmonFile, UnresolvedTimeZone, parse
from machinewatch import names, quality
from machinewatch.config import Settings
from machinewatch.kafka_io import QualityNote
from machinewatch.record import make_event_id
from machinewatch.runtime import Batch, Rejected, TransientError

log = logging.getLogger(__name__)

# Test hook: MW_PERFMON_CRASH_AT=after_read|after_send|after_ack|after_state|after_move kills the
# process (os._exit, no cleanup) the Nth time it reaches that point (N = MW_PERFMON_CRASH_NTH, default 1).
CRASH_POINTS = ("after_read", "after_send", "after_ack", "after_state", "after_move")
CRASH_EXIT_CODE = 86
STATE_VERSION = 2  # 2: notes_acked per file, parked files
# Settings a config reload may not change: the state and the folders belong to the running watcher.
_FIXED_ON_RELOAD = ("watch_dir", "done_dir", "error_dir", "state_file")


class RetryLater(RuntimeError):
    """The broker did not acknowledge (or could not be checked); the file stays and is retried."""


def dead_letter_origin(identity: str, row: int, name: str) -> str:
    """Origin of a row's dead letter: stable prefix (file identity, row) for recovery, then the name."""
    return f"perfmon:{identity}:row={row}:{name}"


def note_origin(identity: str, kind: str, name: str) -> str:
    """Origin of a file's data-quality note: same shape as a row's dead letter, ``note=<kind>`` for the row."""
    return f"perfmon:{identity}:note={kind}:{name}"


def note_id(identity: str, kind: str) -> str:
    """Stable id of a file's note: a re-run after a crash (or of the same file) repeats it."""
    return make_event_id("perfmon-note", identity, kind)


def _origin_key(origin: str) -> str:
    # The name is last and may itself contain ':'; the first three parts identify the row.
    return ":".join(origin.split(":", 3)[:3])


@dataclass
class FileEntry:
    """Progress of one file, keyed by its content identity."""

    name: str
    rows: int
    acked_rows: int = 0
    pending: dict[str, int] | None = None  # {"from": row, "to": row, "since_ms": epoch ms}
    done_ms: int | None = None
    updated_ms: int = 0
    notes_acked: bool = False  # the file's data-quality notes were acknowledged (sent with its first batch)


@dataclass
class ParkedFile:
    """A file waiting in error/ for a setting (e.g. ``timezone``); keyed by its path under error/."""

    origin: str  # its path under watch_dir, where it goes back to
    identity: str
    fingerprint: str  # PerfmonConfig.zone_fingerprint when it was parked
    since_ms: int
    reason: str = ""


@dataclass
class WatcherState:
    """The state file: per file identity, how many rows the broker acknowledged. Written atomically."""

    path: Path
    files: dict[str, FileEntry] = field(default_factory=dict)
    parked: dict[str, ParkedFile] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> WatcherState:
        if not path.exists():
            return cls(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            # Version 1 had no notes: its files count as having sent theirs (nothing to repeat).
            old = {"notes_acked": True} if doc.get("version", 1) < 2 else {}
            files = {key: FileEntry(**{**old, **value}) for key, value in doc["files"].items()}
            parked = {key: ParkedFile(**value) for key, value in doc.get("parked", {}).items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Never reset silently: starting over would publish every file in the folder again.
            msg = f"state file {path} is unreadable ({exc}); fix or remove it deliberately"
            raise RuntimeError(msg) from exc
        return cls(path, files, parked)

    def save(self) -> None:
        doc = {"version": STATE_VERSION, "files": {k: v.__dict__ for k, v in self.files.items()},
               "parked": {k: v.__dict__ for k, v in self.parked.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".perfmon-state.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)

    def prune(self, retention_s: float) -> None:
        horizon = _now_ms() - retention_s * 1000
        for key in [k for k, v in self.files.items() if v.done_ms is not None and v.done_ms < horizon]:
            del self.files[key]


@dataclass
class Outcome:
    path: Path
    status: str  # done | error | parked | retry | skipped
    rows: int = 0
    readings: int = 0
    dead_letters: int = 0
    notes: int = 0
    resent_skipped: int = 0
    detail: str = ""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _File:
    """The file being published: one batch of it at most is in flight (handed over, not committed)."""

    path: Path
    pfile: PerfmonFile
    entry: FileEntry
    outcome: Outcome
    skip: set[str]
    inflight: tuple[int, int] | None = None  # rows [from, to) handed over, waiting for the commit
    send_marked: bool = False


class PerfmonSource:
    """Watches ``config.watch_dir`` and hands every finished PDH-CSV file to the runner exactly once by event id.

    ``once``: scan once (or take ``files``), publish what was found, then say it is finished (``--once``).
    ``outcomes`` lists what became of each file taken since the last ``open``.
    """

    def __init__(self, config: PerfmonConfig, settings: Settings, *, config_path: Path | None = None,
                 overrides: dict[str, Any] | None = None, once: bool = False, files: list[Path] | None = None,
                 sleep: Any = time.sleep) -> None:
        """``config_path``: the file ``config`` came from; it is re-read when its mtime changes (and
        ``overrides``, e.g. from the command line, are applied again)."""
        self.name = SOURCE
        self.config = config
        self.config_path = config_path
        self._overrides = dict(overrides or {})
        self._config_mtime = self._mtime()
        self._units = config.unit_table()
        self.settings = settings
        self.state = WatcherState.load(config.state_path)
        self.once = once or config.once or files is not None
        self._given = list(files) if files is not None else None
        self._sleep = sleep
        self._crash_at = os.environ.get("MW_PERFMON_CRASH_AT", "")
        self._crash_nth = int(os.environ.get("MW_PERFMON_CRASH_NTH", "1"))
        self._hits: dict[str, int] = {}
        if self._crash_at and self._crash_at not in CRASH_POINTS:
            msg = f"MW_PERFMON_CRASH_AT={self._crash_at!r} is not one of {', '.join(CRASH_POINTS)}"
            raise ValueError(msg)
        self.finished = False
        self.outcomes: list[Outcome] = []
        self._work: list[Path] = []
        self._scanned = False
        self._next_scan = 0.0
        self._file: _File | None = None
        self._whole: tuple[str, Path, Any] | None = None  # a rejected or parked file waiting for its commit

    # -- runtime.Source ----------------------------------------------------------------------------
    def open(self) -> None:
        self.setup()
        self.finished = False
        self.outcomes = []
        self._work = []
        self._scanned = False
        self._next_scan = 0.0
        self._file = None
        self._whole = None

    def setup(self) -> None:
        for folder in (self.config.watch_dir, self.config.done_path, self.config.error_path):
            folder.mkdir(parents=True, exist_ok=True)
        log.info("watching %s for %s (done: %s, error: %s, state: %s)", self.config.watch_dir,
                 self.config.pattern, self.config.done_path, self.config.error_path, self.config.state_path)

    def poll(self, timeout_s: float) -> Batch:
        if self._whole is not None or (self._file is not None and self._file.inflight is not None):
            if self._file is not None and not self._file.send_marked:
                self._file.send_marked = True
                self._crash("after_send")  # handed over to the sink, not known to be acknowledged
            self._sleep(timeout_s)  # one batch in flight: wait for its commit
            return Batch()
        if self._file is None:
            path = self._next_path(timeout_s)
            if path is None:
                return Batch()
            batch = self._start(path)
            if batch is not None:
                return batch
            if self._file is None:
                return Batch()
        return self._next_batch()

    def commit(self, checkpoint: object) -> None:
        assert isinstance(checkpoint, tuple)
        if checkpoint[0] == "rows":
            self._rows_acknowledged(checkpoint[1])
        elif checkpoint[0] == "reject":
            self._rejected_file()
        elif checkpoint[0] == "park":
            self._parked_file()

    def close(self) -> None:
        """What was handed over but not committed stays (the file is taken again on the next start)."""
        if self._file is not None:
            start, end = self._file.inflight or (self._file.entry.acked_rows, self._file.entry.acked_rows)
            self.outcomes.append(Outcome(self._file.path, "retry", detail=f"{self._display(self._file.path)}: rows "
                                         f"{start}..{end} not acknowledged"))
            log.error("%s: rows %d..%d not acknowledged; taken again on the next start",
                      self._display(self._file.path), start, end)
        elif self._whole is not None:
            self.outcomes.append(Outcome(self._whole[1], "retry",
                                         detail="its dead letter or note was not acknowledged"))
        self._file = None
        self._whole = None

    # -- finding files -------------------------------------------------------------------------

    def _next_path(self, timeout_s: float) -> Path | None:
        if not self._work:
            if self.once and self._scanned:
                self.finished = True
                return None
            now = time.monotonic()
            if now < self._next_scan:
                self._sleep(min(timeout_s, self._next_scan - now))
                return None
            self._next_scan = now + self.config.poll_interval_s
            self._scanned = True
            if self._given is not None:
                self._work = list(self._given)
            else:
                self.reload_config()
                self.unpark()
                self._work = self.finished_files()
            if not self._work:
                return None
        return self._work.pop(0)

    def _mtime(self) -> float | None:
        if self.config_path is None:
            return None
        try:
            return self.config_path.stat().st_mtime
        except OSError:
            return None

    def reload_config(self) -> bool:
        """Re-read the config file if it changed since it was read; True if a new config is in force.

        An invalid file is logged and the running config kept (a typo must not stop the service).
        Folders and the state file stay as they were until a restart.
        """
        mtime = self._mtime()
        if mtime is None or mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        assert self.config_path is not None
        try:
            fresh = load_config(self.config_path)
        except ConfigError as exc:
            log.error("%s changed but is invalid; keeping the running config: %s", self.config_path, exc)
            return False
        fixed = {name: getattr(self.config, name) for name in _FIXED_ON_RELOAD}
        changed = [name for name in _FIXED_ON_RELOAD if getattr(fresh, name) != fixed[name]]
        if changed:
            log.warning("%s: %s take effect on restart only", self.config_path, ", ".join(changed))
        self.config = fresh.model_copy(update={**self._overrides, **fixed})
        self._units = self.config.unit_table()
        log.info("re-read %s (timezone=%s, %d unit rules of its own)", self.config_path, self.config.timezone,
                 len(self.config.unit_rules))
        return True

    def unpark(self) -> list[Path]:
        """Move parked files whose parking settings changed back to where they came from (to be processed)."""
        current = self.config.zone_fingerprint
        moved: list[Path] = []
        changed = False
        for key, parked in list(self.state.parked.items()):
            source = self.config.error_path / key
            if not source.exists():
                # Taken away by hand (or moved back by hand): nothing to wait for any more.
                del self.state.parked[key]
                changed = True
                continue
            if parked.fingerprint == current:
                continue
            target = self._free_name(self.config.watch_dir / parked.origin)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)  # keeps the mtime: the file is settled and taken in this scan
            with contextlib.suppress(FileNotFoundError):
                source.with_name(source.name + ".reason.txt").unlink()
            _fsync_dir(target.parent)
            del self.state.parked[key]
            changed = True
            moved.append(target)
            log.info("%s: the settings that parked it changed; moved back to %s", source, target)
        if changed:
            self.state.save()
        return moved

    def finished_files(self, now: float | None = None) -> list[Path]:
        """Files matching the pattern that nobody has written to for ``settle_s`` (oldest first)."""
        now = time.time() if now is None else now
        root = self.config.watch_dir
        skip = {self.config.done_path.resolve(), self.config.error_path.resolve()}
        found: list[tuple[float, Path]] = []
        candidates = root.rglob(self.config.pattern) if self.config.recursive else root.glob(self.config.pattern)
        for path in candidates:
            if path.name.startswith((".", "~")) or not path.is_file():
                continue
            if any(parent.resolve() in skip for parent in path.parents):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if now - st.st_mtime >= self.config.settle_s:
                found.append((st.st_mtime, path))
        return [p for _, p in sorted(found)]

    # -- one file ------------------------------------------------------------------------------

    def _crash(self, point: str) -> None:
        self._hits[point] = self._hits.get(point, 0) + 1
        if self._crash_at == point and self._hits[point] == self._crash_nth:
            log.warning("MW_PERFMON_CRASH_AT=%s: exiting hard", point)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)

    def _display(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.config.watch_dir))
        except ValueError:
            return path.name

    def _start(self, path: Path) -> Batch | None:
        """Read and parse a file: a batch for a whole-file reject or park, else None (``_file`` set, or skipped)."""
        cfg = self.config
        shown = self._display(path)
        try:
            size = path.stat().st_size
            if size > cfg.max_file_mb * 1024 * 1024:
                with path.open("rb") as fh:  # its head for the dead letter, which says how big it really is
                    head = fh.read(quality.MAX_RAW_BYTES)
                return self._reject(path, head, f"file is {size} bytes, larger than max_file_mb={cfg.max_file_mb}",
                                    size=size)
            data = path.read_bytes()
        except FileNotFoundError:
            self.outcomes.append(Outcome(path, "skipped", detail="vanished"))
            return None
        try:
            pfile = parse(data, region=cfg.region, site=cfg.site, legacy_encoding=cfg.legacy_encoding,
                          default_host=cfg.default_host, timezone=cfg.timezone, units=self._units)
        except UnresolvedTimeZone as exc:
            return self._park(path, exc)
        except PdhFormatError as exc:
            return self._reject(path, data, str(exc))
        self._crash("after_read")

        entry = self.state.files.get(pfile.identity)
        if entry is None:
            entry = FileEntry(name=shown, rows=pfile.row_count)
            self.state.files[pfile.identity] = entry
        entry.rows = pfile.row_count
        outcome = Outcome(path, "done", rows=pfile.row_count)
        if entry.done_ms is not None and entry.acked_rows >= pfile.row_count:
            log.warning("%s: already published as %s (same content); not sending again", shown, entry.name)
        skip: set[str] = set()
        if entry.pending is not None:
            try:
                skip = self._already_published(pfile, entry.pending)
            except RetryLater as exc:
                self._work.insert(0, path)  # taken again after the runner's back-off
                raise TransientError(str(exc)) from exc
            outcome.resent_skipped = len(skip)
            log.warning("%s: resuming a batch interrupted after sending (rows %d..%d); %d of its records are "
                        "already in Kafka and are not sent again", shown, entry.pending["from"],
                        entry.pending["to"], len(skip))
        self._file = _File(path, pfile, entry, outcome, skip)
        return None

    def _next_batch(self) -> Batch:
        """The file's next batch of rows (the notes go with the first, also of a file without data rows)."""
        assert self._file is not None
        f = self._file
        entry, pfile = f.entry, f.pfile
        if entry.acked_rows >= pfile.row_count and entry.notes_acked:
            self._finish_file()
            return Batch()
        start = entry.acked_rows
        if entry.pending is not None:
            # Keep the first attempt's window so a second crash still finds the first attempt's records.
            end = max(entry.pending["to"], start + 1)
            since = entry.pending["since_ms"]
        else:
            end = min(start + self.config.batch_rows, pfile.row_count)
            since = _now_ms()
        end = min(end, pfile.row_count)
        entry.pending = {"from": start, "to": end, "since_ms": since}
        entry.updated_ms = _now_ms()
        self.state.save()
        batch = Batch(checkpoint=("rows", end))
        shown = self._display(f.path)
        if not entry.notes_acked:
            for note in pfile.notes:
                nid = note_id(pfile.identity, note.kind)
                if nid not in f.skip:
                    batch.records.append(QualityNote(SOURCE, note.kind, note.raw, f"{shown}: {note.reason}",
                                                     note_origin(pfile.identity, note.kind, shown), nid))
                    f.outcome.notes += 1
        rows = pfile.rows(start)
        for _ in range(start, end):
            row = next(rows)
            for reading in row.readings:
                if reading.event_id in f.skip:
                    continue
                batch.records.append(reading)
                f.outcome.readings += 1
            if row.error is not None:
                origin = dead_letter_origin(pfile.identity, row.index, shown)
                if _origin_key(origin) in f.skip:
                    continue
                reason = f"{shown} line {row.error.line}: {row.error.reason}"
                # The row's exact bytes in the file's own encoding (cp1251 stays cp1251, UTF-16 stays UTF-16).
                batch.rejected.append(Rejected(row.error.raw_bytes, reason, origin))
                f.outcome.dead_letters += 1
        f.inflight = (start, end)
        f.send_marked = False
        return batch

    def _rows_acknowledged(self, end: int) -> None:
        assert self._file is not None
        f = self._file
        if not f.send_marked:
            f.send_marked = True
            self._crash("after_send")
        self._crash("after_ack")
        f.entry.acked_rows = end
        f.entry.notes_acked = True
        f.entry.pending = None
        f.entry.updated_ms = _now_ms()
        self.state.save()
        self._crash("after_state")
        f.skip = set()
        f.inflight = None
        if f.entry.acked_rows >= f.pfile.row_count:
            self._finish_file()

    def _finish_file(self) -> None:
        assert self._file is not None
        f = self._file
        cfg = self.config
        f.entry.done_ms = _now_ms()
        f.entry.updated_ms = f.entry.done_ms
        self.state.prune(cfg.state_retention_days * 86400)
        self.state.files[f.pfile.identity] = f.entry
        self.state.save()
        target = self._move(f.path, cfg.done_path)
        self._crash("after_move")
        log.info("%s: %d rows, %d readings, %d dead letters, %d notes -> %s", self._display(f.path), f.outcome.rows,
                 f.outcome.readings, f.outcome.dead_letters, f.outcome.notes, target)
        self.outcomes.append(f.outcome)
        self._file = None

    def _already_published(self, pfile: PerfmonFile, pending: dict[str, int]) -> set[str]:
        """Event ids and dead-letter origins of the pending rows that already reached Kafka."""
        wanted: set[str] = set()
        if pending["from"] == 0:
            wanted.update(note_id(pfile.identity, note.kind) for note in pfile.notes)
        for row in pfile.rows(pending["from"]):
            if row.index >= pending["to"]:
                break
            wanted.update(r.event_id for r in row.readings)
            if row.error is not None:
                wanted.add(_origin_key(dead_letter_origin(pfile.identity, row.index, "")))
        found: set[str] = set()
        for value in _read_topics_since(self.settings, pending["since_ms"] - 1000, self.config.ack_timeout_s):
            try:
                doc = json.loads(value)
            except ValueError:
                continue
            if not isinstance(doc, dict) or doc.get("source") != SOURCE:
                continue
            key = doc.get("event_id") or doc.get("note_id") or _origin_key(str(doc.get("origin", "")))
            if key in wanted:
                found.add(key)
        return found

    # -- whole files: rejected or parked ---------------------------------------------------------

    def _reject(self, path: Path, data: bytes, reason: str, size: int | None = None) -> Batch:
        """Dead-letter a whole unusable file; once flushed (``commit``) it moves to error/ with its reason file."""
        self._whole = ("reject", path, reason)
        # The file's exact bytes (the core keeps the first MAX_RAW_BYTES, with size and truncated).
        rejected = Rejected(data, reason, f"perfmon-file:{self._display(path)}", size=size)
        return Batch(rejected=[rejected], checkpoint=("reject",))

    def _rejected_file(self) -> None:
        assert self._whole is not None
        _, path, reason = self._whole
        target = self._move(path, self.config.error_path)
        reason_file = target.with_name(target.name + ".reason.txt")
        reason_file.write_text(reason + "\n", encoding="utf-8")
        log.warning("%s: rejected (%s) -> %s", self._display(path), reason, target)
        self.outcomes.append(Outcome(path, "error", dead_letters=1, detail=reason))
        self._whole = None

    def _park(self, path: Path, exc: UnresolvedTimeZone) -> Batch:
        """Keep a file without a time zone in error/ until the settings give it one (see ``unpark``); the note
        saying so is flushed first (``commit`` then parks it)."""
        shown = self._display(path)
        where = str(self.config_path) if self.config_path else "the watcher's config file"
        if exc.candidates:
            example = f'timezone = "{exc.candidates[0]}"'
            if len(exc.candidates) > 1:
                example += f"   # or one of: {', '.join(exc.candidates[1:])}"
        else:
            example = 'timezone = "Europe/Moscow"   # the IANA zone of the machine that wrote the file'
        reason = (f"{shown}: {exc}. Nothing was published from it. Add the time zone of the machine that "
                  f"wrote it to the [perfmon] table of {where}:\n    {example}\n"
                  "The watcher re-reads the config when it changes and takes this file back by itself.")
        nid = make_event_id("perfmon-note", exc.identity, "parked", self.config.zone_fingerprint)
        note = QualityNote(SOURCE, "parked", exc.header_raw, reason, note_origin(exc.identity, "parked", shown), nid)
        self._whole = ("park", path, (exc, reason))
        return Batch(records=[note], checkpoint=("park",))

    def _parked_file(self) -> None:
        assert self._whole is not None
        _, path, (exc, reason) = self._whole
        shown = self._display(path)
        target = self._free_name(self._target(path, self.config.error_path))
        key = str(target.relative_to(self.config.error_path))
        try:
            origin = str(path.relative_to(self.config.watch_dir))
        except ValueError:
            origin = path.name
        # State first: a crash before the move leaves an entry without a file, which unpark() drops.
        self.state.parked[key] = ParkedFile(origin=origin, identity=exc.identity,
                                            fingerprint=self.config.zone_fingerprint, since_ms=_now_ms(),
                                            reason=str(exc))
        self.state.save()
        self._move_to(path, target)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
        log.warning("%s: parked in %s: %s", shown, target, exc)
        self.outcomes.append(Outcome(path, "parked", notes=1, detail=reason))
        self._whole = None

    # -- moving files --------------------------------------------------------------------------

    def _target(self, path: Path, folder: Path) -> Path:
        try:
            relative = path.relative_to(self.config.watch_dir)
        except ValueError:
            relative = Path(path.name)
        return folder / relative

    @staticmethod
    def _free_name(target: Path) -> Path:
        """``target``, or ``name.N.ext`` beside it if that is taken."""
        n = 0
        free = target
        while free.exists():
            n += 1
            free = target.with_name(f"{target.stem}.{n}{target.suffix}")
        return free

    def _move(self, path: Path, folder: Path) -> Path:
        return self._move_to(path, self._free_name(self._target(path, folder)))

    def _move_to(self, path: Path, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:
            shutil.move(path, target)  # another file system: copy, then delete
        _fsync_dir(target.parent)
        log.info("moved %s -> %s", path, target)
        return target


def _read_topics_since(settings: Settings, since_ms: int, timeout_s: float) -> Iterator[bytes]:
    """Every record value of the readings, dead-letter and quality topics written since ``since_ms``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None, enable_auto_commit=False,
                             client_id="machinewatch-perfmon-recovery")
    try:
        partitions = []
        for topic in (names.TOPIC_READINGS, names.TOPIC_DEAD_LETTER, names.TOPIC_QUALITY):
            for p in consumer.partitions_for_topic(topic) or ():
                partitions.append(TopicPartition(topic, p))
        if not partitions:
            return
        consumer.assign(partitions)
        starts = consumer.offsets_for_times({tp: max(since_ms, 0) for tp in partitions})
        ends = consumer.end_offsets(partitions)
        todo = {}
        for tp in partitions:
            found = starts.get(tp)
            if found is None or found.offset >= ends[tp]:
                continue
            consumer.seek(tp, found.offset)
            todo[tp] = ends[tp]
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                msg = f"could not read back {len(todo)} partitions within {timeout_s} s to check for duplicates"
                raise RetryLater(msg)
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < todo.get(tp, -1):
                        yield record.value
            for tp in list(todo):
                if consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    finally:
        consumer.close()
