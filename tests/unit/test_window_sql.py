"""The window job's SQL is rendered from settings and the canonical record, never hand-typed."""

from __future__ import annotations

from flink_jobs.window_aggregates import render_sql
from machinewatch import names
from machinewatch.config import load_settings
from machinewatch.record import flink_columns


def test_statements_use_settings_and_generated_columns() -> None:
    s = load_settings(kafka_bootstrap="broker-a:19092,broker-b:19092", window_size_s=30, watermark_delay_ms=1500)
    source, sink, insert = render_sql(s, group_id="g-test")
    assert flink_columns() in source
    assert "'properties.bootstrap.servers' = 'broker-a:19092,broker-b:19092'" in source
    assert f"'topic' = '{names.TOPIC_READINGS}'" in source
    assert "'properties.group.id' = 'g-test'" in source
    assert "INTERVAL '1.500' SECOND" in source
    assert f"'topic' = '{names.TOPIC_AGGREGATES}'" in sink
    assert "INTERVAL '30' SECOND" in insert
    assert "CAST(30 AS BIGINT) * 1000" in insert
    for stmt in (source, sink, insert):
        assert "{" not in stmt and "}" not in stmt, "unfilled placeholder"
        assert "--" not in stmt, "comments are stripped before splitting"
