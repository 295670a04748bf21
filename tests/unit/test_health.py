"""The pipeline health's arithmetic (machinewatch/health.py) on made-up server answers; the servers' own answers
are tests/integration/test_pipeline_health.py's."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from machinewatch import health
from machinewatch.config import Settings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def test_group_lag_is_the_messages_after_the_committed_offsets() -> None:
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    committed = {"writer": {a0: OffsetAndMetadata(4, "", -1), a1: OffsetAndMetadata(10, "", -1)},
                 "notifier": {b0: OffsetAndMetadata(7, "", -1)}, "new": {}}
    rows = health.group_lags({"writer": "Stable", "notifier": "Empty", "new": "Empty"}, committed,
                             {a0: 10, a1: 10, b0: 7})
    assert [(g.group, g.state, g.topics, g.lag) for g in rows] == [
        ("new", "Empty", (), 0), ("notifier", "Empty", ("b",), 0), ("writer", "Stable", ("a",), 6)]


def test_dead_letters_of_the_span_are_counted_per_source_and_reason_class() -> None:
    since = NOW_MS - 3_600_000
    docs = [{"source": "mqtt", "reason": "not JSON", "received_ms": NOW_MS - 10},
            {"source": "mqtt", "reason": "not JSON", "received_ms": NOW_MS - 20},
            {"source": "mqtt", "reason": "value 12 of 'temp' out of range", "received_ms": NOW_MS - 30},
            {"source": "mqtt", "reason": "value 99 of 'rpm' out of range", "received_ms": NOW_MS - 40},
            {"source": "tcp", "reason": "not JSON", "received_ms": NOW_MS - 50},
            {"source": "tcp", "reason": "not JSON", "received_ms": since - 1}]  # older than the span
    rows = health.summarize_dead_letters(docs, since)
    assert [(d.source, d.reason, d.count) for d in rows] == [
        ("mqtt", "not JSON", 2), ("mqtt", "value N of '…' out of range", 2), ("tcp", "not JSON", 1)]
    assert rows[0].last == datetime.fromtimestamp((NOW_MS - 10) / 1000, tz=UTC)


def test_job_health_reads_state_restarts_and_checkpoint_age() -> None:
    job = {"jid": "j1", "name": "machinewatch-window-aggregates", "state": "RUNNING"}
    checkpoints = {"counts": {"completed": 12}, "latest": {"completed": {"latest_ack_timestamp": NOW_MS - 8_000}}}
    row = health.job_health(job, "2", checkpoints, NOW)
    assert (row.state, row.restarts, row.checkpoints, row.checkpoint_age_s, row.healthy) == ("RUNNING", 2, 12, 8.0,
                                                                                            True)
    none_yet = health.job_health({**job, "state": "RESTARTING"}, None, {"latest": {"completed": None}}, NOW)
    assert (none_yet.restarts, none_yet.checkpoint_age_s, none_yet.healthy) == (None, None, False)


def test_a_source_silent_longer_than_the_setting_is_stale_and_listed_first() -> None:
    rows = health.source_ages([("a", NOW - timedelta(seconds=30)), ("b", NOW - timedelta(seconds=301))], 300, NOW)
    assert [(s.source, s.stale, s.age_s) for s in rows] == [("b", True, 301.0), ("a", False, 30.0)]


def test_the_report_names_every_part_and_what_could_not_be_read() -> None:
    found = health.PipelineHealth(
        groups=[health.GroupLag("mw-influx-writer", "Stable", ("mw.aggregates",), 42)],
        jobs=[health.JobHealth("j1", "machinewatch-window-aggregates", "RUNNING", 0, 3, 4.2)],
        dead_letters=[health.DeadLetters("mqtt", "not JSON", 5, NOW)],
        sources=health.source_ages([("dc-india", NOW - timedelta(seconds=400))], 300, NOW),
        stale_after_s=300, problems={"flink jobs": "ConnectionError: refused"})
    text = "\n".join(health.report_lines(found))
    assert "mw-influx-writer" in text and " 42 " in text
    assert "machinewatch-window-aggregates" in text and "4s ago" in text
    assert "dead letters in the last 1h 0m: 5" in text and "mqtt" in text
    assert "dc-india" in text and "STALE" in text and "6m 40s" in text
    assert "(flink jobs: ConnectionError: refused)" in text


def test_parts_whose_server_is_down_are_reported_not_raised(tmp_path: object) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings().model_copy(update={"flink_rest_address": f"http://127.0.0.1:{port}",
                                             "flink_rest_timeout_s": 2})
    found = health.collect(settings, kafka=False, influxdb=False)
    assert found.problems["consumer lag"] == "not read: its server is not ready"
    assert found.problems["flink jobs"].startswith("ConnectionError")
    assert not found.jobs
