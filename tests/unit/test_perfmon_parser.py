"""The PDH-CSV parser on the real PerfMon exports and on made-up files in other encodings and locales.

Expectations come from the csv module and zoneinfo, not from the parser's own arithmetic.
"""

from __future__ import annotations

import codecs
import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ingest.perfmon.parser import (
    PdhFormatError,
    UnresolvedTimeZone,
    counter_unit,
    decode,
    guess_legacy_encoding,
    parse,
    parse_counter_path,
)
from tests.realdata import realdata_file

TESTDATA = Path(__file__).resolve().parents[2] / "ingest" / "perfmon" / "testdata"


def _oracle(path: Path, zone: str) -> list[tuple[str, int, str, float]]:
    """(host, epoch ms, counter path, value) of every non-blank cell, computed with csv + zoneinfo."""
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    header, data = rows[0], rows[1:]
    out = []
    for row in data:
        local = datetime.strptime(row[0], "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=ZoneInfo(zone))
        ms = round(local.timestamp() * 1000)
        for col, cell in zip(header[1:], row[1:], strict=True):
            if cell.strip():
                out.append((col.split("\\")[2], ms, col, float(cell)))
    return out


@pytest.mark.parametrize(("name", "zone", "rows"), [
    ("india-logicaldisk-15s.csv", "Asia/Kolkata", 21),
    ("eastern-process-bytes-2s.csv", "America/New_York", 208),
])
def test_real_exports_match_an_independent_reading(name: str, zone: str, rows: int) -> None:
    path = realdata_file(f"perfmon/{name}")
    pfile = parse(path.read_bytes(), region="r", site="s")
    assert pfile.row_count == rows
    parsed = list(pfile.rows())
    assert all(row.error is None for row in parsed)
    got = sorted(
        (r.device_id, r.ts, r.metric, r.value) for row in parsed for r in row.readings
    )
    expected = _oracle(path, zone)
    assert len(got) == len(expected)
    # Compare host, UTC time and value; the metric must carry the column's instance.
    assert sorted((h, ts, v) for h, ts, _, v in expected) == sorted((h, ts, v) for h, ts, _, v in got)
    by_key = {(r.ts, r.metric) for row in parsed for r in row.readings}
    assert len(by_key) == len(got), "two columns mapped to the same metric"
    ids = [r.event_id for row in parsed for r in row.readings]
    assert len(set(ids)) == len(ids)


def test_india_blanks_are_missing_not_zero() -> None:
    pfile = parse(realdata_file("perfmon/india-logicaldisk-15s.csv").read_bytes())
    first = next(pfile.rows())
    metrics = {r.metric for r in first.readings}
    # 8 counters were " " in the first row, 4 were "0".
    assert len(first.readings) == 4
    assert all(m.startswith("logicaldisk.current_disk_queue_length[") for m in metrics)
    assert all(r.value == 0.0 for r in first.readings)
    assert pfile.header.zone == "India Standard Time" and pfile.header.offset_minutes == -330
    # 09:51:39.073 IST is 04:21:39.073 UTC.
    assert first.readings[0].time == datetime(2017, 9, 19, 4, 21, 39, 73000, tzinfo=UTC)


def test_eastern_daylight_offset_and_units() -> None:
    pfile = parse(realdata_file("perfmon/eastern-process-bytes-2s.csv").read_bytes())
    first = next(pfile.rows())
    total = next(r for r in first.readings if r.metric == "process.virtual_bytes[_Total]")
    assert total.value == 238132991823872.0 and total.unit == "bytes" and total.orig_value is None
    assert total.time == datetime(2021, 9, 16, 11, 51, 58, 569000, tzinfo=UTC)
    assert {r.device_id for r in first.readings} == {"7702-48817743"}
    assert "process.private_bytes[AnyDesk#2]" in {r.metric for r in first.readings}


def test_counter_paths() -> None:
    p = parse_counter_path(r"\\IMPC3116\LogicalDisk(C:)\Avg. Disk Read Queue Length")
    assert (p.host, p.object, p.instance, p.counter) == ("IMPC3116", "LogicalDisk", "C:", "Avg. Disk Read Queue Length")
    p = parse_counter_path(r"\\H\Memory\Available MBytes")
    assert (p.object, p.instance) == ("Memory", "")
    p = parse_counter_path(r"\\H\Process(svchost (2))\% Processor Time")
    assert (p.object, p.instance) == ("Process", "svchost (2)")
    p = parse_counter_path(r"\Processor(_Total)\% Processor Time")
    assert p.host == "" and p.instance == "_Total"
    for bad in (r"\\HOST", r"\\HOST\Proc", r"\\HOST\Processor(_To", "Processor Time", r"\\\Obj\C"):
        with pytest.raises(ValueError, match="counter path"):
            parse_counter_path(bad)


@pytest.mark.parametrize(("counter", "unit", "factor"), [
    ("% Processor Time", "%", 1.0),
    ("Disk Read Bytes/sec", "bytes/s", 1.0),
    ("Disk Reads/sec", "1/s", 1.0),
    ("Available MBytes", "bytes", 1048576.0),
    ("Available KBytes", "bytes", 1024.0),
    ("Private Bytes", "bytes", 1.0),
    ("Avg. Disk sec/Read", "s", 1.0),
    ("Current Disk Queue Length", "count", 1.0),
    ("Доступно МБ", "bytes", 1048576.0),
    ("Всего байт/с", "bytes/s", 1.0),
    ("Byte letti/sec", "bytes/s", 1.0),
])
def test_units_from_counter_names(counter: str, unit: str, factor: float) -> None:
    got_unit, got_factor, _ = counter_unit(counter)
    assert (got_unit, got_factor) == (unit, factor)


def test_cp1251_russian_locale() -> None:
    data = (TESTDATA / "cp1251-russian.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    pfile = parse(data)
    assert pfile.encoding == "cp1251"
    # A zone name with its own parentheses, as Windows' Russian names have.
    assert (pfile.header.zone, pfile.header.offset_minutes) == ("RTZ 2 (зима)", -180)
    rows = list(pfile.rows())
    assert [len(r.readings) for r in rows] == [2, 3, 3]
    cpu = rows[1].readings[0]
    assert cpu.device_id == "СЕРВЕР-01"
    assert (cpu.metric, cpu.value, cpu.unit) == ("процессор.pct_загруженности_процессора[_Total]", 33.25, "%")
    mem = rows[0].readings[1]
    assert (mem.unit, mem.value, mem.orig_value, mem.orig_unit) == ("bytes", 2048 * 1048576.0, 2048.0, "MB")
    # 09:00:15.118 at UTC+3 (offset -180).
    assert cpu.time == datetime(2024, 3, 5, 6, 0, 15, 118000, tzinfo=UTC)


def test_utf16_with_bom_and_pacific_offset() -> None:
    data = (TESTDATA / "utf16-bom.csv").read_bytes()
    assert data.startswith(codecs.BOM_UTF16_LE)
    pfile = parse(data)
    assert (pfile.encoding, pfile.bom) == ("utf-16-le", codecs.BOM_UTF16_LE)
    rows = list(pfile.rows())
    assert len(rows[0].readings) == 1  # two blanks in the first row
    kb = rows[0].readings[0]
    assert (kb.metric, kb.value, kb.orig_unit) == ("memory.available_kbytes", 1048576 * 1024.0, "KB")
    # 23:59:59.5 PST on the 15th (offset 480) is 07:59:59.5 UTC on the 16th.
    assert kb.time == datetime(2024, 1, 16, 7, 59, 59, 500000, tzinfo=UTC)
    read = next(r for r in rows[1].readings if "per_read" in r.metric)
    assert (read.metric, read.unit) == ("physicaldisk.avg_disk_sec_per_read[0 C:]", "s")


def test_same_content_same_ids_in_any_encoding() -> None:
    text = (TESTDATA / "cp1251-russian.csv").read_bytes().decode("cp1251")
    variants = [text.encode("utf-8"), codecs.BOM_UTF8 + text.encode("utf-8"),
                codecs.BOM_UTF16_LE + text.encode("utf-16-le"), text.encode("utf-16-le"), text.encode("cp1251")]
    ids = [[r.event_id for row in parse(v).rows() for r in row.readings] for v in variants]
    assert all(i == ids[0] for i in ids)
    other = text.replace("12.5", "12.6").encode("utf-8")  # another file: its first row differs
    assert not set(ids[0]) & {r.event_id for row in parse(other).rows() for r in row.readings}


def test_italian_cp1252_locale() -> None:
    data = (TESTDATA / "italian-cp1252.csv").read_bytes()
    assert guess_legacy_encoding(data) == "cp1252"
    pfile = parse(data)
    assert pfile.header.zone == "ora solare Europa occidentale"
    metrics = {r.metric: r for row in pfile.rows() for r in row.readings}
    assert metrics["processore.pct_tempo_di_inattività[_Total]"].value in (80.0, 74.5)
    assert metrics["disco_logico.byte_letti_per_s[C:]"].unit == "bytes/s"
    assert len(metrics) == 3


def test_truncated_header_keeps_good_columns_and_reports_the_rest() -> None:
    pfile = parse((TESTDATA / "truncated-header.csv").read_bytes())
    assert pfile.header.columns[2].problem is not None
    first, second = list(pfile.rows())
    assert [r.value for r in first.readings] == [1.5]
    assert first.error is not None
    assert "column 3" in first.error.reason and "column 4" in first.error.reason
    assert "no counter in the header" in first.error.reason
    assert first.error.raw.startswith('"06/01/2024 12:00:00.000"')
    # Blank cells under the broken columns lose nothing, so that row is clean.
    assert [r.value for r in second.readings] == [1.75] and second.error is None


def test_bad_rows_become_row_errors_beside_good_values() -> None:
    rows = list(parse((TESTDATA / "bad-rows.csv").read_bytes()).rows())
    assert [len(r.readings) for r in rows] == [2, 1, 0, 2]
    assert rows[1].error is not None and "'-nan(ind)' is not a number" in rows[1].error.reason
    assert rows[1].readings[0].value == 81.0
    assert rows[2].error is not None and "timestamp 'not a time'" in rows[2].error.reason
    assert rows[0].error is None and rows[3].error is None


def test_not_pdh_and_empty_files_are_file_errors() -> None:
    with pytest.raises(PdhFormatError, match=r"PDH-CSV 4\.0"):
        parse((TESTDATA / "not-pdh.csv").read_bytes())
    with pytest.raises(PdhFormatError, match="empty"):
        parse(b"\r\n")
    # A cut zone name that begins two zones' names is not guessed; the timezone setting decides.
    cut = b'"(PDH-CSV 4.0) (Eastern Daylight Ti'
    with pytest.raises(UnresolvedTimeZone, match=r"Eastern Daylight Time \(Mexico\)") as exc:
        parse(cut)
    assert exc.value.candidates == ("America/Cancun", "America/New_York")
    assert parse(cut, timezone="America/New_York").zone.source == "timezone setting"


def test_utf16_without_bom_and_cut_mid_character() -> None:
    text = (TESTDATA / "bad-rows.csv").read_text(encoding="utf-8")
    data = text.encode("utf-16-le")[:-1]
    decoded, encoding = decode(data)
    assert encoding == "utf-16-le" and decoded == text[:-1]


def test_many_columns() -> None:
    cols = [f"\\\\BIG\\Process(p{i})\\Working Set" for i in range(3000)]
    header = ",".join(f'"{c}"' for c in ["(PDH-CSV 4.0) (UTC)(0)", *cols])
    row = ",".join(f'"{c}"' for c in ["01/01/2024 00:00:00.000", *(str(i) for i in range(3000))])
    (parsed,) = list(parse(f"{header}\r\n{row}\r\n".encode()).rows())
    assert len(parsed.readings) == 3000 and parsed.readings[-1].value == 2999.0


def test_garbage_never_raises_anything_but_a_file_error() -> None:
    huge = b'"(PDH-CSV 4.0) (UTC)(0)","\\\\H\\S\\T"\r\n"01/01/2024 00:00:00.000","' + b"9" * 200_000 + b'"\r\n'
    (row,) = list(parse(huge).rows())
    assert row.error is not None and "field limit" in row.error.reason
    for data in (bytes(range(256)) * 20, b"\x00" * 10, b'"' + b"x" * 200_000):
        with pytest.raises(PdhFormatError):
            parse(data)
