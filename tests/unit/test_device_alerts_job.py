"""The device-alerts job's SQL run by a local PyFlink on a bounded file of device events: each alert opens
once and is resolved once, repeats change nothing, and the ids are the same on every run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flink_jobs.device_alerts import GROUP_ID, kafka_options, render_sql
from machinewatch import schema
from machinewatch.config import load_settings
from machinewatch.device_events import DeviceEvent

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="PyFlink needs a JVM")


def _event(device: str, seq: int, item: str, item_type: str, value: str, category: str = "EVENT",
           state: str | None = None, kind: str = "observation") -> DeviceEvent:
    return DeviceEvent(source="mtconnect", device_id=device, kind=kind, ts=1_795_000_000_000 + seq * 1000,
                       event_id=f"{device}-{item}-{seq}", category=category, item=item, item_type=item_type,
                       value=value, state=state, sequence=seq, instance_id="7")


SCENARIO = [
    _event("M1", 1, "avail", "AVAILABILITY", "AVAILABLE"),
    _event("M1", 2, "avail", "AVAILABILITY", "UNAVAILABLE"),
    _event("M1", 3, "avail", "AVAILABILITY", "UNAVAILABLE"),  # still unavailable: nothing new
    _event("M1", 4, "exec", "EXECUTION", "ACTIVE"),  # not watched
    _event("M1", 5, "avail", "AVAILABILITY", "AVAILABLE"),
    _event("M1", 6, "system", "SYSTEM", "", "CONDITION", "NORMAL"),
    _event("M1", 7, "system", "SYSTEM", "SERVO ALARM", "CONDITION", "FAULT"),
    _event("M1", 7, "system", "SYSTEM", "SERVO ALARM", "CONDITION", "FAULT"),  # delivered twice
    _event("M1", 8, "system", "SYSTEM", "OVERLOAD", "CONDITION", "WARNING"),
    _event("M1", 9, "system", "SYSTEM", "", "CONDITION", "NORMAL"),
    _event("M2", 1, "estop", "EMERGENCY_STOP", "TRIGGERED"),
    DeviceEvent(source="mtconnect", device_id="agent", kind="gap", ts=1_795_000_000_000, event_id="g",
                sequence=3, lost_count=2),
]


def _alert_id(event: DeviceEvent, rule: str, state: str) -> str:
    return hashlib.md5(f"{event.event_id}|{rule}|{state}".encode()).hexdigest()  # noqa: S324 - an id, not a secret


def run_job(tmp_path: Path, events: list[DeviceEvent]) -> list[dict[str, Any]]:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    src = tmp_path / "events"
    src.mkdir()
    (src / "part-0.json").write_bytes(b"\n".join(e.to_json() for e in events) + b"\n")
    source = f"'connector' = 'filesystem',\n  'path' = '{src}',\n  'format' = 'json'"
    ddl, inserts = render_sql(source, "'connector' = 'blackhole'")
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", "1")
    for stmt in ddl:
        t_env.execute_sql(stmt)
    rows = []
    for stmt in inserts:
        select = stmt.split("\n", 1)[1]  # the INSERT's SELECT, collected here instead of written to Kafka
        with t_env.execute_sql(select).collect() as results:
            rows += [dict(zip(schema.DERIVED_ALERT.names, row, strict=True)) for row in results]
    return rows


def test_alerts_open_once_and_resolve_once_with_deterministic_ids(tmp_path: Path) -> None:
    alerts = run_job(tmp_path, SCENARIO)
    got = sorted((a["device_id"], a["item_type"], a["state"], a["sequence"]) for a in alerts)
    assert got == sorted([
        ("M1", "machine_unavailable", "opened", 2), ("M1", "machine_unavailable", "resolved", 5),
        ("M1", "condition_fault", "opened", 7), ("M1", "condition_fault", "resolved", 8),
        ("M1", "condition_warning", "opened", 8), ("M1", "condition_warning", "resolved", 9),
        ("M2", "emergency_stop", "opened", 1),
    ])
    by_key = {(e.device_id, e.sequence): e for e in SCENARIO}
    for alert in alerts:
        assert alert["kind"] == schema.KIND_DERIVED and alert["source"] == "mtconnect"
        assert alert["event_id"] == _alert_id(by_key[(alert["device_id"], alert["sequence"])], alert["item_type"],
                                              alert["state"])
        schema.DERIVED_ALERT.check(alert)
        assert schema.alert_def(json.loads(json.dumps(alert))) is schema.DERIVED_ALERT


def test_kafka_tables_use_the_settings_and_the_record_columns() -> None:
    settings = load_settings(kafka_bootstrap="broker-a:19092")
    ddl, inserts = render_sql(*kafka_options(settings, device_events_topic="t-ev", alerts_topic="t-al"))
    joined = "\n".join(ddl)
    assert schema.DEVICE_EVENT.sql_columns() in joined and schema.DERIVED_ALERT.sql_columns() in joined
    assert "'topic' = 't-ev'" in joined and "'topic' = 't-al'" in joined
    assert f"'properties.group.id' = '{GROUP_ID}'" in joined and "broker-a:19092" in joined
    assert len(inserts) == 2
    for stmt in ddl + inserts:
        assert "{" not in stmt and "}" not in stmt and "--" not in stmt
