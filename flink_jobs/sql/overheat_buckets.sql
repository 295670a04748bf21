-- Per-device temperature buckets for the sustained-overheat detector: the per-event work
-- (parsing, watermarks, min/max/sum/count) stays in the JVM; Python sees one row per device per bucket.
SELECT
  device_id,
  MAX(region) AS region,
  MAX(site) AS site,
  1000 * EXTRACT(EPOCH FROM window_start) AS start_ms,
  1000 * EXTRACT(EPOCH FROM window_end) AS end_ms,
  MIN(`value`) AS vmin,
  MAX(`value`) AS vmax,
  SUM(`value`) AS vsum,
  COUNT(*) AS n,
  window_time
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_time), INTERVAL '{bucket_s}' SECOND))
WHERE metric = '{metric}'
GROUP BY window_start, window_end, window_time, device_id
