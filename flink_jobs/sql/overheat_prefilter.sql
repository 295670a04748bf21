-- Drops the buckets that cannot change any device's alert state before they reach Python, so the
-- Python lifecycle runs for the few devices near or in an episode, not for every device-second.
-- A bucket is kept when, within the keep window of its device (clear + 2 x max gap + 2 buckets),
-- some bucket was not cool ({not_cool}: vmax >= threshold - hysteresis for an 'above' rule, vmin <=
-- threshold + hysteresis for a 'below' one) or followed a gap longer than max gap
-- (its device's previous bucket ended more than max gap + 1 bucket before its end; a device's very
-- first bucket follows nothing: a new device has no episode to continue). Every bucket of a pending or
-- open episode is kept, and so is the first one after it; flink_jobs/overheat_logic.py
-- (relevant_buckets, with a property test) is the reference for this predicate.
-- Both OVER windows are unbounded with one value per device (the previous end, the latest marker
-- ends), not a range of rows: constant state and work per bucket. With per-device-group overrides,
-- {keep_ms}, {near_ms} and the clear line are CASE expressions over device_id / region / site
-- (flink_jobs/sustained_rules.py renders them; the first matching override wins, as in Python).
SELECT device_id, region, site, start_ms, end_ms, vmin, vmax, vsum, n, window_time
FROM (
  SELECT *,
    MAX(CASE WHEN end_ms - prev_end > {near_ms} THEN end_ms END) OVER (
      PARTITION BY device_id ORDER BY window_time
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS last_gap_end
  FROM (
    SELECT *,
      LAG(end_ms) OVER (PARTITION BY device_id ORDER BY window_time) AS prev_end,
      MAX(CASE WHEN {not_cool} THEN end_ms END) OVER (
        PARTITION BY device_id ORDER BY window_time) AS last_warm_end
    FROM ({buckets})
  )
)
WHERE end_ms - last_warm_end <= {keep_ms} OR end_ms - last_gap_end <= {keep_ms}
