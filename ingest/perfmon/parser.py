"""Pure parser for Windows Performance Monitor PDH-CSV 4.0 files: bytes in, Readings and row errors out.

No files, no Kafka: the folder watcher (and anything else that has PerfMon bytes) hands the whole
file to ``parse`` and publishes what comes back. Format rules:

* the first header cell is ``(PDH-CSV 4.0) (<zone name>)(<offset minutes>)``; UTC = local + offset.
  A cell cut short or without an offset is an envelope problem, not a reason to drop values: the
  zone comes from the zone name (``zones.py``), else from the ``timezone`` setting, and the file
  carries a note saying so; only when none of them gives a zone is ``UnresolvedTimeZone`` raised;
* every other header cell is a counter path ``\\\\HOST\\Object(Instance)\\Counter`` (instance optional);
* each data row starts with a local timestamp ``MM/DD/YYYY HH:MM:SS.fff``; ``" "`` (or empty) is a
  missing sample and yields no reading, never a zero;
* files come as UTF-8 (with or without BOM), UTF-16 (BOM or not) or a legacy Windows code page;
  each line's exact bytes can be had back in the file's own encoding (dead letters carry them);
* units come from the counter name through the rules of ``units.toml`` (plus the config's).
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingest.perfmon.units import UnitTable, builtin_table
from ingest.perfmon.zones import ZoneNameError, resolve_zone_name
from machinewatch.record import Reading, RecordError, make_event_id

SOURCE = "perfmon"
_MAX_TEXT = 256  # the canonical record's limit for text fields

LABEL = "(PDH-CSV 4.0)"
# The format label, any version; what follows is the zone part, possibly cut short.
_LABEL_RE = re.compile(r"^\s*\(PDH-CSV\s*(?P<version>[^)]*)\)(?P<rest>.*)$", re.S)
_ZONE_FULL = re.compile(r"^\s*\((?P<zone>.*)\)\s*\((?P<offset>[+-]?\d+)\)\s*$", re.S)
# Where the zone came from (the ``timezone`` note names it unless it is the header's offset).
ZONE_FROM_OFFSET = "header offset"
ZONE_FROM_NAME = "header zone name"
ZONE_FROM_CONFIG = "timezone setting"
# Timestamps PerfMon and relog write (US order is what PDH itself emits, whatever the locale).
_TS_PATTERNS = (
    (re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$"), ("m", "d", "Y")),
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$"), ("Y", "m", "d")),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?$"), ("d", "m", "Y")),
)
_COMMA_DECIMAL = re.compile(r"^[+-]?\d+,\d+$")
# Metric names only (units come from units.toml): "/sec" in English and Italian, "/s" in German,
# "/с" and "/сек" in Russian become "_per_s", as they always have.
_RATE_RE = re.compile(r"/\s*(?:sec|s|с|сек)\b")


class PdhFormatError(ValueError):
    """The file as a whole is not usable PDH-CSV 4.0 (no rows can be trusted); the message says why."""


class UnresolvedTimeZone(PdhFormatError):
    """A PDH-CSV file whose local times have no zone: not in the header, not in the config.

    The file is fine otherwise; it waits (``error/`` with a reason) until the ``timezone`` setting
    gives it one. ``candidates`` are IANA zones the header's zone name could mean, if any.
    """

    def __init__(self, message: str, *, identity: str, header_raw: bytes, zone: str,
                 candidates: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.identity = identity
        self.header_raw = header_raw
        self.zone = zone
        self.candidates = candidates


@dataclass(frozen=True, slots=True)
class CounterPath:
    """One parsed header cell ``\\\\HOST\\Object(Instance)\\Counter``."""

    raw: str
    host: str
    object: str
    instance: str
    counter: str


@dataclass(frozen=True, slots=True)
class Column:
    """What a header column maps to; ``problem`` is set when its values cannot become readings."""

    index: int
    raw: str
    path: CounterPath | None
    device_id: str = ""
    metric: str = ""
    unit: str = ""
    factor: float = 1.0
    orig_unit: str | None = None
    problem: str | None = None
    unit_known: bool = True


@dataclass(frozen=True, slots=True)
class Header:
    """The header row: format label, zone name and offset as far as they are there, and the columns.

    ``zone_cut``: the zone part was cut short (the name may be a prefix). ``envelope_problem`` says
    what is wrong with the first cell ("" when it is the full ``(PDH-CSV 4.0) (<zone>)(<offset>)``).
    """

    zone: str
    offset_minutes: int | None
    columns: tuple[Column, ...]  # index 0 is the timestamp column
    version: str = "4.0"
    zone_cut: bool = False
    envelope_problem: str = ""

    @property
    def tz(self) -> timezone | None:
        """The header's fixed offset as a zone, None when the header has no usable offset."""
        if self.offset_minutes is None:
            return None
        # PDH's offset is the Windows "bias": UTC = local + bias, so local = UTC - bias.
        return timezone(timedelta(minutes=-self.offset_minutes))

    @property
    def unknown_counters(self) -> tuple[str, ...]:
        """Counter names (without host and instance) no unit rule knows, each once, in header order."""
        seen: dict[str, None] = {}
        for col in self.columns:
            if col.path is not None and not col.unit_known and not col.problem:
                seen.setdefault(col.path.counter, None)
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class RowError:
    """Values of one data row that could not become readings: the line, its exact bytes and the reason."""

    row: int
    line: int
    raw: str
    reason: str
    raw_bytes: bytes = b""


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: its readings (good cells) and at most one error covering its bad cells."""

    index: int
    line: int
    readings: tuple[Reading, ...]
    error: RowError | None


@dataclass(frozen=True, slots=True)
class ZoneChoice:
    """The zone the file's local times are read in, and where it came from (``ZONE_FROM_*``)."""

    tz: tzinfo
    source: str
    detail: str  # e.g. "Europe/Moscow (Windows zone 'Russian Standard Time', name cut short)"


@dataclass(frozen=True, slots=True)
class EnvelopeNote:
    """A repair of the file's envelope, published as a data-quality note (``kind``) with the bytes it is about."""

    kind: str
    reason: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    """A file's text; ``encoding`` re-encodes any of its lines to the exact original bytes; ``bom`` as found."""

    text: str
    encoding: str
    bom: bytes = b""


def decode_bytes(data: bytes, legacy_encoding: str = "auto") -> Decoded:
    """Text of a PerfMon file: BOM first, then UTF-16 sniffing, UTF-8, legacy code page."""
    if data.startswith(codecs.BOM_UTF8):
        return Decoded(_decode(data[3:], "utf-8"), "utf-8", codecs.BOM_UTF8)
    for bom, enc in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return Decoded(_decode(_even(data[2:]), enc), enc, bom)
    # A PDH file starts with '"(': in UTF-16 without BOM every other byte of it is NUL.
    if len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        return Decoded(_decode(_even(data), "utf-16-le"), "utf-16-le")
    if len(data) >= 4 and data[0] == 0 and data[2] == 0 and data[1] != 0:
        return Decoded(_decode(_even(data), "utf-16-be"), "utf-16-be")
    try:
        return Decoded(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    encoding = guess_legacy_encoding(data) if legacy_encoding == "auto" else legacy_encoding
    return Decoded(_decode(data, encoding), encoding)


def decode(data: bytes, legacy_encoding: str = "auto") -> tuple[str, str]:
    """Text and a label of its encoding (``utf-8-sig`` / ``utf-16`` when a BOM was there)."""
    d = decode_bytes(data, legacy_encoding)
    if d.bom == codecs.BOM_UTF8:
        return d.text, "utf-8-sig"
    return d.text, "utf-16" if d.bom else d.encoding


def _even(data: bytes) -> bytes:
    # A UTF-16 file cut mid-character (truncated copy) still decodes up to the cut.
    return data[: len(data) - len(data) % 2]


def _decode(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        msg = f"cannot decode as {encoding}: {exc}"
        raise PdhFormatError(msg) from exc


def guess_legacy_encoding(data: bytes) -> str:
    """cp1251 when high bytes come in runs (Cyrillic words), else cp1252 (accents inside Latin words)."""
    high = [i for i, b in enumerate(data) if b >= 0xC0]
    if not high:
        return "cp1252"
    in_runs = sum(
        1 for i in high if (i > 0 and data[i - 1] >= 0xC0) or (i + 1 < len(data) and data[i + 1] >= 0xC0)
    )
    return "cp1251" if in_runs / len(high) >= 0.5 else "cp1252"


def parse_counter_path(text: str) -> CounterPath:
    """Split ``\\\\HOST\\Object(Instance)\\Counter``; ValueError says what is wrong with the path."""
    s = text.strip()
    if s.startswith("\\\\"):
        host, sep, rest = s[2:].partition("\\")
        if not sep or not host:
            msg = f"counter path {text!r} has no '\\\\HOST\\Object\\Counter' form"
            raise ValueError(msg)
    elif s.startswith("\\"):
        host, rest = "", s[1:]
    else:
        msg = f"counter path {text!r} does not start with '\\\\HOST\\' or '\\'"
        raise ValueError(msg)
    # The counter is after the last backslash; instance names may contain backslashes themselves.
    obj_part, sep, counter = rest.rpartition("\\")
    if not sep or not obj_part or not counter.strip():
        msg = f"counter path {text!r} has no object or no counter (truncated?)"
        raise ValueError(msg)
    instance = ""
    if "(" in obj_part:
        if not obj_part.endswith(")"):
            msg = f"counter path {text!r} has an unclosed instance '('"
            raise ValueError(msg)
        cut = obj_part.index("(")
        obj_part, instance = obj_part[:cut], obj_part[cut + 1 : -1]
    if not obj_part.strip():
        msg = f"counter path {text!r} has an empty object name"
        raise ValueError(msg)
    return CounterPath(raw=text, host=host, object=obj_part, instance=instance, counter=counter)


def _slug(text: str) -> str:
    t = text.strip().lower().replace("%", " pct ")
    t = _RATE_RE.sub(" per s ", t)
    t = t.replace("/", " per ")
    return re.sub(r"[^\w]+", "_", t).strip("_")


def metric_name(path: CounterPath) -> str:
    """``object.counter[instance]``, e.g. ``logicaldisk.avg_disk_read_queue_length[C:]``."""
    name = f"{_slug(path.object)}.{_slug(path.counter)}"
    return f"{name}[{path.instance}]" if path.instance else name


def counter_unit(counter: str, units: UnitTable | None = None) -> tuple[str, float, str | None]:
    """(canonical unit, factor to it, original unit if the factor changes the value) from a counter name."""
    return (units or builtin_table()).unit(counter)


def _zone_part(rest: str) -> tuple[str, int | None, bool, str]:
    """(zone name, offset, name cut short?, problem) from what follows the label in the first cell."""
    rest = rest.strip()
    full = _ZONE_FULL.match(rest)
    if full:
        offset = int(full["offset"])
        if not -24 * 60 < offset < 24 * 60:
            return full["zone"].strip(), None, False, f"time zone offset {offset} minutes is outside ±1440"
        return full["zone"].strip(), offset, False, ""
    if not rest:
        return "", None, False, "the header names no time zone and no offset"
    if not rest.startswith("("):
        return rest, None, True, f"the zone part {rest[:80]!r} is not '(<zone>)(<offset minutes>)'"
    inner = rest[1:]
    if ")(" in inner:
        # "(Zone)(24" - the offset was cut; a cut number is a wrong number, so it is not used.
        zone, _, tail = inner.rpartition(")(")
        return zone.strip(), None, False, f"the offset '({tail[:20]}' is cut short"
    if inner.endswith(")") and inner.count("(") < inner.count(")"):
        return inner[:-1].strip(), None, False, "the header has a zone name but no offset"
    return inner.strip(), None, True, f"the first header cell is cut short after {rest[:80]!r}"


def parse_header(cells: list[str], default_host: str = "", units: UnitTable | None = None) -> Header:
    """Label, zone, offset and column mapping of a header row; PdhFormatError if it is not PDH-CSV at all."""
    if not cells:
        msg = "empty file: no PDH-CSV header"
        raise PdhFormatError(msg)
    first = cells[0].lstrip("\ufeff")
    units = units or builtin_table()
    columns = [Column(index=0, raw=first, path=None)]
    seen: set[str] = set()
    for index, raw in enumerate(cells[1:], start=1):
        columns.append(_column(index, raw, default_host, seen, units))
    match = _LABEL_RE.match(first)
    problems: list[str] = []
    if match:
        version, rest = match["version"].strip(), match["rest"]
        if version != "4.0":
            problems.append(f"format label '(PDH-CSV {version})' (4.0 expected); read as 4.0")
    elif (len(first.strip()) >= 5 and LABEL.startswith(first.strip())
          and any(c.path is not None for c in columns[1:])):
        # The label itself cut short, but the rest of the header is PerfMon's counter paths.
        version, rest = "4.0", ""
        problems.append(f"format label cut short: {first.strip()!r}")
    else:
        msg = f"first header cell {first[:120]!r} is not '(PDH-CSV 4.0) (<zone>)(<offset minutes>)'"
        raise PdhFormatError(msg)
    zone, offset, cut, problem = _zone_part(rest)
    if problem:
        problems.append(problem)
    return Header(zone=zone, offset_minutes=offset, columns=tuple(columns), version=version, zone_cut=cut,
                  envelope_problem="; ".join(problems))


def resolve_zone(header: Header, configured: str | None = None) -> ZoneChoice:
    """The zone of the file's local times: the header's offset, else its zone name, else ``configured``.

    ZoneNameError (with the IANA candidates, if any) when none of them gives one.
    """
    fixed = header.tz
    if fixed is not None:
        return ZoneChoice(fixed, ZONE_FROM_OFFSET, f"offset {header.offset_minutes} minutes")
    why = ""
    candidates: tuple[str, ...] = ()
    if header.zone:
        try:
            match = resolve_zone_name(header.zone, cut=header.zone_cut)
        except ZoneNameError as exc:
            why, candidates = str(exc), exc.candidates
        else:
            how = "exact name" if match.how == "exact" else f"cut-short name, only {match.matched!r} begins so"
            try:
                return ZoneChoice(ZoneInfo(match.iana), ZONE_FROM_NAME,
                                  f"{match.iana} (Windows zone {match.windows_id!r}, {how})")
            except ZoneInfoNotFoundError:
                why = f"zone name {header.zone!r} is Windows zone {match.windows_id!r} = {match.iana}, " \
                      "which this system's zoneinfo does not have"
    else:
        why = "the header names no time zone"
    if configured:
        try:
            return ZoneChoice(ZoneInfo(configured), ZONE_FROM_CONFIG, f"{configured} ({why})")
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = f"{why}; and timezone = {configured!r} is not an IANA zone this system knows ({exc})"
            raise ZoneNameError(msg, candidates) from exc
    raise ZoneNameError(why, candidates)


def _column(index: int, raw: str, default_host: str, seen: set[str], units: UnitTable) -> Column:
    try:
        path = parse_counter_path(raw)
    except ValueError as exc:
        return Column(index=index, raw=raw, path=None, problem=str(exc))
    if raw in seen:
        return Column(index=index, raw=raw, path=path, problem="duplicate counter path in the header")
    seen.add(raw)
    device = path.host or default_host
    if not device:
        return Column(index=index, raw=raw, path=path,
                      problem="counter path has no host and no default_host is configured")
    metric = metric_name(path)
    rule = units.lookup(path.counter)
    unit, factor, orig_unit = units.unit(path.counter)
    for what, text in (("host", device), ("metric", metric)):
        if len(text) > _MAX_TEXT:
            return Column(index=index, raw=raw, path=path, problem=f"{what} is longer than {_MAX_TEXT} characters")
    return Column(index=index, raw=raw, path=path, device_id=device, metric=metric, unit=unit, factor=factor,
                  orig_unit=orig_unit, unit_known=rule is not None)


def parse_timestamp(text: str, tz: tzinfo | None) -> datetime:
    """An aware datetime from a PDH row timestamp in the file's zone; ValueError if it is not one."""
    s = text.strip()
    for pattern, order in _TS_PATTERNS:
        m = pattern.match(s)
        if not m:
            continue
        parts = dict(zip(order, (int(m[1]), int(m[2]), int(m[3])), strict=True))
        micro = int((m[7] or "0").ljust(6, "0"))
        return datetime(parts["Y"], parts["m"], parts["d"], int(m[4]), int(m[5]), int(m[6]), micro, tzinfo=tz)
    msg = f"timestamp {text!r} is not 'MM/DD/YYYY HH:MM:SS.fff'"
    raise ValueError(msg)


def _local_time(line: str) -> datetime | None:
    """The naive local time of a data line, read cheaply (first cell only); None if it has none."""
    first = line.split(",", 1)[0].strip().strip('"')
    try:
        return parse_timestamp(first, None)
    except ValueError:
        return None


def parse_value(text: str) -> float | None:
    """A sample value; None for PerfMon's blank (missing) cells; ValueError if it is not a number."""
    s = text.strip()
    if not s:
        return None
    if _COMMA_DECIMAL.match(s):
        # Some localised relog exports write a decimal comma inside the quoted field.
        s = s.replace(",", ".")
    value = float(s)  # ValueError names the text
    if not math.isfinite(value):
        msg = f"value {text!r} is not finite"
        raise ValueError(msg)
    return value


def _split_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _cells(line: str) -> list[str]:
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:  # e.g. a cell beyond the csv module's field size limit
        msg = f"not a CSV line: {exc}"
        raise ValueError(msg) from exc


class _FoldTracker:
    """Which occurrence of a repeated local time (the hour after the clocks go back) a row means.

    PerfMon writes wall-clock times in order, so the file goes back in local time when the clocks
    do: from a time earlier than one already seen, until the repeated hour ends, it is the second pass
    (``fold=1``). Fixed offsets (``tz`` None) have no repeated hour.
    """

    def __init__(self, tz: tzinfo | None) -> None:
        self.tz = tz
        self.latest: datetime | None = None
        self.second_pass = False

    def fold(self, local: datetime) -> int:
        if self.tz is None:
            return 0
        first, second = local.replace(tzinfo=self.tz), local.replace(tzinfo=self.tz, fold=1)
        if first.utcoffset() == second.utcoffset():
            self.second_pass = False
        elif self.latest is not None and local < self.latest:
            self.second_pass = True
        if self.latest is None or local > self.latest:
            self.latest = local
        return 1 if self.second_pass else 0


class PerfmonFile:
    """A decoded PDH-CSV file: header, zone, a stable identity, notes, and its data rows parsed on demand.

    ``encoding`` turns any line back into its exact bytes (``line_bytes``); ``notes`` are the envelope
    repairs to publish as data-quality notes. UnresolvedTimeZone if no zone can be found.
    """

    def __init__(self, text: str, encoding: str, *, region: str = "", site: str = "", default_host: str = "",
                 timezone: str | None = None, units: UnitTable | None = None, bom: bytes = b"") -> None:
        self.encoding = encoding
        self.bom = bom
        self.region = region
        self.site = site
        lines = [(n, line) for n, line in enumerate(_split_lines(text), start=1) if line.strip()]
        if not lines:
            msg = "empty file: no PDH-CSV header"
            raise PdhFormatError(msg)
        try:
            header_cells = _cells(lines[0][1])
        except ValueError as exc:
            msg = f"header row: {exc}"
            raise PdhFormatError(msg) from exc
        self.header = parse_header(header_cells, default_host, units)
        self.header_raw = self.line_bytes(lines[0][1])
        self._data = lines[1:]
        try:
            first_cells = _cells(self._data[0][1]) if self._data else []
        except ValueError:
            first_cells = [self._data[0][1]]
        # Identity from the header and the first data row, not the file name or size: the same
        # collector file maps to the same ids after a move, a rename, a re-encode or further appends.
        self.identity = make_event_id("pdh-csv", *header_cells, "\x1e", *first_cells)
        try:
            self.zone = resolve_zone(self.header, timezone)
        except ZoneNameError as exc:
            msg = f"no time zone for the local times of this file: {exc}"
            raise UnresolvedTimeZone(msg, identity=self.identity, header_raw=self.header_raw,
                                     zone=self.header.zone, candidates=exc.candidates) from exc
        # Fixed offsets have no repeated hour; a zone with daylight saving time does (see _moment).
        self._dst_aware = self.zone.source != ZONE_FROM_OFFSET
        self.notes = self._envelope_notes()

    def _envelope_notes(self) -> list[EnvelopeNote]:
        notes = []
        problem = self.header.envelope_problem
        if self.zone.source != ZONE_FROM_OFFSET:
            notes.append(EnvelopeNote("timezone", f"local times read in {self.zone.detail}: from the "
                                      f"{self.zone.source}, not the header's offset ({problem})", self.header_raw))
        elif problem:
            notes.append(EnvelopeNote("header", f"header repaired: {problem}", self.header_raw))
        unknown = self.header.unknown_counters
        if unknown:
            notes.append(EnvelopeNote(
                "unknown_unit", f"{len(unknown)} counter name(s) match no unit rule (units.toml or the "
                f"unit_rules setting), published with unit 'count': {'; '.join(unknown)}", self.header_raw))
        return notes

    def line_bytes(self, line: str) -> bytes:
        """The exact bytes of a line (without its line break) in the file's own encoding."""
        try:
            return line.encode(self.encoding)
        except (UnicodeEncodeError, LookupError):
            return line.encode("utf-8", "surrogateescape")

    @property
    def row_count(self) -> int:
        return len(self._data)

    def rows(self, start: int = 0) -> Iterator[Row]:
        folds = _FoldTracker(self.zone.tz if self._dst_aware else None)
        # The rows before ``start`` decide whether a repeated hour is in its second pass, also on resume.
        for _, line in self._data[:start] if self._dst_aware else ():
            if (local := _local_time(line)) is not None:
                folds.fold(local)
        for index in range(start, len(self._data)):
            line_no, line = self._data[index]
            yield self._row(index, line_no, line, folds)

    def event_id(self, row: int, column: Column) -> str:
        return make_event_id(SOURCE, self.identity, row, column.raw)

    def _moment(self, text: str, folds: _FoldTracker) -> datetime:
        moment = parse_timestamp(text, self.zone.tz)
        return moment.replace(fold=folds.fold(moment.replace(tzinfo=None)))

    def _error(self, index: int, line_no: int, line: str, reason: str) -> RowError:
        return RowError(index, line_no, line, reason, self.line_bytes(line))

    def _row(self, index: int, line_no: int, line: str, folds: _FoldTracker) -> Row:
        try:
            cells = _cells(line)
        except ValueError as exc:
            return Row(index, line_no, (), self._error(index, line_no, line, str(exc)))
        columns = self.header.columns
        try:
            moment = self._moment(cells[0] if cells else "", folds)
        except ValueError as exc:
            return Row(index, line_no, (), self._error(index, line_no, line, str(exc)))
        ts = round(moment.timestamp() * 1000)
        readings: list[Reading] = []
        problems: list[str] = []
        if len(cells) < len(columns):
            problems.append(f"row has {len(cells)} cells, the header has {len(columns)} (truncated row?)")
        for i in range(1, len(cells)):
            cell = cells[i]
            if not cell.strip():
                continue  # PerfMon writes " " for a sample it did not take: missing, not zero
            if i >= len(columns):
                problems.append(f"column {i + 1}: value {cell!r} has no counter in the header (truncated header?)")
                continue
            col = columns[i]
            if col.problem:
                problems.append(f"column {i + 1} '{col.raw}': {col.problem}")
                continue
            try:
                value = parse_value(cell)
            except ValueError:
                problems.append(f"column {i + 1} '{col.raw}': value {cell!r} is not a number")
                continue
            if value is None:
                continue
            try:
                readings.append(Reading(
                    source=SOURCE, region=self.region, site=self.site, device_id=col.device_id,
                    metric=col.metric, value=value * col.factor, unit=col.unit, ts=ts,
                    event_id=self.event_id(index, col),
                    orig_value=value if col.orig_unit else None, orig_unit=col.orig_unit,
                ))
            except RecordError as exc:
                problems.append(f"column {i + 1} '{col.raw}': {exc}")
        error = None
        if problems:
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            error = self._error(index, line_no, line, "; ".join(problems[:5]) + more)
        return Row(index, line_no, tuple(readings), error)


def parse(
    data: bytes | str, *, region: str = "", site: str = "", legacy_encoding: str = "auto", default_host: str = "",
    timezone: str | None = None, units: UnitTable | None = None,
) -> PerfmonFile:
    """Parse a whole PDH-CSV file; PdhFormatError if it is not one (UnresolvedTimeZone if it has no zone).

    ``timezone`` (IANA) is used when the header has neither a usable offset nor a known zone name;
    ``units`` replaces the built-in unit table (e.g. extended by the config's rules).
    """
    if isinstance(data, bytes):
        decoded = decode_bytes(data, legacy_encoding)
    else:
        decoded = Decoded(data.lstrip("\ufeff"), "utf-8")
    return PerfmonFile(decoded.text.lstrip("\ufeff"), decoded.encoding, region=region, site=site,
                       default_host=default_host, timezone=timezone, units=units, bom=decoded.bom)
