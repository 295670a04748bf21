"""The PerfMon simulator writes PDH-CSV 4.0 as a data collector set does, repeatably for a seed."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from machinewatch.cli import build_parser
from simulators.perfmon import CORRUPT_CELL, PerfmonSimulator

START = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.csv"))}


def test_same_seed_same_files(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        PerfmonSimulator(tmp_path / name, hosts=["H1", "H2"], rows_per_file=10, seed=seed,
                         spike_rate=0.1).write_files(START, 2)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c and a.keys() == c.keys()
    assert len(a) == 4


def test_pdh_layout_rolling_and_first_row_blanks(tmp_path: Path) -> None:
    sim = PerfmonSimulator(tmp_path, hosts=["SRV-9"], rows_per_file=4, interval_s=15, zone_name="India Standard Time",
                           offset_minutes=-330)
    paths = sim.write_files(START, 3)
    assert [p.parent.name for p in paths] == ["SRV-9_20260115-000001", "SRV-9_20260115-000002", "SRV-9_20260115-000003"]
    raw = paths[1].read_bytes()
    assert raw.count(b"\r\n") == 5 and raw.endswith(b"\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode())))
    assert rows[0][0] == "(PDH-CSV 4.0) (India Standard Time)(-330)"
    assert rows[0][1] == "\\\\SRV-9\\Processor(_Total)\\% Processor Time"
    assert all(line.startswith('"') for line in raw.decode().splitlines())
    # The second file's first sample is the 5th: 10:01:00 UTC is 15:31:00 IST.
    first_local = datetime.strptime(rows[1][0], "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=IST)
    assert abs((first_local - datetime(2026, 1, 15, 10, 1, tzinfo=UTC)).total_seconds()) < 0.01
    # Rate counters have no value in a file's first row, as PerfMon writes it.
    assert rows[1].count(" ") == 2 and " " not in rows[2]


def test_silence_spikes_and_corrupt_cells(tmp_path: Path) -> None:
    sim = PerfmonSimulator(tmp_path, hosts=["A", "B"], rows_per_file=20, interval_s=1,
                           silences=[(1, 5, 3)], spike_rate=0.2, corrupt_every=6)
    a_path, b_path = sim.write_files(START, 1)[:2]
    a_rows = list(csv.reader(io.StringIO(a_path.read_text())))[1:]
    b_rows = list(csv.reader(io.StringIO(b_path.read_text())))[1:]
    assert len(a_rows) == len(b_rows) == 20
    cet = timezone(timedelta(hours=1))  # header offset -60
    b_steps = [round((datetime.strptime(r[0], "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=cet) - START).total_seconds())
               for r in b_rows[:8]]
    assert b_steps == [0, 1, 2, 3, 4, 8, 9, 10]  # host B silent for samples 5..7
    assert sum(r[1] == "100.0" for r in a_rows) >= 1
    assert [i for i, r in enumerate(a_rows) if r[1] == CORRUPT_CELL] == [6, 12, 18]


@pytest.mark.parametrize(("locale", "encoding", "bom"), [("ru", "cp1251", b""), ("it", "utf-16", b"\xff\xfe")])
def test_locales_and_encodings(tmp_path: Path, locale: str, encoding: str, bom: bytes) -> None:
    (path,) = PerfmonSimulator(tmp_path, hosts=["X"], rows_per_file=3, locale=locale,
                               encoding=encoding).write_files(START, 1)
    data = path.read_bytes()
    assert data.startswith(bom)
    text = data.decode(encoding)
    assert ("Процессор" if locale == "ru" else "Processore") in text
    if bom:  # one BOM at the start, not one per appended row
        assert data.count(bom) == 1


def test_cli_writes_files(tmp_path: Path) -> None:
    args = build_parser().parse_args(["simulate", "perfmon", "--out-dir", str(tmp_path), "--hosts", "A,B",
                                      "--files", "2", "--rows-per-file", "3", "--interval-s", "2", "--seed", "5"])
    assert args.func(args, None) == 0
    assert len(list(tmp_path.rglob("*.csv"))) == 4
