"""Pure parser for Windows Performance Monitor PDH-CSV 4.0 files: bytes in, Readings and row errors out.

No files, no Kafka: the folder watcher (and anything else that has PerfMon bytes) hands the whole
file to ``parse`` and publishes what comes back. Format rules:

* the first header cell is ``(PDH-CSV 4.0) (<zone name>)(<offset minutes>)``; UTC = local + offset;
* every other header cell is a counter path ``\\\\HOST\\Object(Instance)\\Counter`` (instance optional);
* each data row starts with a local timestamp ``MM/DD/YYYY HH:MM:SS.fff``; ``" "`` (or empty) is a
  missing sample and yields no reading, never a zero;
* files come as UTF-8 (with or without BOM), UTF-16 (BOM or not) or a legacy Windows code page.
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from machinewatch.record import Reading, RecordError, make_event_id

SOURCE = "perfmon"
_MAX_TEXT = 256  # the canonical record's limit for text fields

_HEADER_RE = re.compile(r"^\s*\(PDH-CSV\s+4\.0\)\s*\((?P<zone>.*)\)\s*\((?P<offset>[+-]?\d+)\)\s*$", re.S)
# Timestamps PerfMon and relog write (US order is what PDH itself emits, whatever the locale).
_TS_PATTERNS = (
    (re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$"), ("m", "d", "Y")),
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$"), ("Y", "m", "d")),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?$"), ("d", "m", "Y")),
)
_COMMA_DECIMAL = re.compile(r"^[+-]?\d+,\d+$")
# "/sec" in English and Italian, "/s" in German, "/с" and "/сек" in Russian.
_RATE_RE = re.compile(r"/\s*(?:sec|s|с|сек)\b")
_BYTE_RE = re.compile(r"byte|байт")
_MBYTE_RE = re.compile(r"\bmbytes?\b|megabyte|\bмб\b|мбайт")
_KBYTE_RE = re.compile(r"\bkbytes?\b|kilobyte|\bкб\b|кбайт")
_SECONDS_PER_RE = re.compile(r"\bsec\s*/|\bс\s*/")


class PdhFormatError(ValueError):
    """The file as a whole is not usable PDH-CSV 4.0 (no rows can be trusted); the message says why."""


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


@dataclass(frozen=True, slots=True)
class Header:
    zone: str
    offset_minutes: int
    columns: tuple[Column, ...]  # index 0 is the timestamp column

    @property
    def tz(self) -> timezone:
        # PDH's offset is the Windows "bias": UTC = local + bias, so local = UTC - bias.
        return timezone(timedelta(minutes=-self.offset_minutes))


@dataclass(frozen=True, slots=True)
class RowError:
    """Values of one data row that could not become readings: the raw line and the reason."""

    row: int
    line: int
    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: its readings (good cells) and at most one error covering its bad cells."""

    index: int
    line: int
    readings: tuple[Reading, ...]
    error: RowError | None


def decode(data: bytes, legacy_encoding: str = "auto") -> tuple[str, str]:
    """Text of a PerfMon file and the encoding used: BOM first, then UTF-16 sniffing, UTF-8, legacy."""
    if data.startswith(codecs.BOM_UTF8):
        return _decode(data[3:], "utf-8"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        le = data.startswith(codecs.BOM_UTF16_LE)
        return _decode(_even(data[2:]), "utf-16-le" if le else "utf-16-be"), "utf-16"
    # A PDH file starts with '"(': in UTF-16 without BOM every other byte of it is NUL.
    if len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        return _decode(_even(data), "utf-16-le"), "utf-16-le"
    if len(data) >= 4 and data[0] == 0 and data[2] == 0 and data[1] != 0:
        return _decode(_even(data), "utf-16-be"), "utf-16-be"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    encoding = guess_legacy_encoding(data) if legacy_encoding == "auto" else legacy_encoding
    return _decode(data, encoding), encoding


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


def counter_unit(counter: str) -> tuple[str, float, str | None]:
    """(canonical unit, factor to it, original unit if the factor changes the value) from a counter name."""
    c = counter.lower()
    if "%" in c:
        return "%", 1.0, None
    if _RATE_RE.search(c):
        return ("bytes/s" if _BYTE_RE.search(c) else "1/s"), 1.0, None
    if _MBYTE_RE.search(c):
        return "bytes", 1024.0 * 1024.0, "MB"
    if _KBYTE_RE.search(c):
        return "bytes", 1024.0, "KB"
    if _BYTE_RE.search(c):
        return "bytes", 1.0, None
    if _SECONDS_PER_RE.search(c):
        return "s", 1.0, None
    return "count", 1.0, None


def parse_header(cells: list[str], default_host: str = "") -> Header:
    """The zone, offset and column mapping of a header row; PdhFormatError if the first cell is not PDH."""
    if not cells:
        msg = "empty file: no PDH-CSV header"
        raise PdhFormatError(msg)
    first = cells[0].lstrip("\ufeff")
    match = _HEADER_RE.match(first)
    if not match:
        msg = f"first header cell {first[:120]!r} is not '(PDH-CSV 4.0) (<zone>)(<offset minutes>)'"
        raise PdhFormatError(msg)
    offset = int(match["offset"])
    if not -24 * 60 < offset < 24 * 60:
        msg = f"time zone offset {offset} minutes in the header is outside ±1440"
        raise PdhFormatError(msg)
    columns = [Column(index=0, raw=first, path=None)]
    seen: set[str] = set()
    for index, raw in enumerate(cells[1:], start=1):
        columns.append(_column(index, raw, default_host, seen))
    return Header(zone=match["zone"].strip(), offset_minutes=offset, columns=tuple(columns))


def _column(index: int, raw: str, default_host: str, seen: set[str]) -> Column:
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
    unit, factor, orig_unit = counter_unit(path.counter)
    for what, text in (("host", device), ("metric", metric)):
        if len(text) > _MAX_TEXT:
            return Column(index=index, raw=raw, path=path, problem=f"{what} is longer than {_MAX_TEXT} characters")
    return Column(index=index, raw=raw, path=path, device_id=device, metric=metric, unit=unit, factor=factor,
                  orig_unit=orig_unit)


def parse_timestamp(text: str, tz: timezone) -> datetime:
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


class PerfmonFile:
    """A decoded PDH-CSV file: header, a stable identity, and its data rows parsed on demand."""

    def __init__(self, text: str, encoding: str, *, region: str = "", site: str = "", default_host: str = "") -> None:
        self.encoding = encoding
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
        self.header = parse_header(header_cells, default_host)
        self._data = lines[1:]
        try:
            first_cells = _cells(self._data[0][1]) if self._data else []
        except ValueError:
            first_cells = [self._data[0][1]]
        # Identity from the header and the first data row, not the file name or size: the same
        # collector file maps to the same ids after a move, a rename, a re-encode or further appends.
        self.identity = make_event_id("pdh-csv", *header_cells, "\x1e", *first_cells)

    @property
    def row_count(self) -> int:
        return len(self._data)

    def rows(self, start: int = 0) -> Iterator[Row]:
        for index in range(start, len(self._data)):
            line_no, line = self._data[index]
            yield self._row(index, line_no, line)

    def event_id(self, row: int, column: Column) -> str:
        return make_event_id(SOURCE, self.identity, row, column.raw)

    def _row(self, index: int, line_no: int, line: str) -> Row:
        try:
            cells = _cells(line)
        except ValueError as exc:
            return Row(index, line_no, (), RowError(index, line_no, line, str(exc)))
        columns = self.header.columns
        try:
            moment = parse_timestamp(cells[0] if cells else "", self.header.tz)
        except ValueError as exc:
            return Row(index, line_no, (), RowError(index, line_no, line, str(exc)))
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
            error = RowError(index, line_no, line, "; ".join(problems[:5]) + more)
        return Row(index, line_no, tuple(readings), error)


def parse(
    data: bytes | str, *, region: str = "", site: str = "", legacy_encoding: str = "auto", default_host: str = ""
) -> PerfmonFile:
    """Parse a whole PDH-CSV 4.0 file; PdhFormatError if it is not one, row problems come per row."""
    if isinstance(data, bytes):
        text, encoding = decode(data, legacy_encoding)
    else:
        text, encoding = data, "str"
    return PerfmonFile(text.lstrip("\ufeff"), encoding, region=region, site=site, default_host=default_host)
