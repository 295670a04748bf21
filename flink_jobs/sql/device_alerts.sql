-- Tables of the device-alerts job. Placeholders in braces are filled by flink_jobs/device_alerts.py: the
-- column lists from the record definitions (machinewatch.schema: DEVICE_EVENT, DERIVED_ALERT), the connector
-- options from settings (Kafka; a test gives bounded files instead). On Kafka the table also carries each
-- message's partition and offset: the origin of a dead letter (flink_jobs/sql/malformed_readings.sql).

CREATE TABLE device_events (
  {device_event_columns},
{kafka_metadata}  proc_time AS PROCTIME()
) WITH (
  {source_options}
);

CREATE TABLE derived_alerts (
  {derived_alert_columns}
) WITH (
  {sink_options}
);

-- Each observation of a watched item with the code of the alert its value makes active (0: none). An event
-- with a required field missing or of the wrong type is no observation here: it is dead-lettered instead.
-- One device's events arrive in order on one partition (keyed by device), so processing time orders them.
CREATE TEMPORARY VIEW alert_levels AS
SELECT *, {rule_code} AS code
FROM device_events
WHERE `kind` = 'observation' AND {complete} AND `item` IS NOT NULL AND ({watched});

-- The code of the item's previous observation: the sum over it and this one, minus this one's.
CREATE TEMPORARY VIEW alert_changes AS
SELECT *, CASE WHEN seen = 1 THEN 0 ELSE pair - code END AS prev_code
FROM (
  SELECT *,
    SUM(code) OVER w AS pair,
    COUNT(*) OVER w AS seen
  FROM alert_levels
  WINDOW w AS (PARTITION BY `device_id`, `item` ORDER BY proc_time ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
);

-- @inserts
-- An alert opens when an item's observation makes it active and the one before did not make it active.
INSERT INTO derived_alerts
SELECT {opened_select}
FROM alert_changes
WHERE code <> 0 AND code <> prev_code;

-- It is resolved by the first observation after it that does not keep it active.
INSERT INTO derived_alerts
SELECT {resolved_select}
FROM alert_changes
WHERE prev_code <> 0 AND code <> prev_code;
