"""Shared format layer: units, mappings, row mapping, and a parse of the full real files."""

from __future__ import annotations

import json
import logging
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from ingest.formats import RepeatTracker, RowMapper, load_mapping, mapping_names, normalise
from ingest.formats.decoders import count_rows, iter_rows
from ingest.formats.units import canonical_unit
from machinewatch.record import Reading, make_event_id
from tests.realdata import realdata_file

SENSORS = "sensors/dados_sensores.txt"
SERVERS = "servers/course-dataset-20-servers-5s.csv"
TESTDATA = Path(__file__).parents[2] / "ingest" / "history" / "testdata"


def test_units_normalise_and_keep_the_original() -> None:
    assert normalise(212.0, "°F") == (100.0, "°C", 212.0, "°F")
    assert normalise(273.15, "K")[0] == pytest.approx(0.0)
    assert normalise(0.25, "fraction")[:2] == (25.0, "%")
    assert normalise(1500.0, "W")[:2] == (1.5, "kW")
    assert normalise(42.0, "°C") == (42.0, "°C", None, None)  # unchanged: no orig_* fields
    with pytest.raises(ValueError, match="unknown unit 'furlongs'"):
        canonical_unit("furlongs")


@pytest.mark.parametrize("name", mapping_names())
def test_shipped_mappings_load(name: str) -> None:
    assert load_mapping(name).name == name


def test_mapping_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name="x"\nsource="x"\nformat="csv"\ndevice_field="d"\ntime_field="t"\n'
                   'time_format="time_of_day"\n[[metrics]]\nfield="v"\nmetric="m"\nunit="°C"\n')
    with pytest.raises(ValueError, match="base_date"):
        load_mapping(bad)
    with pytest.raises(ValueError, match="unknown unit"):
        bad.write_text(bad.read_text().replace('"°C"', '"stone"').replace('"time_of_day"', '"iso"'))
        load_mapping(bad)
    with pytest.raises(ValueError, match="shipped mappings"):
        load_mapping("no-such-mapping")


def test_equipment_row_in_the_seed_format() -> None:
    # A line in the equipment-temperature seed's own format, written here (values made up).
    line = ('{"id_sensor":"Sensor-1503-104QZ","id_equipamento":"Equipament-0323XH-104QZ","sensor":"sensor7", '
            '"data_evento":"2024-01-02T03:04:05.123456Z", "padrao":{"formato":"iot:leitura:sensor:temp", '
            '"leitura":{"temperatura":21.5}}}')
    result = RowMapper(load_mapping("equipment")).map(json.loads(line), line)
    assert not result.rejects
    (reading,) = result.readings
    assert (reading.device_id, reading.metric, reading.value, reading.unit) == (
        "Equipament-0323XH-104QZ", "temperature", 21.5, "°C")
    # 2024-01-02T03:04:05.123456Z, rounded to the millisecond: 1704164645123.
    assert reading.ts == 1_704_164_645_123


def test_equipment_row_from_the_real_file() -> None:
    with realdata_file(SENSORS).open() as handle:
        line = handle.readline().rstrip("\n")
    result = RowMapper(load_mapping("equipment")).map(json.loads(line), line)
    assert not result.rejects
    (reading,) = result.readings
    assert reading.device_id == "Equipament-0323XH-762GK"
    assert reading.value == 73.3 and reading.unit == "°C"
    assert reading.ts == round(pd.Timestamp("2023-03-15T12:15:37.166944Z").value / 1e6)


def test_event_id_depends_on_the_event_not_on_where_it_was_read() -> None:
    data = {"time": 1717236000, "host": "h1", "temp_f": 98.6}
    first = RowMapper(load_mapping("dc-usa")).map(data, "a").readings[0]
    again = RowMapper(load_mapping("dc-usa")).map(dict(data), "different raw text").readings[0]
    later = RowMapper(load_mapping("dc-usa")).map({**data, "time": 1717236001}, "a").readings[0]
    assert first.event_id == again.event_id != later.event_id


def test_schema_evolution_and_rejects(caplog: pytest.LogCaptureFixture) -> None:
    mapper = RowMapper(load_mapping("servers"))
    rows = list(iter_rows(TESTDATA / "servers-evolving.csv", "csv"))
    with caplog.at_level(logging.INFO):
        results = [mapper.map(r.data or {}, r.raw) for r in rows]
    assert sum("extra_col" in m for m in caplog.messages) == 1  # unknown column logged once
    assert [len(r.readings) for r in results] == [3, 0, 2, 2, 0]
    assert "device field 'server_id'" in results[1].rejects[0].reason
    assert "metric 'cpu_pct'" in results[3].rejects[0].reason and "'abc'" in results[3].rejects[0].reason
    assert "none of the metric fields" in results[4].rejects[0].reason
    # The clock passing midnight moves to the next day after base_date.
    assert results[0].readings[0].time.date() == date(2024, 1, 1)
    assert results[2].readings[0].time.date() == date(2024, 1, 2)


def test_csv_with_more_cells_than_header_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n1,2,3\n")
    rows = list(iter_rows(path, "csv"))
    assert rows[0].data == {"a": "1", "b": "2"} and rows[1].data is None and "3 cells" in (rows[1].error or "")


def test_a_byte_invalid_in_the_files_encoding_costs_only_its_row_which_keeps_its_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    bad_line = b"2,caf\xe9\r\n"  # cp1252 e-acute in a file read as UTF-8
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1,ok\r\n" + bad_line + b"3,\xe2\x82\xac\r\n")
    rows = list(iter_rows(path, "csv"))
    assert [r.data for r in rows] == [{"a": "1", "b": "ok"}, None, {"a": "3", "b": "\u20ac"}]
    assert rows[1].raw == bad_line and "byte 0xe9" in (rows[1].error or "") and "utf-8" in (rows[1].error or "")
    assert rows[0].raw == b"1,ok\r\n" and rows[2].raw == "3,\u20ac\r\n".encode()
    legacy = tmp_path / "y.jsonl"
    lines = ['{"t": 1, "name": "Ж"}\n'.encode("cp1251"), b"not json\n"]
    legacy.write_bytes(b"".join(lines))
    rows = list(iter_rows(legacy, "jsonl", encoding="cp1251"))
    assert rows[0].data == {"t": 1, "name": "Ж"} and [r.raw for r in rows] == lines


def test_full_real_servers_csv_parses_like_pandas() -> None:
    servers = realdata_file(SERVERS)
    frame = pd.read_csv(servers)
    mapper = RowMapper(load_mapping("servers"))
    readings = []
    for row in iter_rows(servers, "csv"):
        result = mapper.map(row.data or {}, row.raw)
        assert not result.rejects
        readings += result.readings
    assert count_rows(servers, "csv") == len(frame) == 28_800
    assert len(readings) == 5 * len(frame)
    assert len({r.event_id for r in readings}) == len(readings)
    cpu = sorted(r.value for r in readings if r.metric == "cpu_pct")
    assert cpu == sorted(frame.cpu_pct.tolist())
    net_in = sorted(r.value for r in readings if r.metric == "net_in")
    assert net_in == sorted(frame.net_in.tolist())
    span = (max(r.ts for r in readings) - min(r.ts for r in readings)) / 1000
    assert span == (pd.Timedelta("22:52:55") - pd.Timedelta("20:53:00")).total_seconds()


def test_full_real_sensor_file_parses() -> None:
    mapper = RowMapper(load_mapping("equipment"))
    rows = list(iter_rows(realdata_file(SENSORS), "jsonl"))
    readings = [r for row in rows for r in mapper.map(row.data or {}, row.raw).readings]
    assert len(rows) == len(readings) == 10_000
    assert len({r.event_id for r in readings}) == 10_000


@pytest.mark.parametrize("bad", [{"a": 1}, [1, 2], True, 1.5])
def test_device_field_type_flips_are_rejected(bad: object) -> None:
    mapper = RowMapper(load_mapping("servers"))
    result = mapper.map({"ts": "20:53:00", "server_id": bad, "cpu_pct": "50.0"}, b"raw")
    assert result.readings == []
    assert "must be a string or an integer" in result.rejects[0].reason


# -- constants, repeated times, the README --------------------------------------------------------
PUMP = """name = "pump"
source = "plant-7-export"
format = "csv"
device = "pump-7"
time_field = "timestamp"
site = "plant-7"

[[metrics]]
field = "temp"
metric = "temperature"
unit = "°C"
"""


def test_a_constant_device_maps_a_file_without_a_device_column(tmp_path: Path) -> None:
    path = tmp_path / "pump.toml"
    path.write_text(PUMP)
    mapping = load_mapping(path)
    assert mapping.constants() == {"device": "pump-7", "site": "plant-7"}
    result = RowMapper(mapping).map({"timestamp": "2024-03-01T10:05:00Z", "temp": "61.5"}, b"raw")
    assert not result.rejects
    (reading,) = result.readings
    assert (reading.device_id, reading.site, reading.value) == ("pump-7", "plant-7", 61.5)


def test_constants_given_at_load_time_replace_the_field_they_stand_for(tmp_path: Path) -> None:
    mapping = load_mapping("dc-usa", constants={"device": "us-single", "region": "us-east"})
    assert mapping.device_field is None and mapping.constants()["device"] == "us-single"
    reading = RowMapper(mapping).map({"time": 1717236000, "host": "ignored", "temp_f": 50}, b"raw").readings[0]
    assert (reading.device_id, reading.region, reading.site) == ("us-single", "us-east", "dc-virginia")
    with pytest.raises(ValueError, match="'colour' is not a field a mapping can set; allowed: device, site, region"):
        load_mapping("dc-usa", constants={"colour": "red"})
    with pytest.raises(ValueError, match="constant device must be a non-empty string"):
        load_mapping("dc-usa", constants={"device": " "})


def test_device_must_come_from_exactly_one_place(tmp_path: Path) -> None:
    path = tmp_path / "pump.toml"
    path.write_text(PUMP.replace('device = "pump-7"', 'device = "pump-7"\ndevice_field = "id"'))
    with pytest.raises(ValueError, match=r"device_field .* or device .*, not both"):
        load_mapping(path)
    path.write_text(PUMP.replace('device = "pump-7"\n', ""))
    with pytest.raises(ValueError, match="no device: set device_field"):
        load_mapping(path)
    path.write_text(PUMP.replace('"pump-7"', '" pump-7"'))
    with pytest.raises(ValueError, match="no leading or trailing blanks"):
        load_mapping(path)


def test_reject_kinds_are_set() -> None:
    mapper = RowMapper(load_mapping("servers"))
    rows = list(iter_rows(TESTDATA / "servers-evolving.csv", "csv"))
    kinds = [[r.kind for r in mapper.map(row.data or {}, row.raw).rejects] for row in rows]
    assert kinds == [[], ["no_device"], [], ["bad_value"], ["no_metrics"]]
    assert RowMapper(load_mapping("dc-usa")).map({"host": "h"}, b"").rejects[0].kind == "no_time"
    assert RowMapper(load_mapping("dc-usa")).map({"host": "h", "time": "x"}, b"").rejects[0].kind == "bad_time"


def test_repeat_tracker_keeps_a_new_value_at_a_repeated_time_and_flags_a_true_duplicate() -> None:
    mapper = RowMapper(load_mapping("dc-usa"))

    def reading(ts: int, temp_f: float) -> Reading:
        return mapper.map({"time": ts, "host": "h1", "temp_f": temp_f}, b"").readings[0]

    tracker = RepeatTracker()
    first = tracker.check(reading(1717236000, 50.0), 1)
    stepped_back = tracker.check(reading(1717236000, 51.0), 7)
    again = tracker.check(reading(1717236000, 52.0), 8)
    duplicate = tracker.check(reading(1717236000, 51.0), 9)
    other_time = tracker.check(reading(1717236001, 50.0), 10)
    kept = [x.reading for x in (first, stepped_back, again, other_time) if x.reading is not None]
    assert len(kept) == 4 and len({r.event_id for r in kept}) == 4
    assert kept[0].event_id == reading(1717236000, 50.0).event_id  # the first keeps the plain id
    assert [first.occurrence, stepped_back.occurrence, again.occurrence, other_time.occurrence] == [0, 1, 2, 0]
    assert stepped_back.earlier_row == 1
    assert kept[1].event_id == make_event_id(kept[0].event_id, "occurrence", 1)  # documented in the README
    assert duplicate.reading is None and duplicate.earlier_row == 7
    # The same rows read again (another run, or a resume passing the skipped rows through) give the same ids.
    replayed = RepeatTracker()
    again_ids = [replayed.check(reading(1717236000, v), n).reading for n, v in ((1, 50.0), (7, 51.0), (8, 52.0))]
    assert [r.event_id for r in again_ids if r] == [r.event_id for r in kept[:3]]


def test_readme_table_says_what_the_mappings_do() -> None:
    readme = (Path(__file__).parents[2] / "ingest/formats/README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in readme.splitlines() if line.startswith("| `")}
    assert sorted(rows) == mapping_names()
    for name, line in rows.items():
        mapping = load_mapping(name)
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert cells[1] == f"`{mapping.source}`", name
        assert cells[3] == f"`{mapping.device_field}`", name
        assert cells[4].startswith(f"`{mapping.time_field}`, {mapping.time_format}"), name
        assert cells[5] == f"`{mapping.region}` / `{mapping.site}`", name
        shown = re.findall(r"`([^`]+ ← [^`]+)`", cells[6])
        expected = []
        for spec in mapping.metrics:
            stored = canonical_unit(spec.unit)
            unit = spec.unit if stored == spec.unit else f"{spec.unit} → {stored}"
            expected.append(f"{spec.metric} ← {spec.field} ({unit})")
        assert shown == expected, name
        assert ("required" in cells[6]) == any(s.required for s in mapping.metrics), name
        if mapping.base_date:
            assert str(mapping.base_date) in cells[4], name


def test_a_mapping_without_a_device_gets_it_at_load_time(tmp_path: Path) -> None:
    path = tmp_path / "any-pump.toml"
    path.write_text(PUMP.replace('device = "pump-7"\n', ""))
    mapping = load_mapping(path, constants={"device": "pump-9"})
    assert mapping.constants()["device"] == "pump-9" and mapping.device_field is None
