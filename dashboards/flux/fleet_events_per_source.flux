// How many readings per second does each source deliver, fleet-wide? The readings counted by the fleet
// roll-ups (one row per source, region, site and metric per minute or hour, written by the window job)
// summed per source into `every` buckets and divided by the bucket length: events_per_source from a few
// series instead of every device's.
// Inputs: bucket (a roll-up bucket), start, stop, every (duration), window ("1m" or "1h"), region, site ("" = all).
// Rows: _time (end of each bucket), source, readings (int), per_second (float).

// "" turns a filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => {
    inRegion = if region == "" then tables else tables |> filter(fn: (r) => r.region == region)

    return if site == "" then inRegion else inRegion |> filter(fn: (r) => r.site == site)
}

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "fleet_agg" and r._field == "count" and r.window == window)
    |> narrow()
    // each series' sums per bucket near storage, stamped at the bucket's start, then summed per source
    |> aggregateWindow(every: every, fn: sum, timeSrc: "_start", createEmpty: false)
    |> keep(columns: ["_time", "_value", "source"])
    |> group(columns: ["source"])
    |> aggregateWindow(every: every, fn: sum, createEmpty: false)
    |> map(fn: (r) => ({_time: r._time, source: r.source, readings: r._value, per_second: float(v: r._value) / (float(v: int(v: every)) / 1000000000.0)}))
    |> group()
    |> sort(columns: ["source", "_time"])
