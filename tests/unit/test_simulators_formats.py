"""Source-format simulators: the original shapes, determinism, anomalies, never future event times."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import pandas as pd
import pytest

from ingest.formats import FeedMapper
from simulators.datacenter import DatacenterSimulator, write_history
from simulators.equipment import EquipmentSimulator
from simulators.feed import Anomalies, backfill, live
from simulators.servers import HEADER, ServerSimulator
from tests.realdata import realdata_file

START = datetime(2025, 3, 1, tzinfo=UTC)
# The equipment-temperature seed's line format, written out by us (values made up): key order, the
# space after some commas but not others, nesting. The real file is only compared when present.
SENSOR_LINE_FORMAT = (
    '{"id_sensor":"Sensor-1503-104QZ","id_equipamento":"Equipament-0323XH-104QZ","sensor":"sensor7", '
    '"data_evento":"2024-01-02T03:04:05.123456Z", "padrao":{"formato":"iot:leitura:sensor:temp", '
    '"leitura":{"temperatura":21.5}}}'
)
# The server-monitoring course dataset's header.
SERVERS_HEADER_FORMAT = "ts,server_id,cpu_pct,mem_pct,net_in,net_out,disk_io"


def _shape(obj: object) -> object:
    return {k: _shape(v) for k, v in obj.items()} if isinstance(obj, dict) else type(obj).__name__


MASK = re.compile(r'"[^"]*"|-?\d+(\.\d+)?')  # strings and numbers: what is left is punctuation and spaces


def _assert_same_format(line: str, reference: str) -> None:
    assert _shape(json.loads(line)) == _shape(json.loads(reference))
    assert MASK.sub("_", line) == MASK.sub("_", reference)
    assert list(json.loads(line)) == list(json.loads(reference))  # same key order


def test_equipment_lines_have_the_original_shape_and_spacing() -> None:
    line = next(EquipmentSimulator(sensors=2).stream(START)).line
    _assert_same_format(line, SENSOR_LINE_FORMAT)
    assert re.fullmatch(r"Sensor-1503-\d{3}[A-Z]{2}", json.loads(line)["id_sensor"])


def test_equipment_lines_match_the_real_file() -> None:
    real = realdata_file("sensors/dados_sensores.txt")
    with real.open() as handle:
        first = handle.readline().rstrip("\n")
    _assert_same_format(next(EquipmentSimulator(sensors=2).stream(START)).line, first)


def test_same_seed_same_lines_and_anomalies() -> None:
    a = [e.line for e in islice(EquipmentSimulator(sensors=3, seed=5).stream(START), 30)]
    b = [e.line for e in islice(EquipmentSimulator(sensors=3, seed=5).stream(START), 30)]
    c = [e.line for e in islice(EquipmentSimulator(sensors=3, seed=6).stream(START), 30)]
    assert a == b != c
    anomalies = Anomalies.parse(overheats=["1:2:3:40"], silences=["2:0:5"])
    events = list(islice(EquipmentSimulator(sensors=3, seed=5, anomalies=anomalies).stream(START), 24))
    plain = list(islice(EquipmentSimulator(sensors=3, seed=5).stream(START), 30))
    temp = {(e.record["id_equipamento"], e.ts_ms): e.record["padrao"]["leitura"]["temperatura"] for e in plain}
    silent = EquipmentSimulator(sensors=3, seed=5).ids[2][1]
    assert not [e for e in events if e.record["id_equipamento"] == silent and e.ts_ms < START.timestamp() * 1000 + 5000]
    hot = EquipmentSimulator(sensors=3, seed=5).ids[1][1]
    diffs = [round(e.record["padrao"]["leitura"]["temperatura"] - temp[(hot, e.ts_ms)], 1)
             for e in events if e.record["id_equipamento"] == hot]
    assert diffs[:6] == [0.0, 0.0, 40.0, 40.0, 40.0, 0.0]
    with pytest.raises(ValueError, match="DEVICE:START_S"):
        Anomalies.parse(overheats=["1:2"])


def test_servers_header_matches_the_real_file() -> None:
    real = realdata_file("servers/course-dataset-20-servers-5s.csv")
    with real.open() as handle:
        assert handle.readline().rstrip("\n") == HEADER


def test_servers_rows_parse_with_the_course_mapping() -> None:
    assert HEADER == SERVERS_HEADER_FORMAT
    events = list(islice(ServerSimulator(servers=4, seed=2).stream(START), 40))
    assert all(len(e.line.split(",")) == 7 for e in events)
    mapper = FeedMapper({"servers": {"base_date": START.date()}})
    readings = [r for e in events for r in mapper.map(e.feed, e.record, e.line).readings]
    assert len(readings) == 40 * 5 and min(r.ts for r in readings) == START.timestamp() * 1000


def test_datacentre_history_files_round_trip(tmp_path: Path) -> None:
    events = list(islice(DatacenterSimulator(servers=2, humidity_from_step=1).stream(START), 6 * 3))
    paths = write_history(tmp_path, events)
    india, usa = pd.read_csv(paths["dc-india"]), pd.read_json(paths["dc-usa"], lines=True)
    germany = pd.read_parquet(paths["dc-germany"])
    assert len(india) == len(usa) == len(germany) == 6
    assert india.humidity_pct.isna().sum() == 2  # the first step has no humidity yet
    assert (usa.load <= 1).all() and (germany.temperatur_k > 250).all() and (germany.leistung_w > 100).all()
    # Kelvin, Fahrenheit and Celsius of the same simulated temperature agree after the mappings.
    mapper = FeedMapper()
    temps = {e.feed: [r.value for r in mapper.map(e.feed, e.record, e.line).readings if r.metric == "temperature"]
             for e in events[:6]}
    assert set(temps) == {"dc-india", "dc-usa", "dc-germany"}


def test_backfill_ends_before_now_and_live_refuses_future_times() -> None:
    now = datetime.now(tz=UTC)
    events = list(backfill(ServerSimulator(servers=2), 10, now=now))
    assert len(events) == 20 and max(e.ts_ms for e in events) < now.timestamp() * 1000
    assert min(e.ts_ms for e in events) >= (now - timedelta(seconds=50)).timestamp() * 1000 - 1
    with pytest.raises(ValueError, match="future"):
        next(live(ServerSimulator(), speed=5))
    fast = list(live(DatacenterSimulator(servers=1, interval_ms=1000), speed=20, duration_s=0.5))
    assert fast and max(e.ts_ms for e in fast) <= datetime.now(tz=UTC).timestamp() * 1000
