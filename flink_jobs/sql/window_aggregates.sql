-- Tables of the window job. Placeholders in braces are filled from settings by
-- flink_jobs/window_aggregates.py; every column list comes from the record definitions
-- (machinewatch.schema: READING, WINDOW_RESULT, LATE_EVENT, THRESHOLD_ALERT).

CREATE TABLE readings (
  {reading_columns},
  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,
  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL,
  event_time AS TO_TIMESTAMP_LTZ(`ts`, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '{watermark_delay_s}' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '{readings_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  'properties.group.id' = '{group_id}',
  'properties.auto.offset.reset' = 'earliest',
  {scan_options},
  'format' = 'json',
  -- Malformed payloads are rejected by the collectors. What slips through is not dropped silently:
  -- a field that is missing or not of its type reads as NULL and the row is dead-lettered by the job
  -- (sql/malformed_readings.sql); a payload that is no JSON object at all is dropped here and
  -- dead-lettered from the raw bytes (readings_raw).
  'json.ignore-parse-errors' = 'true'
);

CREATE TABLE window_aggregates (
  {window_result_columns}{aggregates_key}
) WITH (
  'topic' = '{aggregates_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  {aggregates_sink}
);

-- Fleet roll-ups (per source, region, site and metric) share the windows' topic; the writer tells them apart.
CREATE TABLE fleet_aggregates (
  {fleet_result_columns}
) WITH (
  'topic' = '{aggregates_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  {fleet_sink}
);

CREATE TABLE late_events (
  {late_event_columns}
) WITH (
  'topic' = '{late_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  {late_sink}
);

CREATE TABLE threshold_alerts (
  {threshold_alert_columns}{alerts_key}
) WITH (
  'topic' = '{alerts_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  {alerts_sink}
);
