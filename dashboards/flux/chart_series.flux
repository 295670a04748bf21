// How did `metric` move over time, per device or per region? Window averages averaged into `every`
// buckets, one series per value of the `by` tag; the caller picks `every` so a chart stays small.
// Inputs: bucket, start, stop, metric (string), by ("device_id" or "region"), every (duration),
//   window ("10s" or "30s@10s"), devices (array of device ids; [] = all), devicePrefix, region, site ("" = all).
// Rows: _time (end of each `every` bucket), series (the device id or region), value (float).
import "array"
import "regexp"
import "strings"

// The device prefix as an anchored tag regex: InfluxDB pushes it down to the storage index, while
// strings.hasPrefix ran row by row over every window in the range (seconds at 100 devices x 1 h).
devicePrefixRe = regexp.compile(v: "^" + regexp.quoteMeta(v: devicePrefix))

// "" turns a filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => {
    inRegion = if region == "" then tables else tables |> filter(fn: (r) => r.region == region)
    inSite = if site == "" then inRegion else inRegion |> filter(fn: (r) => r.site == site)

    return if devicePrefix == "" then inSite else inSite |> filter(fn: (r) => r.device_id =~ devicePrefixRe)
}

// The chosen devices as one anchored alternation, pushed down to storage like the prefix (contains() ran row by
// row: 8 s for 8 devices over 1 h of 100 devices' windows on a loaded machine).
// (Not built for no devices: array.map fails on an empty array, "index out of bounds".)
devicesRe = if length(arr: devices) == 0 then /^/ else regexp.compile(v: "^(" + strings.joinStr(arr: array.map(arr: devices, fn: (x) => regexp.quoteMeta(v: x)), v: "|") + ")$")
pick = (tables=<-) => if length(arr: devices) == 0 then tables else tables |> filter(fn: (r) => r.device_id =~ devicesRe)

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
