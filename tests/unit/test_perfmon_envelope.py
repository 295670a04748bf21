"""Issue 14, PerfMon half: a broken envelope (header, zone, units) never costs a file's values.

Every fixture is counted independently: its bytes are split into lines and decoded with the codec
the test names, the csv module reads the cells, and each non-blank cell must come back as exactly
one reading or sit in a row error whose bytes are the line's own. Expected UTC times come from
zoneinfo or are written out by hand (the daylight-saving rows); expected units are written out.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ingest.perfmon import watcher as watcher_mod
from ingest.perfmon.config import ConfigError, PerfmonConfig, load_config
from ingest.perfmon.parser import (
    ZONE_FROM_CONFIG,
    ZONE_FROM_NAME,
    ZONE_FROM_OFFSET,
    PdhFormatError,
    UnresolvedTimeZone,
    parse,
)
from ingest.perfmon.units import builtin_table
from ingest.perfmon.watcher import CRASH_POINTS, WatcherState
from ingest.perfmon.zones import ZoneNameError, resolve_zone_name
from machinewatch import quality
from machinewatch.config import load_settings
from tests.collector_support import PerfmonWatcher
from tests.unit.conftest import RecordingPublisher

TESTDATA = Path(__file__).resolve().parents[2] / "ingest" / "perfmon" / "testdata"
MB = 1048576.0


@dataclass(frozen=True)
class Fixture:
    name: str
    codec: str
    bom: bytes
    timezone: str | None  # the setting the test gives the parser
    zone_source: str
    units: dict[str, tuple[str, float]]  # counter name -> (unit, factor)
    unknown: tuple[str, ...] = ()
    utc: tuple[str | None, ...] = ()  # per data row, hand-written (None: the row's time is broken)
    local_zone: str = ""  # else: UTC from the row's local time in this zone


FIXTURES = {
    f.name: f for f in (
        Fixture("ru-cut-header-cp1251.csv", "cp1251", b"", None, ZONE_FROM_NAME, {
            "% загруженности процессора": ("%", 1.0), "Рабочий набор": ("bytes", 1.0),
            "Рабочий набор - частный": ("bytes", 1.0), "Обмен данными: байт в сек": ("bytes/s", 1.0),
            "Счетчик потоков": ("count", 1.0), "Прошло времени": ("s", 1.0),
            "Квота невыгружаемого пула": ("count", 1.0), "Доступно МБ": ("bytes", MB),
        }, unknown=("Квота невыгружаемого пула",), local_zone="Europe/Moscow"),
        Fixture("zone-name-no-offset-utf16.csv", "utf-16-le", codecs.BOM_UTF16_LE, None, ZONE_FROM_NAME, {
            "Utilization Percentage": ("%", 1.0), "Dedicated Usage": ("bytes", 1.0), "Commit Limit": ("bytes", 1.0),
            "Committed Bytes": ("bytes", 1.0), "% Usage": ("%", 1.0), "Average Session Lifetime (s)": ("s", 1.0),
            "Processor Frequency": ("count", 1.0),
        }, unknown=("Processor Frequency",), utc=(
            # Berlin, 29 Oct 2023: 03:00 CEST became 02:00 CET, so 02:00-02:40 local come twice.
            "2023-10-28 23:20", "2023-10-28 23:40", "2023-10-29 00:00", "2023-10-29 00:20", "2023-10-29 00:40",
            "2023-10-29 01:00", "2023-10-29 01:20", None, "2023-10-29 01:40", "2023-10-29 02:00",
            "2023-10-29 02:20")),
        Fixture("no-zone-de-utf8.csv", "utf-8", b"", "Europe/Berlin", ZONE_FROM_CONFIG, {
            "Prozessorzeit (%)": ("%", 1.0), "Verfügbare MB": ("bytes", MB), "Bytes gesendet/s": ("bytes/s", 1.0),
            "Arbeitsseite": ("bytes", 1.0), "Mittlere Sek./Lesevorgänge": ("s", 1.0), "Threadanzahl": ("count", 1.0),
        }, utc=(  # 31 Mar 2024: 02:00 CET became 03:00 CEST
            "2024-03-31 00:30", "2024-03-31 00:45", "2024-03-31 01:00", "2024-03-31 01:15")),
        Fixture("unknown-zone-fr-cp1252.csv", "cp1252", b"", "Europe/Paris", ZONE_FROM_CONFIG, {
            "% temps processeur": ("%", 1.0), "Mégaoctets disponibles": ("bytes", MB),
            "Moyenne disque s/lecture": ("s", 1.0), "Octets reçus/s": ("bytes/s", 1.0),
            "Plage de travail": ("bytes", 1.0), "Nombre de threads": ("count", 1.0),
        }, local_zone="Europe/Paris"),
        Fixture("localised-units-utf8.csv", "utf-8", b"", None, ZONE_FROM_OFFSET, {
            "% de tiempo de procesador": ("%", 1.0), "MBytes disponibles": ("bytes", MB),
            "Bytes enviados/s": ("bytes/s", 1.0), "Espacio de trabajo": ("bytes", 1.0),
            "Promedio de segundos de disco/lectura": ("s", 1.0),
            "% Tempo de Processador": ("%", 1.0), "MBytes disponíveis": ("bytes", MB),
            "Conjunto de trabalho": ("bytes", 1.0), "Média de s/leitura de disco": ("s", 1.0),
            "% 处理器时间": ("%", 1.0), "可用 MB": ("bytes", MB), "发送字节/秒": ("bytes/s", 1.0),
            "工作集": ("bytes", 1.0), "平均磁盘 秒/读取": ("s", 1.0),
            "% Processor Time": ("%", 1.0), "使用可能メガバイト": ("bytes", MB), "送信バイト/秒": ("bytes/s", 1.0),
            "ワーキング セット": ("bytes", 1.0), "平均ディスク秒/読み取り": ("s", 1.0),
            "MByte disponibili": ("bytes", MB), "Media sec/lettura disco": ("s", 1.0), "Working set": ("bytes", 1.0),
        }, local_zone="UTC"),
    )
}


def independent_lines(fx: Fixture) -> tuple[list[bytes], list[list[str]]]:
    """The file's lines as bytes (BOM and line breaks off) and as csv cells, without the parser."""
    data = (TESTDATA / fx.name).read_bytes()
    assert data.startswith(fx.bom)
    lines = [line for line in data[len(fx.bom):].split("\r\n".encode(fx.codec)) if line]
    return lines, [next(csv.reader([line.decode(fx.codec)])) for line in lines]


def good_cells(fx: Fixture) -> int:
    """Cells that must become readings: numbers in rows whose time is right."""
    _, rows = independent_lines(fx)
    return sum(1 for i, cells in enumerate(rows[1:]) if expected_utc_ms(fx, i, cells[0]) is not None
               for c in cells[1:] if c.strip() and _is_number(c))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def expected_utc_ms(fx: Fixture, row: int, stamp: str) -> int | None:
    if fx.utc:
        text = fx.utc[row]
        return None if text is None else round(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(
            tzinfo=UTC).timestamp() * 1000)
    local = datetime.strptime(stamp, "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=ZoneInfo(fx.local_zone))
    return round(local.timestamp() * 1000)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_value_is_published_once_or_dead_lettered_with_its_bytes(name: str) -> None:
    fx = FIXTURES[name]
    lines, rows = independent_lines(fx)
    header, data = rows[0], rows[1:]
    pfile = parse((TESTDATA / name).read_bytes(), timezone=fx.timezone, region="r", site="s")
    assert pfile.zone.source == fx.zone_source
    assert (pfile.encoding, pfile.bom) == (fx.codec, fx.bom)
    parsed = list(pfile.rows())
    assert len(parsed) == len(data)
    published = accounted = 0
    encodings = set()
    for i, (cells, row) in enumerate(zip(data, parsed, strict=True)):
        utc_ms = expected_utc_ms(fx, i, cells[0])
        good = {j: c for j, c in enumerate(cells[1:], start=1) if c.strip() and _is_number(c)} if utc_ms else {}
        bad = [c for c in cells[1:] if c.strip()] if utc_ms is None else [
            c for c in cells[1:] if c.strip() and not _is_number(c)]
        # Each good cell is one reading: its column's counter, value in the canonical unit, UTC time.
        got = {r.event_id: r for r in row.readings}
        assert len(got) == len(row.readings) == len(good)
        for r, (j, cell) in zip(row.readings, sorted(good.items()), strict=True):
            counter = header[j].rsplit("\\", 1)[1]
            unit, factor = fx.units[counter]
            assert (r.ts, r.unit, r.value) == (utc_ms, unit, float(cell) * factor), (i, counter)
            assert r.orig_value == (float(cell) if factor != 1.0 else None)
            assert r.device_id == header[j].split("\\")[2]
        published += len(row.readings)
        if bad:
            # The rest of the row is in its dead letter, with the line's exact bytes in the file's encoding.
            assert row.error is not None
            assert row.error.raw_bytes == lines[i + 1]
            doc = json.loads(json.dumps(quality.letter("perfmon", row.error.raw_bytes, row.error.reason)))
            assert quality.raw_bytes(doc) == lines[i + 1] and doc["size"] == len(lines[i + 1])
            encodings.add(doc["raw_encoding"])
            accounted += len(bad)
        else:
            assert row.error is None
    total = sum(1 for cells in data for c in cells[1:] if c.strip())
    assert published + accounted == total
    assert published > 0
    if fx.codec == "cp1251":
        assert "base64" in encodings  # the Cyrillic row's cp1251 bytes are not UTF-8


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_notes_say_where_the_zone_came_from_and_which_counters_have_no_unit(name: str) -> None:
    fx = FIXTURES[name]
    lines, _ = independent_lines(fx)
    pfile = parse((TESTDATA / name).read_bytes(), timezone=fx.timezone)
    notes = {n.kind: n for n in pfile.notes}
    assert all(n.raw == lines[0] for n in pfile.notes)  # the header line's exact bytes
    if fx.zone_source == ZONE_FROM_OFFSET:
        assert "timezone" not in notes
    else:
        assert fx.zone_source in notes["timezone"].reason
    if fx.unknown:
        assert notes["unknown_unit"].reason.endswith(": " + "; ".join(fx.unknown))
    else:
        assert "unknown_unit" not in notes
    assert pfile.header.unknown_counters == fx.unknown


def test_cut_russian_header_reads_moscow_time_from_the_zone_name_prefix() -> None:
    pfile = parse((TESTDATA / "ru-cut-header-cp1251.csv").read_bytes())
    assert (pfile.header.zone, pfile.header.offset_minutes, pfile.header.zone_cut) == ("RTZ 2 (", None, True)
    assert pfile.zone.tz == ZoneInfo("Europe/Moscow") and "Russian Standard Time" in pfile.zone.detail
    assert "cut short" in pfile.notes[0].reason


def test_repeated_hour_is_right_when_resuming_at_any_row() -> None:
    pfile = parse((TESTDATA / "zone-name-no-offset-utf16.csv").read_bytes())
    every = list(pfile.rows())
    for start in range(len(every)):
        assert list(pfile.rows(start)) == every[start:], start


def test_zone_names_exact_daylight_localised_and_cut() -> None:
    assert resolve_zone_name("Russia TZ 2 Standard Time").iana == "Europe/Moscow"
    assert resolve_zone_name("rtz 2  (ЗИМА)").iana == "Europe/Moscow"  # case and spaces do not matter
    assert resolve_zone_name("Eastern Daylight Time").iana == "America/New_York"
    assert resolve_zone_name("ora solare Europa occidentale").iana == "Europe/Berlin"
    assert resolve_zone_name("中国标准时间").iana == "Asia/Shanghai"
    assert resolve_zone_name("RTZ 1 (", cut=True).iana == "Europe/Kaliningrad"
    assert resolve_zone_name("Russia TZ 11 St", cut=True).iana == "Asia/Kamchatka"
    with pytest.raises(ZoneNameError, match="3 zones") as exc:
        resolve_zone_name("RTZ 1", cut=True)  # RTZ 1, RTZ 10, RTZ 11
    assert exc.value.candidates == ("Asia/Kamchatka", "Asia/Srednekolymsk", "Europe/Kaliningrad")
    with pytest.raises(ZoneNameError, match="too short"):
        resolve_zone_name("RT", cut=True)
    with pytest.raises(ZoneNameError, match="cut short"):
        resolve_zone_name("RTZ 2 (", cut=False)  # a complete name is not matched by prefix


def _header(first: str) -> bytes:
    return f'"{first}","\\\\H\\Memory\\Available MBytes"\r\n"07/01/2024 12:00:00.000","7"\r\n'.encode()


@pytest.mark.parametrize(("first", "timezone", "source", "hour"), [
    ("(PDH-CSV 4.0) (Eastern Daylight Time)(240)", "Asia/Tokyo", ZONE_FROM_OFFSET, 16),  # offset first
    ("(PDH-CSV 4.0) (Eastern Daylight Time)", "Asia/Tokyo", ZONE_FROM_NAME, 16),  # then the name
    ("(PDH-CSV 4.0) (Eastern Daylight Time)(24", None, ZONE_FROM_NAME, 16),  # a cut offset is not used
    ("(PDH-CSV 4.0) (Eastern Daylight Time)(9999)", None, ZONE_FROM_NAME, 16),  # nor an impossible one
    ("(PDH-CSV 4.0) (Nowhere Time)", "Asia/Tokyo", ZONE_FROM_CONFIG, 3),  # then the setting
    ("(PDH-CSV 4.0)", "Asia/Tokyo", ZONE_FROM_CONFIG, 3),
    ("(PDH-CSV 4.1) (UTC)(0)", None, ZONE_FROM_OFFSET, 12),  # another version label: a header note
    ("(PDH-CS", "UTC", ZONE_FROM_CONFIG, 12),  # the label itself cut short, counters follow
])
def test_zone_resolution_order(first: str, timezone: str | None, source: str, hour: int) -> None:
    pfile = parse(_header(first), timezone=timezone)
    assert pfile.zone.source == source
    (row,) = list(pfile.rows())
    assert row.readings[0].time.hour == hour
    kinds = [n.kind for n in pfile.notes]
    assert kinds == ([] if first.endswith(")(240)") else ["header"] if source == ZONE_FROM_OFFSET else ["timezone"])


def test_no_zone_anywhere_is_unresolved_not_rejected() -> None:
    with pytest.raises(UnresolvedTimeZone, match="not a known Windows time-zone name") as exc:
        parse((TESTDATA / "unknown-zone-fr-cp1252.csv").read_bytes())
    lines, _ = independent_lines(FIXTURES["unknown-zone-fr-cp1252.csv"])
    assert exc.value.header_raw == lines[0] and exc.value.identity
    with pytest.raises(UnresolvedTimeZone, match="names no time zone"):
        parse((TESTDATA / "no-zone-de-utf8.csv").read_bytes())
    with pytest.raises(PdhFormatError, match=r"PDH-CSV 4\.0"):  # not PerfMon at all: still rejected
        parse(b'"(PDH-","x"\r\n')


def test_config_unit_rules_come_first_and_silence_the_unknown_note() -> None:
    config = PerfmonConfig.model_validate({"watch_dir": "/x", "unit_rules": [
        {"patterns": ["^processor frequency$"], "unit": "MHz"},
        {"patterns": ["Commit Limit"], "unit": "KiB", "factor": 2.0, "orig_unit": "half-KiB"},
    ]})
    pfile = parse((TESTDATA / "zone-name-no-offset-utf16.csv").read_bytes(), units=config.unit_table())
    units = {r.metric.split(".")[1].split("[")[0]: (r.unit, r.orig_unit) for row in pfile.rows() for r in row.readings}
    assert units["processor_frequency"] == ("MHz", None)
    assert units["commit_limit"] == ("KiB", "half-KiB")
    assert [n.kind for n in pfile.notes] == ["timezone"]
    assert builtin_table().unit("Processor Frequency") == ("count", 1.0, None)  # the built-in table is unchanged


def test_config_checks_timezone_and_unit_rules(tmp_path: Path) -> None:
    conf = tmp_path / "w.conf"
    conf.write_text('[perfmon]\nwatch_dir = "in"\ntimezone = "Mars/Olympus"\n'
                    '[[perfmon.unit_rules]]\npatterns = ["(unclosed"]\nunit = "x"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(conf)
    assert "perfmon.timezone = 'Mars/Olympus'" in str(exc.value) and "Europe/Moscow" in str(exc.value)
    assert "(unclosed" in str(exc.value) and "unit_rules" in str(exc.value)
    conf.write_text('[perfmon]\nwatch_dir = "in"\ntimezone = "Europe/Moscow"\n'
                    '[[perfmon.unit_rules]]\npatterns = ["Frequency"]\nunit = "MHz"\n')
    config = load_config(conf)
    assert config.timezone == "Europe/Moscow" and config.unit_table().unit("Processor Frequency")[0] == "MHz"
    assert config.zone_fingerprint != config.model_copy(update={"timezone": None}).zone_fingerprint


# -- the watcher: parking, re-reading the config, taking parked files back -----------------------------


def _write_config(path: Path, inbox: Path, extra: str = "") -> None:
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(f'[perfmon]\nwatch_dir = "{inbox}"\nsettle_s = 0\nbatch_rows = 4\n{extra}')
    os.utime(path, (before + 5, before + 5))  # a new mtime even within the file system's time resolution


def _watcher(conf: Path, pub: RecordingPublisher) -> PerfmonWatcher:
    w = PerfmonWatcher(load_config(conf), load_settings(), publisher=pub, config_path=conf)  # type: ignore[arg-type]
    w.setup()
    return w


def test_unresolvable_file_is_parked_then_taken_back_when_the_config_names_a_zone(tmp_path: Path) -> None:
    inbox, conf = tmp_path / "in", tmp_path / "perfmon.conf"
    _write_config(conf, inbox)
    pub = RecordingPublisher()
    w = _watcher(conf, pub)
    sub = inbox / "PC-SALLE_20240714-000001"
    sub.mkdir(parents=True)
    shutil.copy(TESTDATA / "unknown-zone-fr-cp1252.csv", sub / "DataCollector01.csv")
    (outcome,) = w.run_once()
    assert outcome.status == "parked"
    parked = w.config.error_path / "PC-SALLE_20240714-000001" / "DataCollector01.csv"
    assert parked.read_bytes() == (TESTDATA / "unknown-zone-fr-cp1252.csv").read_bytes()
    reason = parked.with_name("DataCollector01.csv.reason.txt").read_text()
    assert f"[perfmon] table of {conf}" in reason and 'timezone = "Europe/Moscow"' in reason
    assert "Heure normale de l'Atlantide" in reason
    docs = pub.docs()
    assert [d["kind"] for d in docs] == ["parked"] and not any("event_id" in d for d in docs)
    state = json.loads(w.config.state_path.read_text())
    assert list(state["parked"]) == ["PC-SALLE_20240714-000001/DataCollector01.csv"]

    # Nothing changed: it stays parked, and no second note.
    assert w.run_once() == [] and parked.exists() and len(pub.delivered) == 1
    # A broken edit of the config is refused; the file stays parked, the watcher keeps running.
    _write_config(conf, inbox, 'timezone = "Nowhere/Land"\n')
    assert w.run_once() == [] and parked.exists()
    # The setting named in the reason: the file is taken back and published in that zone.
    _write_config(conf, inbox, 'timezone = "Europe/Paris"\n')
    (outcome,) = w.run_once()
    assert outcome.status == "done" and outcome.path == sub / "DataCollector01.csv"
    assert not parked.exists() and not parked.with_name("DataCollector01.csv.reason.txt").exists()
    assert (w.config.done_path / "PC-SALLE_20240714-000001" / "DataCollector01.csv").exists()
    readings = [d for d in pub.docs() if "event_id" in d]
    assert len(readings) == good_cells(FIXTURES["unknown-zone-fr-cp1252.csv"])
    # 12:00 in Paris in July is 10:00 UTC.
    assert min(d["ts"] for d in readings) == round(datetime(2024, 7, 14, 10, tzinfo=UTC).timestamp() * 1000)
    (note,) = [d for d in pub.docs() if d.get("kind") == "timezone"]
    assert "timezone setting" in note["reason"] and "Europe/Paris" in note["reason"]
    assert json.loads(w.config.state_path.read_text())["parked"] == {}


def test_parked_file_taken_away_by_hand_is_forgotten(tmp_path: Path) -> None:
    inbox, conf = tmp_path / "in", tmp_path / "perfmon.conf"
    _write_config(conf, inbox)
    w = _watcher(conf, RecordingPublisher())
    shutil.copy(TESTDATA / "no-zone-de-utf8.csv", inbox / "de.csv")
    assert [o.status for o in w.run_once()] == ["parked"]
    (w.config.error_path / "de.csv").unlink()
    w.run_once()
    assert WatcherState.load(w.config.state_path).parked == {}


def test_state_file_of_version_1_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"version": 1, "files": {"abc": {"name": "a.csv", "rows": 3, "acked_rows": 3,
                                                                "pending": None, "done_ms": 1, "updated_ms": 1}}}))
    state = WatcherState.load(path)
    assert state.files["abc"].notes_acked and state.parked == {}


class Crash(BaseException):
    pass


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_at_each_point_repeats_no_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             kafka_readback: list[RecordingPublisher], point: str) -> None:
    inbox, conf = tmp_path / "in", tmp_path / "perfmon.conf"
    _write_config(conf, inbox)
    inbox.mkdir()
    for name in ("ru-cut-header-cp1251.csv", "zone-name-no-offset-utf16.csv"):
        shutil.copy(TESTDATA / name, inbox / name)
        os.utime(inbox / name, (time.time() - 60, time.time() - 60))

    def crash(code: int) -> None:
        raise Crash(code)

    monkeypatch.setattr(watcher_mod.os, "_exit", crash)
    monkeypatch.setenv("MW_PERFMON_CRASH_AT", point)
    monkeypatch.setenv("MW_PERFMON_CRASH_NTH", "1")
    first = RecordingPublisher()
    kafka_readback.append(first)
    with pytest.raises(Crash):
        _watcher(conf, first).run_once()
    monkeypatch.delenv("MW_PERFMON_CRASH_AT")
    second = RecordingPublisher()
    kafka_readback.append(second)
    _watcher(conf, second).run_once()
    docs = first.docs() + second.docs()
    notes = [d["note_id"] for d in docs if "note_id" in d]
    ids = [d["event_id"] for d in docs if "event_id" in d]
    assert len(notes) == len(set(notes)) == 4  # timezone + unknown_unit, for each of the two files
    assert len(ids) == len(set(ids)) == good_cells(FIXTURES["ru-cut-header-cp1251.csv"]) + good_cells(
        FIXTURES["zone-name-no-offset-utf16.csv"])
    assert len(list((inbox / "done").iterdir())) == 2
