// Which devices ran hottest? The highest window average of `metric` per device in the range, hottest first.
// Inputs: bucket (string), start and stop (times), metric (string, e.g. "temperature"),
//   window ("10s" tumbling, "30s@10s" sliding), devicePrefix, region, site ("" = all), n (int, how many devices).
// Rows: device_id, region, site, unit, peak_avg (float), at (time of that window's end).
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
    |> filter(fn: (r) => r._measurement == "window_agg" and r.window == window and r._field == "avg" and r.metric == metric)
    |> narrow()
    |> group(columns: ["device_id", "region", "site", "unit"])
    |> max()
    |> group()
    |> top(n: n, columns: ["_value"])
    |> rename(columns: {_value: "peak_avg", _time: "at"})
    |> keep(columns: ["device_id", "region", "site", "unit", "peak_avg", "at"])
