// What is the fleet's average of each metric, from the fleet roll-ups, and over how many devices? The devices'
// averages summed over the range's fleet rows, divided by the device rows counted: the mean of every
// device-minute (or device-hour) average. Each device counts once per minute it reported, so over a range the
// devices report through this equals fleet_summary (each device's mean, then their mean) from a few series
// instead of one per device.
// Inputs: bucket (a roll-up bucket), start, stop, metrics (array of strings; [] = all), window ("1m" or "1h"),
//   region, site ("" = all).
// Rows: metric, unit, devices (int: per source, region and site the most devices in one row, summed), mean (float).

// "" turns a filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => {
    inRegion = if region == "" then tables else tables |> filter(fn: (r) => r.region == region)

    return if site == "" then inRegion else inRegion |> filter(fn: (r) => r.site == site)
}

rows = (field) => from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "fleet_agg" and r.window == window and r._field == field)
    |> narrow()

// Each sum and max runs in storage over every metric's rows (a group() or a bare aggregate straight after the
// filter: a set of metrics in the filter would keep it from being pushed down there), a few rows come out, and
// the metrics asked for are picked from those.
ofMetrics = (tables=<-) => if length(arr: metrics) == 0 then tables else tables |> filter(fn: (r) => contains(value: r.metric, set: metrics))

total = (field) => rows(field: field)
    |> group(columns: ["metric", "unit"])
    |> sum()
    |> ofMetrics()
    |> toFloat()
    |> set(key: "_field", value: field)

// A device is in one source, region and site: each series' most devices in one row is how many it holds.
peak = rows(field: "devices")
    |> max()
    |> ofMetrics()
    |> group(columns: ["metric", "unit"])
    |> sum()
    |> toFloat()
    |> set(key: "_field", value: "peak")

union(tables: [total(field: "avg_sum"), total(field: "devices"), peak])
    |> group(columns: ["metric", "unit"])
    |> pivot(rowKey: ["metric", "unit"], columnKey: ["_field"], valueColumn: "_value")
    |> filter(fn: (r) => r.devices > 0.0)
    |> map(fn: (r) => ({metric: r.metric, unit: r.unit, devices: int(v: r.peak), mean: r.avg_sum / r.devices}))
    |> group()
    |> sort(columns: ["metric"])
