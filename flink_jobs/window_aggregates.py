"""Flink SQL job: per-device event-time windows, late-event accounting and threshold rules.

One statement set, one Flink job:
- tumbling windows (``MW_WINDOW_SIZE_S``) and sliding windows (``MW_HOP_SIZE_S``/``MW_HOP_SLIDE_S``)
  of avg/min/max/count per device and metric -> the aggregates topic;
- the roll-ups (``MW_ROLLUPS``, machinewatch.rollups): the tumbling windows rolled up into 1-minute windows and
  those into hours, and each of those over all devices of a source, region and site (fleet roll-ups, not with an
  allowed lateness), on the same topic (the writer puts them into the roll-up buckets);
- readings that arrive after their tumbling window fired -> the late-events topic (counted, never
  silently dropped);
- threshold rules (TOML, see flink_jobs/rules/) evaluated per device on sliding windows -> alerts topic;
- malformed readings (a required field missing or of the wrong type, or no JSON object at all) -> the
  dead-letter topic, with the job as source (``sql/malformed_readings.sql``): skipped, never silently.
Submit with ``machinewatch jobs submit window-aggregates``; ``sinks.influxdb_writer`` writes the
topics to InfluxDB with deterministic timestamps, so replays overwrite.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment

from flink_jobs.rules import DEFAULT_RULES, RuleSet, group_sql, load_rules
from machinewatch import names, quality, rollups, schema
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
    dead_letter: str = names.TOPIC_DEAD_LETTER


# The dead letters' source: which stage skipped the input.
JOB_SOURCE = "flink:window-aggregates"
def strip_sql_comments(text: str) -> str:
    # Comments go first: they may mention placeholders and would confuse the statement split.
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def _statements(text: str) -> list[str]:
    # A statement ends with ';' at the end of a line: option values (a JAAS config) may hold ';' too.
    return [stmt.strip() for stmt in re.split(r";[ \t]*(?:\n|$)", text) if stmt.strip()]


def render_sql(
    settings: Settings, group_id: str = "mw-window-aggregates", topics: Topics | None = None,
    rules: RuleSet | None = None, batch: bool = False,
) -> tuple[list[str], list[str]]:
    """(DDL statements, INSERT statements) with connector options filled in from settings.

    ``batch`` reads the readings topic from the beginning to the offsets it has when the job starts
    (a backfill over history); late events have no meaning there and are left out.
    """
    topics = topics or Topics()
    lateness_ms = 0 if batch else int(settings.allowed_lateness_s) * 1000
    scan_options = _scan_options(batch)
    if lateness_ms:
        # Windows that fire again for late readings produce updates: an upsert sink keyed by window.
        aggregates_key = (",\n  PRIMARY KEY (`device_id`, `metric`, `window_ms`, `slide_ms`, `window_end_ms`)"
                          " NOT ENFORCED")
        aggregates_sink = ("'connector' = 'upsert-kafka',\n  'key.format' = 'json',\n  'value.format' = 'json',\n"
                           "  'value.fields-include' = 'ALL'")
        alerts_key = ",\n  PRIMARY KEY (`alert_id`) NOT ENFORCED"
        alerts_sink = aggregates_sink
    else:
        aggregates_key = alerts_key = ""
        aggregates_sink = alerts_sink = _append_sink("device_id")
    ddl = strip_sql_comments((SQL_DIR / "window_aggregates.sql").read_text()).format(
        kafka_security=kafka_security(settings),
        aggregates_key=aggregates_key, aggregates_sink=aggregates_sink,
        alerts_key=alerts_key, alerts_sink=alerts_sink, scan_options=scan_options,
        fleet_sink=_append_sink("metric"), late_sink=_append_sink("device_id"),
        reading_columns=flink_columns(),
        window_result_columns=schema.WINDOW_RESULT.sql_columns(),
        fleet_result_columns=schema.FLEET_RESULT.sql_columns(),
        late_event_columns=schema.LATE_EVENT.sql_columns(),
        threshold_alert_columns=schema.THRESHOLD_ALERT.sql_columns(),
        watermark_delay_s=f"{settings.watermark_delay_ms / 1000:.3f}",
        readings_topic=topics.readings,
        aggregates_topic=topics.aggregates,
        late_topic=topics.late,
        alerts_topic=topics.alerts,
        bootstrap=settings.kafka_servers,
        group_id=group_id,
    )
    size = int(settings.window_size_s)
    tpl = _sections((SQL_DIR / "window_inserts.sql").read_text())
    rollup_sizes = rollup_shapes(settings, batch)
    shapes = [(size, size)]
    if settings.hop_size_s and settings.hop_slide_s:
        shapes.append((settings.hop_size_s, settings.hop_slide_s))
    views: list[str] = []
    inserts = []
    if lateness_ms:
        # Each shape over the readings: a late reading updates its window and its roll-ups alike.
        for window_s, slide_s in [*shapes, *((r, r) for r in rollup_sizes)]:
            tumbling = window_s == slide_s
            inserts.append(tpl["aggregates_with_lateness"].format(
                group_fn="TUMBLE" if tumbling else "HOP",
                group_args=(_interval(window_s) if tumbling else f"{_interval(slide_s)}, {_interval(window_s)}"),
                window_s=window_s, slide_s=slide_s,
            ))
    else:
        # The tumbling windows, then each roll-up from the one before it (minutes from windows, hours from
        # minutes): a roll-up is the sum of the windows written, never a second read of the readings.
        views.append(tpl["tumbling_view"].format(view="tumbling_windows", window_s=size))
        inserts.append(tpl["from_view"].format(view="tumbling_windows", window_s=size))
        parent = "tumbling_windows"
        for rollup_s in rollup_sizes:
            view = f"rollup_{rollup_s}s"
            views.append(tpl["rollup_view"].format(view=view, parent=parent, interval=_interval(rollup_s)))
            inserts.append(tpl["from_view"].format(view=view, window_s=rollup_s))
            inserts.append(tpl["fleet"].format(view=view, window_s=rollup_s, interval=_interval(rollup_s)))
            parent = view
        for window_s, slide_s in shapes[1:]:
            tvf = f"HOP(TABLE readings, DESCRIPTOR(event_time), {_interval(slide_s)}, {_interval(window_s)})"
            inserts.append(tpl["aggregates"].format(window_tvf=tvf, window_s=window_s, slide_s=slide_s))
    if not batch:
        inserts.append(tpl["late"].format(window_ms=size * 1000, lateness_ms=lateness_ms))
    for group in (rules or RuleSet()).group:
        inserts.append("INSERT INTO threshold_alerts " + group_sql(group, group_windows=bool(lateness_ms)))
    ddl_statements = _statements(ddl) + [stmt for text in views for stmt in _statements(text)]
    return ddl_statements, [stmt for text in inserts for stmt in _statements(text)]


def rollup_shapes(settings: Settings, batch: bool = False) -> list[int]:
    """The roll-up windows (seconds, tumbling) the job makes beside its own: none in batch mode or with
    ``MW_ROLLUPS`` off. Raises ``ValueError`` when the windows cannot be rolled up into them."""
    if batch or not settings.rollups:
        return []
    sizes = [r.window_s for r in rollups.ROLLUPS]
    size = int(settings.window_size_s)
    if size >= sizes[0] or sizes[0] % size:
        msg = (f"MW_WINDOW_SIZE_S={size} cannot be rolled up into {sizes[0]} s windows: it must divide "
               f"{sizes[0]} and be smaller (or turn the roll-ups off with MW_ROLLUPS=false)")
        raise ValueError(msg)
    if settings.hop_size_s and settings.hop_slide_s == settings.hop_size_s and settings.hop_size_s in sizes:
        msg = (f"MW_HOP_SIZE_S = MW_HOP_SLIDE_S = {settings.hop_size_s} is the shape of a roll-up the job already "
               "makes: its rows would land in the roll-up bucket twice (pick another or set MW_HOP_SIZE_S=0)")
        raise ValueError(msg)
    return sizes


def _append_sink(key_field: str) -> str:
    """The WITH options (after topic, servers and login) of a Kafka table the job only appends to, keyed by a field."""
    return (f"'connector' = 'kafka',\n  'key.format' = 'raw',\n  'key.fields' = '{key_field}',\n"
            "  'value.format' = 'json',\n  'value.fields-include' = 'ALL',\n"
            "  'sink.delivery-guarantee' = 'at-least-once'")


def _interval(seconds: int) -> str:
    # A SQL interval literal: SECOND alone holds two digits (INTERVAL '3600' SECOND is refused).
    if seconds % 3600 == 0:
        return f"INTERVAL '{seconds // 3600}' HOUR"
    if seconds % 60 == 0:
        return f"INTERVAL '{seconds // 60}' MINUTE"
    return f"INTERVAL '{seconds}' SECOND(9)" if seconds >= 100 else f"INTERVAL '{seconds}' SECOND"


def _sections(text: str) -> dict[str, str]:
    """The ``-- @name`` sections of a SQL template file, comments stripped."""
    parts = re.split(r"^-- @(\w+)[ \t]*$", text, flags=re.MULTILINE)
    return {name: strip_sql_comments(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def malformed_sql(
    settings: Settings, group_id: str = "mw-window-aggregates", topics: Topics | None = None, batch: bool = False,
    source: str = JOB_SOURCE, record: schema.RecordDef = schema.READING, table: str = "readings",
    topic: str | None = None,
) -> tuple[list[str], list[str]]:
    """(DDL, INSERTs) that dead-letter the malformed messages of a job's input topic (sql/malformed_readings.sql).

    Uses the job's ``table`` of ``record`` on ``topic`` (default: the readings of ``render_sql``; its DDL must
    run first) and a raw reader of the same topic (left out when ``MW_FLINK_DEAD_LETTER_UNPARSABLE`` is off).
    """
    topics = topics or Topics()
    topic = topic or topics.readings
    readings = record
    origin = (f"CONCAT('{_quote(topic)}/', CAST(kafka_partition AS STRING), '@', "
              "CAST(kafka_offset AS STRING))")
    received = "CAST(UNIX_TIMESTAMP() AS BIGINT) * 1000"
    required = [c.name for c in readings.columns if c.required]
    missing = "CONCAT_WS(', ', " + ", ".join(f"IF(`{n}` IS NULL, '{n}', CAST(NULL AS STRING))" for n in required) + ")"
    parsed = "JSON_OBJECT(" + ", ".join(f"KEY '{n}' VALUE `{n}`" for n in readings.names) + ")"
    incomplete = schema.DEAD_LETTER.sql_select({
        "source": f"'{_quote(source)}'", "kind": f"'{quality.KIND_DEAD_LETTER}'", "origin": origin,
        "reason": f"CONCAT('required field(s) missing or not of their type: ', {missing}, "
                  "'; raw is the row as the job parsed it, the message is at origin')",
        "raw": parsed, "raw_encoding": "'utf-8'", "size": "CAST(NULL AS BIGINT)", "truncated": "FALSE",
        "received_ms": received,
    })
    # The bytes are base64 (they may not be text); at most what quality.MAX_RAW_BYTES allows, whole 4-char groups.
    max_b64 = quality.MAX_RAW_BYTES // 3 * 4
    not_json = schema.DEAD_LETTER.sql_select({
        "source": f"'{_quote(source)}'", "kind": f"'{quality.KIND_DEAD_LETTER}'", "origin": origin,
        "reason": "CASE WHEN b64 IS NULL THEN 'a message without a value' ELSE 'not a JSON object' END",
        "raw": f"COALESCE(CASE WHEN CHAR_LENGTH(b64) > {max_b64} THEN SUBSTRING(b64, 1, {max_b64}) ELSE b64 END, '')",
        "raw_encoding": "'base64'",
        "size": "COALESCE(CAST(CHAR_LENGTH(b64) / 4 * 3 - (CHAR_LENGTH(b64) - CHAR_LENGTH(TRIM(TRAILING '=' FROM b64)))"
                " AS BIGINT), 0)",
        "truncated": f"COALESCE(CHAR_LENGTH(b64) > {max_b64}, FALSE)", "received_ms": received,
    })
    text = strip_sql_comments((SQL_DIR / "malformed_readings.sql").read_text().replace("-- @inserts", "@inserts"))
    ddl_text, inserts_text = text.split("@inserts")
    ddl = ddl_text.format(
        table=table, topic=topic, bootstrap=settings.kafka_servers, kafka_security=kafka_security(settings),
        group_id=group_id, scan_options=_scan_options(batch), dead_letter_columns=schema.DEAD_LETTER.sql_columns(),
        dead_letter_topic=topics.dead_letter,
    )
    inserts = inserts_text.format(
        table=table, incomplete_select=incomplete,
        incomplete_where=" OR ".join(f"`{n}` IS NULL" for n in required), not_json_select=not_json,
    )
    ddl_statements, insert_statements = _statements(ddl), _statements(inserts)
    if not settings.flink_dead_letter_unparsable:
        ddl_statements = [stmt for stmt in ddl_statements if f"{table}_raw" not in stmt]
        insert_statements = [stmt for stmt in insert_statements if f"{table}_raw" not in stmt]
    return ddl_statements, insert_statements


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _scan_options(batch: bool) -> str:
    return ("'scan.startup.mode' = 'earliest-offset',\n  'scan.bounded.mode' = 'latest-offset'" if batch
            else "'scan.startup.mode' = 'group-offsets'")


def kafka_security(settings: Settings) -> str:
    """The SASL options (when Kafka requires a login) of a Kafka table's WITH clause; quotes doubled for SQL."""
    return "".join(f"  'properties.{key}' = '{_quote(value)}',\n"
                   for key, value in settings.flink_kafka_properties().items())


def build(
    t_env: TableEnvironment, settings: Settings, group_id: str = "mw-window-aggregates",
    topics: Topics | None = None, rules: RuleSet | None = None, batch: bool = False,
) -> list[str]:
    """Register the tables on ``t_env`` and return the INSERT statements (not yet executed)."""
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("pipeline.name", JOB_NAME)
    # Partitions with no data must not hold the watermark back forever.
    conf.set("table.exec.source.idle-timeout", f"{settings.source_idle_timeout_ms} ms")
    if settings.allowed_lateness_s and not batch:
        # Fire a window again for each late reading within the allowed lateness (an update of its
        # result, which the upsert sink and InfluxDB's point identity turn into an overwrite).
        conf.set("table.exec.emit.late-fire.enabled", "true")
        conf.set("table.exec.emit.late-fire.delay", "0 s")
        conf.set("table.exec.emit.allow-lateness", f"{settings.allowed_lateness_s} s")
    ddl, inserts = render_sql(settings, group_id, topics, rules, batch)
    malformed_ddl, malformed_inserts = malformed_sql(settings, group_id, topics, batch)
    for stmt in ddl + malformed_ddl:
        t_env.execute_sql(stmt)
    return inserts + malformed_inserts


def submit_inserts(t_env: TableEnvironment, inserts: list[str], job_name: str) -> None:
    """Run the INSERTs as one Flink job named ``job_name``."""
    t_env.get_config().set("pipeline.name", job_name)
    statements = t_env.create_statement_set()
    for stmt in inserts:
        statements.add_insert_sql(stmt)
    # Detached submission: the CLI returns once the cluster accepted the job.
    statements.execute()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-id", default="mw-window-aggregates", help="Kafka consumer group")
    parser.add_argument("--readings-topic", default=names.TOPIC_READINGS)
    parser.add_argument("--aggregates-topic", default=names.TOPIC_AGGREGATES)
    parser.add_argument("--late-topic", default=names.TOPIC_LATE)
    parser.add_argument("--alerts-topic", default=names.TOPIC_ALERTS)
    parser.add_argument("--dead-letter-topic", default=names.TOPIC_DEAD_LETTER,
                        help="where malformed readings go (with this job as their source)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="threshold rules (TOML)")
    parser.add_argument("--job-name", default=JOB_NAME)
    parser.add_argument("--batch", action="store_true",
                        help="backfill: run once, in batch mode, over the readings topic as it is now")
    args = parser.parse_args(argv)
    settings = load_settings()
    rules = load_rules(args.rules)  # checked before anything is submitted
    topics = Topics(args.readings_topic, args.aggregates_topic, args.late_topic, args.alerts_topic,
                    args.dead_letter_topic)
    mode = EnvironmentSettings.in_batch_mode() if args.batch else EnvironmentSettings.in_streaming_mode()
    t_env = TableEnvironment.create(mode)
    inserts = build(t_env, settings, args.group_id, topics, rules, args.batch)
    submit_inserts(t_env, inserts, args.job_name)


if __name__ == "__main__":
    main()
