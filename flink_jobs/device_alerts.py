"""Flink SQL job: availability, emergency-stop and condition changes of the device events -> alerts.

Reads the device-events topic (what the MTConnect collector publishes) and, per device and data item, turns
a change into an alert-worthy state into an ``opened`` alert and the first change out of it into a
``resolved`` one (the lifecycle states of the sustained-condition alerts): machine UNAVAILABLE, emergency
stop TRIGGERED, condition WARNING, condition FAULT. Each alert is a ``derived`` alert record
(``schema.DERIVED_ALERT``: the device event's columns; ``item_type`` is the rule, ``state`` opened | resolved)
with an id from the observation that caused it, the rule and the state, so a replay writes the same ids
and the same InfluxDB points. Repeated values (a re-read observation, a second UNAVAILABLE) change nothing.
Submit with ``machinewatch jobs submit device-alerts``. All per-event work is SQL, in the JVM.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment

from flink_jobs.window_aggregates import (
    Topics,
    _statements,
    kafka_security,
    malformed_sql,
    strip_sql_comments,
    submit_inserts,
)
from machinewatch import names, schema
from machinewatch.config import Settings, load_settings

SQL_DIR = Path(__file__).with_name("sql")
JOB_NAME = "machinewatch-device-alerts"
GROUP_ID = "mw-device-alerts"
# The dead letters' source: which stage skipped the input.
JOB_SOURCE = "flink:device-alerts"
OPENED, RESOLVED = "opened", "resolved"


@dataclass(frozen=True)
class AlertRule:
    """An alert a data item's observations can make active: which items it watches, and when it is active."""

    name: str
    watches: str  # SQL condition on a device-event row: the item is one this rule is about
    active: str  # SQL condition: this observation makes the alert active


# Order is the code the job keeps per item (1, 2, ...); an item's value makes at most one rule active.
RULES = (
    AlertRule("machine_unavailable", "`item_type` = 'AVAILABILITY'", "UPPER(`value`) = 'UNAVAILABLE'"),
    AlertRule("emergency_stop", "`item_type` = 'EMERGENCY_STOP'", "UPPER(`value`) = 'TRIGGERED'"),
    AlertRule("condition_warning", "`category` = 'CONDITION'", "`state` = 'WARNING'"),
    AlertRule("condition_fault", "`category` = 'CONDITION'", "`state` = 'FAULT'"),
)


def _rule_name(code: str) -> str:
    cases = " ".join(f"WHEN {i} THEN '{rule.name}'" for i, rule in enumerate(RULES, 1))
    return f"CASE {code} {cases} END"


def _alert_select(code: str, state: str) -> str:
    rule = _rule_name(code)
    return schema.DERIVED_ALERT.sql_select({
        "source": "`source`", "region": "`region`", "site": "`site`", "device_id": "`device_id`",
        "kind": f"'{schema.KIND_DERIVED}'", "category": "`category`", "item": "`item`", "item_type": rule,
        "value": "`value`", "state": f"'{state}'", "sequence": "`sequence`", "instance_id": "`instance_id`",
        "ts": "`ts`",
        # The observation's own id is deterministic (instance, device, item, sequence): so is the alert's.
        "event_id": f"MD5(CONCAT_WS('|', `event_id`, {rule}, '{state}'))",
        "detail": f"CONCAT({rule}, ' {state}: ', COALESCE(`item_type`, ''), ' ', COALESCE(`value`, ''), "
                  "COALESCE(CONCAT(' ', `state`), ''))",
        "lost_count": "CAST(NULL AS BIGINT)",
    })


def kafka_options(settings: Settings, group_id: str = GROUP_ID, device_events_topic: str = names.TOPIC_DEVICE_EVENTS,
                  alerts_topic: str = names.TOPIC_ALERTS) -> tuple[str, str]:
    """(source, sink) connector options of the two tables on Kafka."""
    security = kafka_security(settings)
    source = (f"'connector' = 'kafka',\n  'topic' = '{device_events_topic}',\n"
              f"  'properties.bootstrap.servers' = '{settings.kafka_servers}',\n{security}"
              f"  'properties.group.id' = '{group_id}',\n  'properties.auto.offset.reset' = 'earliest',\n"
              "  'scan.startup.mode' = 'group-offsets',\n  'format' = 'json',\n"
              # One bad message must not stop the job; what it skips is dead-lettered (malformed_sql).
              "  'json.ignore-parse-errors' = 'true'")
    sink = (f"'connector' = 'kafka',\n  'topic' = '{alerts_topic}',\n"
            f"  'properties.bootstrap.servers' = '{settings.kafka_servers}',\n{security}"
            "  'key.format' = 'raw',\n  'key.fields' = 'device_id',\n  'value.format' = 'json',\n"
            "  'value.fields-include' = 'ALL',\n  'sink.delivery-guarantee' = 'at-least-once'")
    return source, sink


def render_sql(source_options: str, sink_options: str, kafka_metadata: bool = False) -> tuple[list[str], list[str]]:
    """(DDL and views, INSERT statements) for tables with these connector options (``kafka_options``);
    ``kafka_metadata``: the source is Kafka and its table carries each message's partition and offset."""
    text = strip_sql_comments((SQL_DIR / "device_alerts.sql").read_text().replace("-- @inserts", "@inserts"))
    ddl_text, inserts_text = text.split("@inserts")
    code = "CASE " + " ".join(f"WHEN ({r.watches}) AND ({r.active}) THEN {i}" for i, r in enumerate(RULES, 1)) \
        + " ELSE 0 END"
    watched = " OR ".join(dict.fromkeys(f"({r.watches})" for r in RULES))
    ddl = ddl_text.format(
        device_event_columns=schema.DEVICE_EVENT.sql_columns(),
        derived_alert_columns=schema.DERIVED_ALERT.sql_columns(),
        source_options=source_options, sink_options=sink_options, rule_code=code, watched=watched,
        complete=" AND ".join(f"`{c.name}` IS NOT NULL" for c in schema.DEVICE_EVENT.columns if c.required),
        kafka_metadata=("  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,\n"
                        "  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL,\n") if kafka_metadata else "",
    )
    inserts = inserts_text.format(opened_select=_alert_select("code", OPENED),
                                  resolved_select=_alert_select("prev_code", RESOLVED))
    return _statements(ddl), _statements(inserts)


def build(t_env: TableEnvironment, settings: Settings, group_id: str = GROUP_ID,
          device_events_topic: str = names.TOPIC_DEVICE_EVENTS, alerts_topic: str = names.TOPIC_ALERTS,
          dead_letter_topic: str = names.TOPIC_DEAD_LETTER) -> list[str]:
    """Register the tables and views on ``t_env`` and return the INSERT statements (not yet executed).

    Malformed device events (a required field missing or of the wrong type, or no JSON object) are
    dead-lettered with this job as their source, as the window job does with readings: never dropped silently.
    """
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("pipeline.name", JOB_NAME)
    ddl, inserts = render_sql(*kafka_options(settings, group_id, device_events_topic, alerts_topic),
                              kafka_metadata=True)
    malformed_ddl, malformed_inserts = malformed_sql(
        settings, group_id, Topics(dead_letter=dead_letter_topic), source=JOB_SOURCE, record=schema.DEVICE_EVENT,
        table="device_events", topic=device_events_topic)
    for stmt in ddl + malformed_ddl:
        t_env.execute_sql(stmt)
    return inserts + malformed_inserts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-id", default=GROUP_ID, help="Kafka consumer group")
    parser.add_argument("--device-events-topic", default=names.TOPIC_DEVICE_EVENTS)
    parser.add_argument("--alerts-topic", default=names.TOPIC_ALERTS)
    parser.add_argument("--dead-letter-topic", default=names.TOPIC_DEAD_LETTER,
                        help="where malformed device events go (with this job as their source)")
    parser.add_argument("--job-name", default=JOB_NAME)
    args = parser.parse_args(argv)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    inserts = build(t_env, load_settings(), args.group_id, args.device_events_topic, args.alerts_topic,
                    args.dead_letter_topic)
    submit_inserts(t_env, inserts, args.job_name)


if __name__ == "__main__":
    main()
