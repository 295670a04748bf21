"""The limit row's Flink job: the readings topic decoded from JSON by Flink SQL into a blackhole sink, nothing else.

Submitted by bench/flink_runs.py (``flink run -py``) on the benchmark's backlog: the ceiling our jobs are measured
against inside Flink (same source, same JSON format, same columns), beside Kafka's raw JVM consume. Its source
table is the window job's (flink_jobs/sql/window_aggregates.sql) without the metadata and watermark columns.
"""

from __future__ import annotations

import argparse

from pyflink.table import EnvironmentSettings, TableEnvironment

from flink_jobs.window_aggregates import kafka_security
from machinewatch.config import load_settings
from machinewatch.record import flink_columns


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings-topic", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--job-name", default="bench-passthrough")
    args = parser.parse_args(argv)
    settings = load_settings()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("pipeline.name", args.job_name)
    security = kafka_security(settings)
    t_env.execute_sql(f"""
CREATE TABLE readings (
  {flink_columns()}
) WITH (
  'connector' = 'kafka',
  'topic' = '{args.readings_topic}',
  'properties.bootstrap.servers' = '{settings.kafka_servers}',
{security}  'properties.group.id' = '{args.group_id}',
  'properties.auto.offset.reset' = 'earliest',
  'scan.startup.mode' = 'group-offsets',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true'
)""")
    # Every column is selected, so every field is decoded (a projection could otherwise skip some).
    t_env.execute_sql("CREATE TABLE sink WITH ('connector' = 'blackhole') LIKE readings (EXCLUDING ALL)")
    t_env.execute_sql("INSERT INTO sink SELECT * FROM readings")


if __name__ == "__main__":
    main()
