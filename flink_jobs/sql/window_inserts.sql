-- Window results and late events. {window_tvf} is a TUMBLE or HOP call over `readings`; with an
-- allowed lateness the group-window form (@aggregates_with_lateness) is used instead, because only
-- group windows can fire again for late readings (table.exec.emit.allow-lateness).
-- Window bounds become epoch ms: the session time zone is UTC (set by the job) and sizes are whole seconds.

-- @aggregates
INSERT INTO window_aggregates
SELECT
  device_id, metric, source, COALESCE(region, ''), COALESCE(site, ''), unit,
  CAST({window_s} AS BIGINT) * 1000,
  CAST({slide_s} AS BIGINT) * 1000,
  1000 * EXTRACT(EPOCH FROM window_start),
  1000 * EXTRACT(EPOCH FROM window_end),
  AVG(`value`), MIN(`value`), MAX(`value`), COUNT(*)
FROM TABLE({window_tvf})
GROUP BY window_start, window_end, device_id, metric, source, region, site, unit;

-- @aggregates_with_lateness
INSERT INTO window_aggregates
SELECT
  device_id, metric, source, COALESCE(region, ''), COALESCE(site, ''), unit,
  CAST({window_s} AS BIGINT) * 1000,
  CAST({slide_s} AS BIGINT) * 1000,
  1000 * EXTRACT(EPOCH FROM {group_fn}_START(event_time, {group_args})),
  1000 * EXTRACT(EPOCH FROM {group_fn}_END(event_time, {group_args})),
  AVG(`value`), MIN(`value`), MAX(`value`), COUNT(*)
FROM readings
GROUP BY {group_fn}(event_time, {group_args}), device_id, metric, source, region, site, unit;

-- @late
-- A reading is late when the tumbling window it belongs to has fired and its allowed lateness has
-- passed, i.e. the watermark has reached that window's last millisecond plus {lateness_ms} ms: such
-- a reading is dropped by the window and counted here.
INSERT INTO late_events
SELECT source, device_id, metric, ts, event_id, CAST(CURRENT_WATERMARK(event_time) AS STRING)
FROM readings
WHERE CURRENT_WATERMARK(event_time) IS NOT NULL
  AND TIMESTAMPADD(MILLISECOND, {window_ms} - 1 + {lateness_ms} - CAST(MOD(ts, {window_ms}) AS INT), event_time)
      <= CURRENT_WATERMARK(event_time);
