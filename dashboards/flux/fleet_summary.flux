// What is the fleet's average of each metric, and over how many devices? Each device counts once
// (the mean of its window averages), so a chatty device does not outweigh a quiet one.
// Inputs: bucket, start, stop, metrics (array of strings, e.g. ["temperature", "cpu_pct", "load"]),
//   window ("10s" or "30s@10s"), devicePrefix, region, site ("" = all).
// Rows: metric, unit, devices (int), mean (float).
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

// One metric is a plain tag comparison, pushed down to storage (bound to a name first: an index
// expression such as metrics[0] inside the predicate is not); several metrics need contains().
firstMetric = if length(arr: metrics) > 0 then metrics[0] else ""
ofMetrics = (tables=<-) => if length(arr: metrics) == 1 then tables |> filter(fn: (r) => r.metric == firstMetric) else tables |> filter(fn: (r) => contains(value: r.metric, set: metrics))

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "window_agg" and r.window == window and r._field == "avg")
    |> ofMetrics()
    |> narrow()
    |> group(columns: ["metric", "unit", "device_id"])
    |> mean()
    |> group(columns: ["metric", "unit"])
    |> reduce(identity: {devices: 0, total: 0.0}, fn: (r, accumulator) => ({devices: accumulator.devices + 1, total: accumulator.total + r._value}))
    |> map(fn: (r) => ({metric: r.metric, unit: r.unit, devices: r.devices, mean: r.total / float(v: r.devices)}))
    |> group()
    |> sort(columns: ["metric"])
