-- Tables of the window job. Placeholders in braces are filled from settings by
-- flink_jobs/window_aggregates.py; the source column list comes from machinewatch.record.

CREATE TABLE readings (
  {reading_columns},
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
  -- Malformed payloads are rejected by the collectors; the job skips what slips through.
  'json.ignore-parse-errors' = 'true'
);

CREATE TABLE window_aggregates (
  `device_id` STRING,
  `metric` STRING,
  `source` STRING,
  `region` STRING,
  `site` STRING,
  `unit` STRING,
  `window_ms` BIGINT,
  `slide_ms` BIGINT,
  `window_start_ms` BIGINT,
  `window_end_ms` BIGINT,
  `avg_value` DOUBLE,
  `min_value` DOUBLE,
  `max_value` DOUBLE,
  `count` BIGINT{aggregates_key}
) WITH (
  'topic' = '{aggregates_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  {aggregates_sink}
);

CREATE TABLE late_events (
  `source` STRING,
  `device_id` STRING,
  `metric` STRING,
  `ts` BIGINT,
  `event_id` STRING,
  `watermark` STRING
) WITH (
  'connector' = 'kafka',
  'topic' = '{late_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  'key.format' = 'raw',
  'key.fields' = 'device_id',
  'value.format' = 'json',
  'value.fields-include' = 'ALL',
  'sink.delivery-guarantee' = 'at-least-once'
);

CREATE TABLE threshold_alerts (
  `alert_id` STRING,
  `rule_group` STRING,
  `label` STRING,
  `severity` STRING,
  `device_id` STRING,
  `region` STRING,
  `site` STRING,
  `window_start_ms` BIGINT,
  `window_end_ms` BIGINT,
  `values` STRING{alerts_key}
) WITH (
  'topic' = '{alerts_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  {alerts_sink}
);
