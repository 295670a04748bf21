// How did `metric` move over time, per region (or source, or site), for the whole fleet? The fleet roll-ups
// (one row per source, region, site and metric per minute or hour, written by the window job) summed into
// `every` buckets: the sum of the devices' averages over the number of device rows is the mean of the
// device rows in the bucket, what chart_series gives from every device's rows, from a few series instead.
// Inputs: bucket (a roll-up bucket), start, stop, metric (string), by ("region", "source" or "site"),
//   every (duration), window ("1m" or "1h"), region, site ("" = all).
// Rows: _time (end of each `every` bucket), series (the value of `by`), value (float).

// "" turns a filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => {
    inRegion = if region == "" then tables else tables |> filter(fn: (r) => r.region == region)

    return if site == "" then inRegion else inRegion |> filter(fn: (r) => r.site == site)
}

// Each series' sums per bucket near storage, stamped at the bucket's start, then summed per `by` value (grouping by
// the tag itself: a map() over every bucket of every series to name it took 380 ms at 60 series x 24 h).
sums = (field) => from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "fleet_agg" and r.window == window and r.metric == metric and r._field == field)
    |> narrow()
    |> aggregateWindow(every: every, fn: sum, timeSrc: "_start", createEmpty: false)
    |> group(columns: [by])
    |> aggregateWindow(every: every, fn: sum, createEmpty: false)
    |> toFloat()
    |> set(key: "_field", value: field)

union(tables: [sums(field: "avg_sum"), sums(field: "devices")])
    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
    |> filter(fn: (r) => r.devices > 0.0)
    |> map(fn: (r) => ({_time: r._time, series: if by == "source" then r.source else if by == "site" then r.site else r.region, value: r.avg_sum / r.devices}))
    |> group()
    |> sort(columns: ["series", "_time"])
