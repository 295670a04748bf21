// What is each device's mean of `metric` in the range? The mean of its window averages (or of its roll-ups').
// The dashboard bins these into its histogram of devices per temperature: one query, with the bins drawn
// over the means' own span (temperature_histogram has InfluxDB count fixed bins chosen before).
// Inputs: bucket, start, stop, metric (string, e.g. "temperature"), window ("10s", "30s@10s", or a roll-up's
//   "1m" / "1h"), devicePrefix, region, site ("" = all).
// Rows: device_id, mean (float).
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
    // A bare mean() straight on the filtered series runs in storage (a group() first does not: 1,000 devices x
    // 24 h of minutes took ~220 ms instead of ~95). A series is one device, unless it moved site or region
    // within the range: then its series' means are averaged below.
    |> mean()
    |> group(columns: ["device_id"])
    |> mean()
    |> group()
    |> rename(columns: {_value: "mean"})
    |> keep(columns: ["device_id", "mean"])
    |> sort(columns: ["device_id"])
