-- Per-device, per-metric event-time tumbling windows over canonical readings.
-- Placeholders {name} are filled from settings by flink_jobs/window_aggregates.py; the column
-- list of the source comes from machinewatch.record, never typed here.

CREATE TABLE readings (
  {reading_columns},
  event_time AS TO_TIMESTAMP_LTZ(`ts`, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '{watermark_delay_s}' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '{readings_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'properties.group.id' = '{group_id}',
  'properties.auto.offset.reset' = 'earliest',
  'scan.startup.mode' = 'group-offsets',
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
  `window_start_ms` BIGINT,
  `window_end_ms` BIGINT,
  `avg_value` DOUBLE,
  `min_value` DOUBLE,
  `max_value` DOUBLE,
  `count` BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = '{aggregates_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'key.format' = 'raw',
  'key.fields' = 'device_id',
  'value.format' = 'json',
  'value.fields-include' = 'ALL',
  'sink.delivery-guarantee' = 'at-least-once'
);

-- Window bounds as epoch ms: the session time zone is UTC (set by the job), sizes are whole seconds.
INSERT INTO window_aggregates
SELECT
  device_id, metric, source, COALESCE(region, ''), COALESCE(site, ''), unit,
  CAST({window_s} AS BIGINT) * 1000,
  1000 * UNIX_TIMESTAMP(CAST(window_start AS STRING), 'yyyy-MM-dd HH:mm:ss.SSS'),
  1000 * UNIX_TIMESTAMP(CAST(window_end AS STRING), 'yyyy-MM-dd HH:mm:ss.SSS'),
  AVG(`value`), MIN(`value`), MAX(`value`), COUNT(*)
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_time), INTERVAL '{window_s}' SECOND))
GROUP BY window_start, window_end, device_id, metric, source, region, site, unit;
