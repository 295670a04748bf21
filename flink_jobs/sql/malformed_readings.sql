-- Malformed readings are dead-lettered, never dropped silently. The readings table ignores parse errors
-- (one bad message must not stop the job): a field that is missing or not of its type reads as NULL,
-- and a payload that is not a JSON object gives no row at all. Both are written to the dead-letter
-- topic with the job as `source` and `topic/partition@offset` as `origin`, so they are counted per
-- source. Per-event work stays in the JVM: one filter on the parsed rows, and on a second reader of the
-- raw bytes one JSON check (the bytes of a payload that cannot be parsed exist only there).
-- Cost, measured as JVM CPU of a local batch run of 300,000 readings through three aggregates and a
-- filter, two rounds on a busy 2-core machine (the noise is as large as the effect): the filter on
-- parsed rows 0-17 %, the raw reader 5-28 %, both -1-34 %. MW_FLINK_DEAD_LETTER_UNPARSABLE=false leaves
-- the raw reader out.
-- Placeholders are filled by flink_jobs/window_aggregates.py (malformed_sql): the window job uses it for the
-- readings table, the device-alerts job for its device_events table ({table} and {topic}).

CREATE TABLE {table}_raw (
  `raw` BYTES,
  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,
  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL
) WITH (
  'connector' = 'kafka',
  'topic' = '{topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  'properties.group.id' = '{group_id}-raw',
  'properties.auto.offset.reset' = 'earliest',
  {scan_options},
  'format' = 'raw'
);

CREATE TABLE dead_letters (
  {dead_letter_columns}
) WITH (
  'connector' = 'kafka',
  'topic' = '{dead_letter_topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
{kafka_security}  'value.format' = 'json',
  'sink.delivery-guarantee' = 'at-least-once'
);

-- @inserts
-- Parsed, but a required field is NULL: the row as the job read it (its exact bytes are at origin).
INSERT INTO dead_letters
SELECT
  {incomplete_select}
FROM {table}
WHERE {incomplete_where};

-- Not a JSON object: the exact bytes, base64 (at most {max_raw_b64} characters, cut on a 4-character
-- boundary so what is kept still decodes).
INSERT INTO dead_letters
SELECT
  {not_json_select}
FROM (
  SELECT TO_BASE64(`raw`) AS b64, kafka_partition, kafka_offset
  FROM {table}_raw
  WHERE `raw` IS NULL OR NOT (CAST(`raw` AS STRING) IS JSON OBJECT)
);
