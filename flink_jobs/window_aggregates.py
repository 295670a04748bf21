"""Flink SQL job: per-device event-time tumbling windows (avg/min/max/count) to the aggregates topic.

Submit with ``machinewatch jobs submit window-aggregates`` (runs ``flink run -py`` on this file).
The window results are written to InfluxDB by ``sinks.influxdb_writer`` with the window end as the
timestamp, so a replay overwrites the same points.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment

from machinewatch import names
from machinewatch.config import Settings, load_settings
from machinewatch.record import flink_columns

SQL = Path(__file__).with_name("sql") / "window_aggregates.sql"
JOB_NAME = "machinewatch-window-aggregates"


def render_sql(settings: Settings, group_id: str = "mw-window-aggregates") -> list[str]:
    """The job's statements with connector options filled in from settings."""
    # Comments go first: they may mention placeholders and would confuse the statement split.
    body = "\n".join(line for line in SQL.read_text().splitlines() if not line.lstrip().startswith("--"))
    body = body.format(
        reading_columns=flink_columns(),
        watermark_delay_s=f"{settings.watermark_delay_ms / 1000:.3f}",
        readings_topic=names.TOPIC_READINGS,
        aggregates_topic=names.TOPIC_AGGREGATES,
        bootstrap=settings.kafka_servers,
        group_id=group_id,
        window_s=int(settings.window_size_s),
    )
    return [stmt.strip() for stmt in body.split(";") if stmt.strip()]


def build(t_env: TableEnvironment, settings: Settings, group_id: str = "mw-window-aggregates") -> str:
    """Register the tables on ``t_env`` and return the INSERT statement (not yet executed)."""
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("pipeline.name", JOB_NAME)
    # Partitions with no data must not hold the watermark back forever.
    conf.set("table.exec.source.idle-timeout", f"{settings.source_idle_timeout_ms} ms")
    *ddl, insert = render_sql(settings, group_id)
    for stmt in ddl:
        t_env.execute_sql(stmt)
    return insert


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--group-id", default="mw-window-aggregates", help="Kafka consumer group")
    args = parser.parse_args(argv)
    settings = load_settings()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    insert = build(t_env, settings, args.group_id)
    # Detached submission: the CLI returns once the cluster accepted the job.
    t_env.execute_sql(insert)


if __name__ == "__main__":
    main()
