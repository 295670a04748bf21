// How did `metric` move over time, per device or per region? Window averages averaged into `every`
// buckets, one series per value of the `by` tag; the caller picks `every` so a chart stays small.
// Inputs: bucket, start, stop, metric (string), by ("device_id" or "region"), every (duration),
//   window ("10s" or "30s@10s"), devices (array of device ids; [] = all), devicePrefix, region, site ("" = all).
// Rows: _time (end of each `every` bucket), series (the device id or region), value (float).
import "strings"

// "" turns a filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => {
    inRegion = if region == "" then tables else tables |> filter(fn: (r) => r.region == region)
    inSite = if site == "" then inRegion else inRegion |> filter(fn: (r) => r.site == site)

    return if devicePrefix == "" then inSite else inSite |> filter(fn: (r) => strings.hasPrefix(v: r.device_id, prefix: devicePrefix))
}

pick = (tables=<-) => if length(arr: devices) == 0 then tables else tables |> filter(fn: (r) => contains(value: r.device_id, set: devices))

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "window_agg" and r.window == window and r._field == "avg" and r.metric == metric)
    |> pick()
    |> narrow()
    |> group(columns: [by])
    |> aggregateWindow(every: every, fn: mean, createEmpty: false)
    |> map(fn: (r) => ({_time: r._time, series: if by == "region" then r.region else r.device_id, value: r._value}))
    |> group()
    |> sort(columns: ["series", "_time"])
