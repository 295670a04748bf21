"""Flink SQL job: per-device event-time windows, late-event accounting and threshold rules.

One statement set, one Flink job:
- tumbling windows (``MW_WINDOW_SIZE_S``) and sliding windows (``MW_HOP_SIZE_S``/``MW_HOP_SLIDE_S``)
  of avg/min/max/count per device and metric -> the aggregates topic;
- readings that arrive after their tumbling window fired -> the late-events topic (counted, never
  silently dropped);
- threshold rules (TOML, see flink_jobs/rules/) evaluated per device on sliding windows -> alerts topic.
Submit with ``machinewatch jobs submit window-aggregates``; ``sinks.influxdb_writer`` writes the
topics to InfluxDB with deterministic timestamps, so replays overwrite.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment

from flink_jobs.rules import DEFAULT_RULES, RuleSet, group_sql, load_rules
from machinewatch import names
from machinewatch.config import Settings, load_settings
from machinewatch.record import flink_columns

SQL_DIR = Path(__file__).with_name("sql")
JOB_NAME = "machinewatch-window-aggregates"


@dataclass(frozen=True)
class Topics:
    readings: str = names.TOPIC_READINGS
    aggregates: str = names.TOPIC_AGGREGATES
    late: str = names.TOPIC_LATE
    alerts: str = names.TOPIC_ALERTS


def _strip_comments(text: str) -> str:
    # Comments go first: they may mention placeholders and would confuse the statement split.
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def _statements(text: str) -> list[str]:
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


def render_sql(
    settings: Settings, group_id: str = "mw-window-aggregates", topics: Topics | None = None,
    rules: RuleSet | None = None,
) -> tuple[list[str], list[str]]:
    """(DDL statements, INSERT statements) with connector options filled in from settings."""
    topics = topics or Topics()
    ddl = _strip_comments((SQL_DIR / "window_aggregates.sql").read_text()).format(
        reading_columns=flink_columns(),
        watermark_delay_s=f"{settings.watermark_delay_ms / 1000:.3f}",
        readings_topic=topics.readings,
        aggregates_topic=topics.aggregates,
        late_topic=topics.late,
        alerts_topic=topics.alerts,
        bootstrap=settings.kafka_servers,
        group_id=group_id,
    )
    size = int(settings.window_size_s)
    inserts_text = (SQL_DIR / "window_inserts.sql").read_text()
    aggregates_tpl, late_tpl = (_strip_comments(part) for part in inserts_text.split("-- @late"))
    inserts = [
        aggregates_tpl.format(
            window_tvf=f"TUMBLE(TABLE readings, DESCRIPTOR(event_time), INTERVAL '{size}' SECOND)",
            window_s=size, slide_s=size,
        )
    ]
    if settings.hop_size_s and settings.hop_slide_s:
        inserts.append(
            aggregates_tpl.format(
                window_tvf=(
                    f"HOP(TABLE readings, DESCRIPTOR(event_time), INTERVAL '{settings.hop_slide_s}' SECOND, "
                    f"INTERVAL '{settings.hop_size_s}' SECOND)"
                ),
                window_s=settings.hop_size_s, slide_s=settings.hop_slide_s,
            )
        )
    inserts.append(late_tpl.format(window_ms=size * 1000))
    for group in (rules or RuleSet()).group:
        inserts.append("INSERT INTO threshold_alerts " + group_sql(group))
    return _statements(ddl), [stmt for text in inserts for stmt in _statements(text)]


def build(
    t_env: TableEnvironment, settings: Settings, group_id: str = "mw-window-aggregates",
    topics: Topics | None = None, rules: RuleSet | None = None,
) -> list[str]:
    """Register the tables on ``t_env`` and return the INSERT statements (not yet executed)."""
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("pipeline.name", JOB_NAME)
    # Partitions with no data must not hold the watermark back forever.
    conf.set("table.exec.source.idle-timeout", f"{settings.source_idle_timeout_ms} ms")
    ddl, inserts = render_sql(settings, group_id, topics, rules)
    for stmt in ddl:
        t_env.execute_sql(stmt)
    return inserts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-id", default="mw-window-aggregates", help="Kafka consumer group")
    parser.add_argument("--readings-topic", default=names.TOPIC_READINGS)
    parser.add_argument("--aggregates-topic", default=names.TOPIC_AGGREGATES)
    parser.add_argument("--late-topic", default=names.TOPIC_LATE)
    parser.add_argument("--alerts-topic", default=names.TOPIC_ALERTS)
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="threshold rules (TOML)")
    parser.add_argument("--job-name", default=JOB_NAME)
    args = parser.parse_args(argv)
    settings = load_settings()
    rules = load_rules(args.rules)  # checked before anything is submitted
    topics = Topics(args.readings_topic, args.aggregates_topic, args.late_topic, args.alerts_topic)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    inserts = build(t_env, settings, args.group_id, topics, rules)
    t_env.get_config().set("pipeline.name", args.job_name)
    statements = t_env.create_statement_set()
    for stmt in inserts:
        statements.add_insert_sql(stmt)
    # Detached submission: the CLI returns once the cluster accepted the job.
    statements.execute()


if __name__ == "__main__":
    main()
