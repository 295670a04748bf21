"""The window job's SQL is rendered from settings, the canonical record and the rule file."""

from __future__ import annotations

import pytest

from flink_jobs.rules import load_rules
from flink_jobs.window_aggregates import Topics, render_sql
from machinewatch import names
from machinewatch.config import load_settings
from machinewatch.record import flink_columns


def test_statements_use_settings_and_generated_columns() -> None:
    s = load_settings(kafka_bootstrap="broker-a:19092,broker-b:19092", window_size_s=30, watermark_delay_ms=1500,
                      hop_size_s=60, hop_slide_s=20)
    ddl, inserts = render_sql(s, group_id="g-test")
    source = ddl[0]
    assert flink_columns() in source
    assert "'properties.bootstrap.servers' = 'broker-a:19092,broker-b:19092'" in source
    assert f"'topic' = '{names.TOPIC_READINGS}'" in source
    assert "'properties.group.id' = 'g-test'" in source
    assert "INTERVAL '1.500' SECOND" in source
    assert any(f"'topic' = '{names.TOPIC_AGGREGATES}'" in d for d in ddl)
    tumble, minute, fleet_minute, hour, fleet_hour, hop, late = inserts
    view = next(d for d in ddl if "CREATE TEMPORARY VIEW tumbling_windows" in d)
    assert "TUMBLE(TABLE readings, DESCRIPTOR(event_time), INTERVAL '30' SECOND)" in view
    assert "FROM tumbling_windows" in tumble and "CAST(30 AS BIGINT)" in tumble
    assert "FROM rollup_60s" in minute and "FROM rollup_3600s" in hour
    assert fleet_minute.startswith("INSERT INTO fleet_aggregates") and "TABLE rollup_60s" in fleet_minute
    assert fleet_hour.startswith("INSERT INTO fleet_aggregates") and "TABLE rollup_3600s" in fleet_hour
    assert "HOP(TABLE readings, DESCRIPTOR(event_time), INTERVAL '20' SECOND, INTERVAL '1' MINUTE)" in hop
    assert "INSERT INTO late_events" in late and "30000 - 1" in late
    for stmt in ddl + inserts:
        assert "{" not in stmt and "}" not in stmt, "unfilled placeholder"
        assert "--" not in stmt, "comments are stripped before splitting"


def test_hop_can_be_disabled_and_topics_overridden() -> None:
    s = load_settings(hop_size_s=0)
    ddl, inserts = render_sql(s, topics=Topics(readings="t-in", aggregates="t-agg", late="t-late", alerts="t-al"))
    assert len(inserts) == 6  # windows, minutes and hours (of each device and of the fleet), late events
    joined = "\n".join(ddl)
    for topic in ("t-in", "t-agg", "t-late", "t-al"):
        assert f"'topic' = '{topic}'" in joined


def test_rule_groups_become_alert_inserts() -> None:
    rules = load_rules()
    _, inserts = render_sql(load_settings(), rules=rules)
    alert_sql = [i for i in inserts if i.startswith("INSERT INTO threshold_alerts")]
    assert len(alert_sql) == len(rules.group)
    assert any("'High CPU + Memory stress'" in sql for sql in alert_sql)


def test_allowed_lateness_switches_to_group_windows_and_an_upsert_sink() -> None:
    s = load_settings(allowed_lateness_s=20, window_size_s=10, hop_size_s=30, hop_slide_s=10)
    ddl, inserts = render_sql(s)
    sink = next(d for d in ddl if "CREATE TABLE window_aggregates" in d)
    assert "'connector' = 'upsert-kafka'" in sink and "PRIMARY KEY" in sink
    tumble, hop, minute, hour, late = inserts
    assert "GROUP BY TUMBLE(event_time, INTERVAL '10' SECOND)" in tumble and "TUMBLE_END(event_time" in tumble
    assert "GROUP BY HOP(event_time, INTERVAL '10' SECOND, INTERVAL '30' SECOND)" in hop
    # the roll-ups too read the readings: a late reading updates them as it updates its window
    assert "GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE)" in minute
    assert "GROUP BY TUMBLE(event_time, INTERVAL '1' HOUR)" in hour
    assert not any("VIEW" in d for d in ddl)
    assert "10000 - 1 + 20000" in late  # late only once the allowed lateness has passed too
    ddl0, inserts0 = render_sql(load_settings(allowed_lateness_s=0))
    assert "'connector' = 'kafka'" in next(d for d in ddl0 if "CREATE TABLE window_aggregates" in d)
    assert "10000 - 1 + 0" in inserts0[-1]


def test_batch_backfill_is_bounded_and_has_no_late_path() -> None:
    ddl, inserts = render_sql(load_settings(allowed_lateness_s=20), batch=True)
    source = ddl[0]
    assert "'scan.bounded.mode' = 'latest-offset'" in source and "'scan.startup.mode' = 'earliest-offset'" in source
    assert not any("late_events" in i for i in inserts)
    # lateness does not apply in batch (window TVFs, no group windows), nor do roll-ups (a backfill's history)
    assert not any("GROUP BY TUMBLE(" in i or "GROUP BY HOP(" in i for i in inserts)
    assert [i.split("FROM ")[-1].split()[0] for i in inserts] == ["tumbling_windows", "TABLE(HOP(TABLE"]
    assert not any("rollup_" in d for d in ddl)


def test_kafka_login_reaches_every_kafka_table_intact() -> None:
    s = load_settings(kafka_sasl_scram=True, kafka_sasl_password="pa;ss'wo\"rd")
    ddl, inserts = render_sql(s)
    tables = [d for d in ddl if d.startswith("CREATE TABLE")]
    assert len(tables) == 5 and len(inserts) >= 3  # the ';' inside the JAAS value splits nothing
    for table in tables:
        assert "'properties.sasl.mechanism' = 'SCRAM-SHA-256'" in table
        assert 'password="pa;ss\'\'wo\\"rd";' in table  # SQL-quoted ' and JAAS-escaped "


@pytest.mark.parametrize(("mechanism", "module"), [
    ("SCRAM-SHA-512", "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule"),
    ("PLAIN", "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain.PlainLoginModule"),
])
def test_kafka_sasl_mechanism_reaches_every_kafka_table_and_the_python_clients(mechanism: str, module: str) -> None:
    s = load_settings(kafka_sasl_scram=True, kafka_sasl_password="pw", kafka_sasl_mechanism=mechanism)
    ddl, _ = render_sql(s)
    for table in (d for d in ddl if d.startswith("CREATE TABLE")):
        assert f"'properties.sasl.mechanism' = '{mechanism}'" in table
        assert f"'properties.sasl.jaas.config' = '{module} required" in table
    assert s.kafka_client_config()["sasl_mechanism"] == mechanism


def test_rollups_are_cascaded_from_the_windows_and_checked_against_the_settings() -> None:
    ddl, inserts = render_sql(load_settings())
    views = [d for d in ddl if d.startswith("CREATE TEMPORARY VIEW")]
    assert [v.split()[3] for v in views] == ["tumbling_windows", "rollup_60s", "rollup_3600s"]
    # minutes from the windows, hours from the minutes: the readings are aggregated once
    assert "TUMBLE(TABLE tumbling_windows, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE)" in views[1]
    assert "TUMBLE(TABLE rollup_60s, DESCRIPTOR(rowtime), INTERVAL '1' HOUR)" in views[2]
    # the mean of the readings (their sum over their count), not a mean of the windows' means
    assert "SUM(total) AS total" in views[1] and "SUM(cnt) AS cnt" in views[1]
    assert all("total / cnt" in i for i in inserts if "FROM rollup_" in i)
    assert sum("FROM rollup_" in i for i in inserts) == 2 and sum("fleet_aggregates" in i for i in inserts) == 2
    # the fleet: all devices of a source, region and site per roll-up window, from the devices' roll-ups
    fleet = next(i for i in inserts if "fleet_aggregates" in i)
    assert "GROUP BY window_start, window_end, window_time, source, region, site, metric, unit" in fleet
    assert "COUNT(*), SUM(total / cnt)" in fleet
    _, off = render_sql(load_settings(rollups=False))
    assert not any("rollup_" in i for i in off) and len(off) == len(inserts) - 4
    with pytest.raises(ValueError, match="MW_WINDOW_SIZE_S=7"):
        render_sql(load_settings(window_size_s=7))
    with pytest.raises(ValueError, match="MW_HOP_SIZE_S = MW_HOP_SLIDE_S = 60"):
        render_sql(load_settings(hop_size_s=60, hop_slide_s=60))
    assert render_sql(load_settings(window_size_s=7, rollups=False))  # no roll-ups, no constraint
