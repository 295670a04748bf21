"""PerfMon folder watcher: finished PDH-CSV files -> parser -> Kafka, then done/ or error/.

Order per batch of rows: record the batch as pending (atomic state write) -> send -> flush (every
row acknowledged) -> record the rows as acknowledged (atomic state write); when every row is
acknowledged the file moves to ``done/``. A restart resumes after the acknowledged rows. If it
finds a pending batch (the previous run died between send and state write), it first reads back
what of that batch already reached the topics and sends only the rest, so a crash at any point
yields each event id exactly once. Event ids come from the file's content, not its name.

Envelope problems never cost a file's values: a header without a usable offset is read in the zone
its name or the ``timezone`` setting gives (with a data-quality note). A file for which neither gives
a zone is *parked*: moved to ``error/`` with a reason naming the setting to add, and remembered in the
state with the fingerprint of the settings that parked it. The watcher re-reads its config file when
its mtime changes; when the fingerprint differs from a parked file's, the file is moved back to where
it came from and processed like any other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.perfmon.config import ConfigError, PerfmonConfig, load_config
from ingest.perfmon.parser import SOURCE, EnvelopeNote, PdhFormatError, PerfmonFile, UnresolvedTimeZone, parse
from machinewatch import names, quality
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import make_event_id

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


class PerfmonWatcher:
    """Watches ``config.watch_dir`` and publishes every finished PDH-CSV file exactly once by event id."""

    def __init__(self, config: PerfmonConfig, settings: Settings, publisher: Publisher | None = None, *,
                 config_path: Path | None = None, overrides: dict[str, Any] | None = None) -> None:
        """``config_path``: the file ``config`` came from; it is re-read when its mtime changes (and
        ``overrides``, e.g. from the command line, are applied again)."""
        self.config = config
        self.config_path = config_path
        self._overrides = dict(overrides or {})
        self._config_mtime = self._mtime()
        self._units = config.unit_table()
        self.settings = settings
        self._publisher = publisher
        self._own_publisher = publisher is None
        self.state = WatcherState.load(config.state_path)
        self._crash_at = os.environ.get("MW_PERFMON_CRASH_AT", "")
        self._crash_nth = int(os.environ.get("MW_PERFMON_CRASH_NTH", "1"))
        self._hits: dict[str, int] = {}
        if self._crash_at and self._crash_at not in CRASH_POINTS:
            msg = f"MW_PERFMON_CRASH_AT={self._crash_at!r} is not one of {', '.join(CRASH_POINTS)}"
            raise ValueError(msg)

    # -- lifecycle ---------------------------------------------------------------------------

    def setup(self) -> None:
        for folder in (self.config.watch_dir, self.config.done_path, self.config.error_path):
            folder.mkdir(parents=True, exist_ok=True)
        log.info("watching %s for %s (done: %s, error: %s, state: %s)", self.config.watch_dir,
                 self.config.pattern, self.config.done_path, self.config.error_path, self.config.state_path)

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        self.setup()
        while not stop.is_set():
            self.run_once()
            stop.wait(self.config.poll_interval_s)

    def run_once(self) -> list[Outcome]:
        """Process every finished file once; a file that could not be acknowledged waits for the next scan."""
        self.reload_config()
        self.unpark()
        outcomes = []
        for path in self.finished_files():
            try:
                outcomes.append(self.process(path))
            except (RetryLater, OSError) as exc:
                # OSError: e.g. the file is still locked by its writer (Windows) or a share hiccup.
                log.error("%s: will retry on the next scan: %s", self._display(path), exc)
                outcomes.append(Outcome(path, "retry", detail=str(exc)))
        return outcomes

    def stop(self) -> None:
        if self._publisher is not None and self._own_publisher:
            self._publisher.close()
            self._publisher = None

    # -- config reload and parked files -------------------------------------------------------

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

    # -- finding files -------------------------------------------------------------------------

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

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.settings)
        return self._publisher

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

    def process(self, path: Path) -> Outcome:
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
            return Outcome(path, "skipped", detail="vanished")
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
        try:
            self._publish(path, pfile, entry, outcome)
        except RetryLater:
            raise
        except Exception as exc:  # the broker or the network: keep the file, retry later
            self._reset_publisher()
            msg = f"publishing failed: {exc!r}"
            raise RetryLater(msg) from exc

        entry.done_ms = _now_ms()
        entry.updated_ms = entry.done_ms
        self.state.prune(cfg.state_retention_days * 86400)
        self.state.files[pfile.identity] = entry
        self.state.save()
        target = self._move(path, cfg.done_path)
        self._crash("after_move")
        log.info("%s: %d rows, %d readings, %d dead letters, %d notes -> %s", shown, outcome.rows,
                 outcome.readings, outcome.dead_letters, outcome.notes, target)
        return outcome

    def _publish(self, path: Path, pfile: PerfmonFile, entry: FileEntry, outcome: Outcome) -> None:
        skip: set[str] = set()
        if entry.pending is not None:
            skip = self._already_published(pfile, entry.pending)
            outcome.resent_skipped = len(skip)
            log.warning("%s: resuming a batch interrupted after sending (rows %d..%d); %d of its records are "
                        "already in Kafka and are not sent again", self._display(path), entry.pending["from"],
                        entry.pending["to"], len(skip))
        # The notes go with the first batch (also of a file without data rows), acknowledged like it.
        while entry.acked_rows < pfile.row_count or not entry.notes_acked:
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
            self._send_batch(path, pfile, start, end, skip, outcome, with_notes=not entry.notes_acked)
            entry.acked_rows = end
            entry.notes_acked = True
            entry.pending = None
            entry.updated_ms = _now_ms()
            self.state.save()
            self._crash("after_state")
            skip = set()

    def _send_batch(self, path: Path, pfile: PerfmonFile, start: int, end: int, skip: set[str],
                    outcome: Outcome, *, with_notes: bool = False) -> None:
        pub = self.publisher
        futures: list[Any] = []
        dead_before = pub.failed
        if with_notes:
            for note in pfile.notes:
                nid = note_id(pfile.identity, note.kind)
                if nid not in skip:
                    self._send_note(pfile, note, nid, path)
                    outcome.notes += 1
        rows = pfile.rows(start)
        for _ in range(start, end):
            row = next(rows)
            for reading in row.readings:
                if reading.event_id in skip:
                    continue
                futures.append(pub.send(reading))
                outcome.readings += 1
            if row.error is not None:
                origin = dead_letter_origin(pfile.identity, row.index, self._display(path))
                if _origin_key(origin) in skip:
                    continue
                reason = f"{self._display(path)} line {row.error.line}: {row.error.reason}"
                # The row's exact bytes in the file's own encoding (cp1251 stays cp1251, UTF-16 stays UTF-16).
                pub.dead_letter(SOURCE, row.error.raw_bytes, reason, origin)
                outcome.dead_letters += 1
        self._crash("after_send")
        try:
            pub.flush(timeout=self.config.ack_timeout_s)
        except Exception as exc:
            self._reset_publisher()
            msg = f"{self._display(path)}: rows {start}..{end} not acknowledged: {exc}"
            raise RetryLater(msg) from exc
        not_acked = sum(1 for f in futures if not f.succeeded())
        if not_acked or pub.failed > dead_before:
            self._reset_publisher()
            msg = f"{self._display(path)}: {not_acked} records of rows {start}..{end} were not acknowledged"
            raise RetryLater(msg)
        self._crash("after_ack")

    def _send_note(self, pfile: PerfmonFile, note: EnvelopeNote, nid: str, path: Path) -> None:
        shown = self._display(path)
        self.publisher.note(SOURCE, note.kind, note.raw, f"{shown}: {note.reason}",
                            note_origin(pfile.identity, note.kind, shown), nid)

    def _reset_publisher(self) -> None:
        # The publisher's failure count is sticky; a fresh one lets the retry be judged on its own.
        if self._publisher is not None and self._own_publisher:
            with contextlib.suppress(Exception):
                self._publisher.close()
            self._publisher = None

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

    # -- moving files --------------------------------------------------------------------------

    def _reject(self, path: Path, data: bytes, reason: str, size: int | None = None) -> Outcome:
        """Dead-letter a whole unusable file, write its reason file, and move it to error/."""
        pub = self.publisher
        try:
            # The file's exact bytes (the core keeps the first MAX_RAW_BYTES, with size and truncated).
            pub.dead_letter(SOURCE, data, reason, f"perfmon-file:{self._display(path)}", size=size)
            pub.flush(timeout=self.config.ack_timeout_s)
        except Exception as exc:
            self._reset_publisher()
            msg = f"{self._display(path)}: could not dead-letter the rejected file: {exc}"
            raise RetryLater(msg) from exc
        target = self._move(path, self.config.error_path)
        reason_file = target.with_name(target.name + ".reason.txt")
        reason_file.write_text(reason + "\n", encoding="utf-8")
        log.warning("%s: rejected (%s) -> %s", self._display(path), reason, target)
        return Outcome(path, "error", dead_letters=1, detail=reason)

    def _park(self, path: Path, exc: UnresolvedTimeZone) -> Outcome:
        """Keep a file without a time zone in error/ until the settings give it one (see ``unpark``)."""
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
        target = self._free_name(self._target(path, self.config.error_path))
        key = str(target.relative_to(self.config.error_path))
        try:
            origin = str(path.relative_to(self.config.watch_dir))
        except ValueError:
            origin = path.name
        try:
            nid = make_event_id("perfmon-note", exc.identity, "parked", self.config.zone_fingerprint)
            self.publisher.note(SOURCE, "parked", exc.header_raw, reason, note_origin(exc.identity, "parked", shown),
                                nid)
            self.publisher.flush(timeout=self.config.ack_timeout_s)
        except Exception as err:
            self._reset_publisher()
            msg = f"{shown}: could not send the note that it is parked: {err}"
            raise RetryLater(msg) from err
        # State first: a crash before the move leaves an entry without a file, which unpark() drops.
        self.state.parked[key] = ParkedFile(origin=origin, identity=exc.identity,
                                            fingerprint=self.config.zone_fingerprint, since_ms=_now_ms(),
                                            reason=str(exc))
        self.state.save()
        self._move_to(path, target)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
        log.warning("%s: parked in %s: %s", shown, target, exc)
        return Outcome(path, "parked", notes=1, detail=reason)

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
