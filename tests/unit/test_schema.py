"""Records defined once: the Flink DDL, the producers' JSON, the InfluxDB lines and Flux lists follow schema.py."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from flink_jobs.overheat_logic import OverheatRules, Transition
from flink_jobs.rules import load_rules
from flink_jobs.window_aggregates import SQL_DIR, render_sql
from machinewatch import line_protocol, names, schema
from machinewatch.config import load_settings
from machinewatch.device_events import KIND_DERIVED, DeviceEvent
from machinewatch.schema import BadRecord
from sinks import influxdb_writer
from sinks.influxdb_writer import BadResult, Topics, alert_line

FLUX_DIR = Path(__file__).parents[2] / "dashboards" / "flux"


def _table(ddl: list[str], name: str) -> str:
    return next(stmt for stmt in ddl if f"CREATE TABLE {name} (" in stmt)


def test_every_table_of_the_window_job_takes_its_columns_from_a_definition() -> None:
    ddl, _ = render_sql(load_settings(allowed_lateness_s=0))
    for table, defn in (("readings", schema.READING), ("window_aggregates", schema.WINDOW_RESULT),
                        ("late_events", schema.LATE_EVENT), ("threshold_alerts", schema.THRESHOLD_ALERT)):
        assert defn.sql_columns() in _table(ddl, table), table
    # No column list is typed in the template: every CREATE TABLE opens with a placeholder.
    template = (SQL_DIR / "window_aggregates.sql").read_text()
    for body in re.findall(r"CREATE TABLE \w+ \(\n(.*?)\n\) WITH", template, re.S):
        assert re.match(r"\s*\{\w+_columns\}", body), body


def test_threshold_alerts_are_written_with_kind_threshold_in_the_tables_column_order() -> None:
    _, inserts = render_sql(load_settings(), rules=load_rules())
    alert_sql = [i for i in inserts if i.startswith("INSERT INTO threshold_alerts")]
    assert alert_sql
    for sql in alert_sql:
        assert "'threshold' AS `kind`" in sql
        select = sql.split("SELECT", 1)[1].split("FROM", 1)[0]
        assert re.findall(r"AS `(\w+)`", select) == list(schema.THRESHOLD_ALERT.names)


def test_the_sustained_alert_definition_is_what_the_job_writes() -> None:
    t = Transition(alert_id="a", state="opened", device_id="d", ts=1, started_ms=0, duration_ms=1, avg=1.0,
                   peak=2.0, threshold=1.0, severity="warning", kind=OverheatRules().kind)
    assert list(t.to_dict()) == list(schema.SUSTAINED_ALERT.names)
    assert [f.name for f in dataclasses.fields(Transition)] == list(schema.SUSTAINED_ALERT.names)
    assert schema.alert_def(t.to_dict()) is schema.SUSTAINED_ALERT


def test_every_alert_producer_writes_a_kind_the_writer_dispatches_on() -> None:
    derived = DeviceEvent(source="mtconnect", device_id="m1", kind=KIND_DERIVED, ts=1_795_000_000_000,
                          event_id="e", state="FAULT")
    assert schema.alert_def(json.loads(derived.to_json())) is schema.DERIVED_ALERT
    assert list(json.loads(derived.to_json())) == list(schema.DERIVED_ALERT.names)
    assert schema.alert_def({"kind": "threshold"}) is schema.THRESHOLD_ALERT
    assert schema.alert_def({"kind": "sustained_low_battery"}) is schema.SUSTAINED_ALERT
    assert schema.alert_def({"rule_group": "g"}) is None  # no kind: an older release's alert


def test_the_writer_places_alerts_by_kind_not_by_shape() -> None:
    # A threshold alert without a rule_group and a sustained alert that happens to carry one: shape guessing
    # ("rule_group" in doc) would swap their measurements.
    threshold = {"kind": "threshold", "device_id": "d1", "window_end_ms": 10_000, "label": "hot"}
    sustained = {"kind": "sustained_overheat", "device_id": "d1", "ts": 20_000, "rule_group": "x", "state": "opened"}
    assert alert_line(threshold).startswith("threshold_alert,device_id=d1,kind=threshold ")
    assert alert_line(threshold).endswith(" 10000")
    assert alert_line(sustained).startswith("device_alert,")
    assert alert_line(sustained).endswith(" 20000")
    derived = {"kind": "derived", "device_id": "m1", "ts": 30_000, "window_end_ms": 1, "state": "FAULT"}
    assert alert_line(derived).startswith("device_alert,") and alert_line(derived).endswith(" 30000")


def test_alerts_without_a_kind_are_read_by_their_old_shape_and_the_rest_refused() -> None:
    old_threshold = {"device_id": "d1", "rule_group": "g", "window_end_ms": 10_000, "label": "hot"}
    old_device = {"device_id": "d1", "ts": 20_000, "state": "opened"}
    assert alert_line(old_threshold).startswith("threshold_alert,device_id=d1,rule_group=g ")
    assert alert_line(old_device).startswith("device_alert,device_id=d1,state=opened ")
    for neither in ({"device_id": "d1", "label": "hot"}, {"kind": "threshold", "device_id": "d1", "ts": 5},
                    {"kind": "sustained_overheat", "ts": 5}):
        with pytest.raises(BadResult):
            alert_line(neither)


def test_the_writer_uses_the_one_encoder_of_each_kind() -> None:
    routes = Topics().routes()
    assert routes[names.TOPIC_AGGREGATES][0] is line_protocol.aggregate_line
    assert routes[names.TOPIC_LATE][0] is line_protocol.late_line
    assert routes[names.TOPIC_ALERTS][0] is line_protocol.alert_line
    for second in ("to_point", "late_point", "alert_point"):
        assert not hasattr(influxdb_writer, second)
    assert BadResult is BadRecord


def test_encoders_follow_the_definitions_roles_and_names() -> None:
    doc: dict[str, Any] = {"device_id": "d", "metric": "m", "source": "s", "window_ms": 10_000,
                           "window_end_ms": 10_000, "avg_value": 1.5, "min_value": 1.0, "max_value": 2.0, "count": 2}
    parts = line_protocol.window_line.parts(doc)
    tags = {c.name for c in schema.WINDOW_RESULT.with_role("tag")} | {"window"}
    assert set(parts.tags) <= tags and parts.tags["window"] == "10s"
    assert set(parts.fields) == {c.influx_name for c in schema.WINDOW_RESULT.with_role("field")}
    assert parts.time_ms == 10_000 and parts.measurement == schema.WINDOW_RESULT.measurement


# Flux files whose keep() list shows one record's columns as they are in InfluxDB.
_FLUX_RECORDS = {"alert_states": schema.SUSTAINED_ALERT, "window_aggregates": schema.WINDOW_RESULT}


@pytest.mark.parametrize("name", sorted(_FLUX_RECORDS))
def test_flux_column_lists_name_only_columns_of_their_record(name: str) -> None:
    defn = _FLUX_RECORDS[name]
    text = (FLUX_DIR / f"{name}.flux").read_text()
    (listed,) = re.findall(r"keep\(columns: (\[.*?\])\)", text)
    known = set(json.loads(defn.flux_columns("_time", "window")))
    assert set(json.loads(listed)) <= known, set(json.loads(listed)) - known


def test_a_definition_refuses_a_select_that_misses_or_invents_a_column() -> None:
    with pytest.raises(ValueError, match="lacks"):
        schema.LATE_EVENT.sql_select({"source": "source"})
    values = {n: n for n in schema.LATE_EVENT.names}
    with pytest.raises(ValueError, match="unknown"):
        schema.LATE_EVENT.sql_select({**values, "extra": "1"})


@pytest.mark.parametrize("module", ["schema", "line_protocol"])
def test_the_record_definitions_are_core_modules(module: str) -> None:
    from tests.unit.test_plugins import ABOVE_CORE, CORE, REPO, _imports

    ours = {n for n in _imports(REPO / "machinewatch" / f"{module}.py") if n.split(".")[0] == "machinewatch"}
    allowed = {"machinewatch", *("machinewatch." + m for m in (*CORE, "schema", "line_protocol"))}
    stray = sorted(n for n in ours if not any(n == a or n.startswith(a + ".") for a in allowed))
    assert not stray and not any(n.split(".")[0] in ABOVE_CORE for n in ours), stray


def test_the_window_job_dead_letters_incomplete_and_unparsable_readings() -> None:
    from flink_jobs.window_aggregates import JOB_SOURCE, Topics, malformed_sql

    ddl, inserts = malformed_sql(load_settings(), "g1", Topics(readings="t-in", dead_letter="t-dead"))
    raw_reader = _table(ddl, "readings_raw")
    assert "'topic' = 't-in'" in raw_reader and "'format' = 'raw'" in raw_reader and "'g1-raw'" in raw_reader
    assert schema.DEAD_LETTER.sql_columns() in _table(ddl, "dead_letters") and "'t-dead'" in _table(ddl, "dead_letters")
    incomplete, unparsable = inserts
    required = [c.name for c in schema.READING.columns if c.required]
    assert incomplete.endswith("WHERE " + " OR ".join(f"`{n}` IS NULL" for n in required))
    assert "IS JSON OBJECT" in unparsable and "TO_BASE64(`raw`)" in unparsable
    for sql in inserts:
        assert f"'{JOB_SOURCE}' AS `source`" in sql and "CONCAT('t-in/'" in sql
        select = sql.split("SELECT", 1)[1]
        assert re.findall(r"AS `(\w+)`,?\n", select) == list(schema.DEAD_LETTER.names)
        assert "{" not in sql and "--" not in sql, "unfilled placeholder or comment"


def test_the_raw_reader_can_be_left_out() -> None:
    from flink_jobs.window_aggregates import malformed_sql

    ddl, inserts = malformed_sql(load_settings(flink_dead_letter_unparsable=False))
    assert [d.split("(")[0].strip() for d in ddl] == ["CREATE TABLE dead_letters"]
    assert len(inserts) == 1 and "FROM readings\n" in inserts[0]
