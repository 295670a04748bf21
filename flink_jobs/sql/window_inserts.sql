-- Window results, roll-ups and late events, in sections (-- @name) that flink_jobs/window_aggregates.py fills in.
-- Without an allowed lateness the tumbling windows are a view (@tumbling_view over the window TVF), the roll-ups
-- views cascaded on it (@rollup_view: minutes from the tumbling windows, hours from the minutes) and each is
-- written by @from_view; sliding windows use @aggregates. With an allowed lateness every shape uses the
-- group-window form (@aggregates_with_lateness) over the readings, because only group windows can fire again
-- for late readings (table.exec.emit.allow-lateness), and their updates cannot feed another window.
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

-- @tumbling_view
-- Only the window's last millisecond is kept (as `rowtime`, the time attribute a window over the view needs;
-- a window TVF over the view adds window_start/window_end/window_time of its own): the bounds are computed from
-- it, so the tumbling windows' own output and the roll-ups read the same columns of one aggregation and Flink
-- computes it once (it would compute it twice if one of them read one more column).
-- `total` (the sum of the values) lets a roll-up average the readings themselves, not the windows' averages.
CREATE TEMPORARY VIEW {view} AS
SELECT
  device_id, metric, source, COALESCE(region, '') AS region, COALESCE(site, '') AS site, unit,
  window_time AS rowtime, MIN(`value`) AS min_value, MAX(`value`) AS max_value, COUNT(*) AS cnt,
  SUM(`value`) AS total
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_time), INTERVAL '{window_s}' SECOND))
GROUP BY window_start, window_end, window_time, device_id, metric, source, region, site, unit;

-- @rollup_view
-- A window belongs to the roll-up window its last millisecond (its window_time, `rowtime` here) falls in: the 10 s window ending
-- 12:01:00 is in the minute ending 12:01:00. The roll-up fires when the watermark passes its end.
CREATE TEMPORARY VIEW {view} AS
SELECT
  device_id, metric, source, region, site, unit,
  window_time AS rowtime, MIN(min_value) AS min_value, MAX(max_value) AS max_value,
  SUM(cnt) AS cnt, SUM(total) AS total
FROM TABLE(TUMBLE(TABLE {parent}, DESCRIPTOR(rowtime), {interval}))
GROUP BY window_start, window_end, window_time, device_id, metric, source, region, site, unit;

-- @from_view
-- A window ends 1 ms after its rowtime; sizes are whole seconds, so the end is the next whole second.
INSERT INTO window_aggregates
SELECT
  device_id, metric, source, region, site, unit,
  CAST({window_s} AS BIGINT) * 1000,
  CAST({window_s} AS BIGINT) * 1000,
  1000 * (EXTRACT(EPOCH FROM rowtime) + 1) - CAST({window_s} AS BIGINT) * 1000,
  1000 * (EXTRACT(EPOCH FROM rowtime) + 1),
  total / cnt, min_value, max_value, cnt
FROM {view};

-- @fleet
-- All devices of one source, region and site: how many reported, the sum of their averages (the mean device is
-- avg_sum / devices, what a chart averaging the devices' rows shows), extremes and readings. Fleet panels read
-- these few series instead of every device's.
INSERT INTO fleet_aggregates
SELECT
  source, region, site, metric, unit,
  CAST({window_s} AS BIGINT) * 1000,
  CAST({window_s} AS BIGINT) * 1000,
  1000 * (EXTRACT(EPOCH FROM window_time) + 1),
  COUNT(*), SUM(total / cnt), MIN(min_value), MAX(max_value), SUM(cnt)
FROM TABLE(TUMBLE(TABLE {view}, DESCRIPTOR(rowtime), {interval}))
GROUP BY window_start, window_end, window_time, source, region, site, metric, unit;

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
