// How are devices spread over temperatures? Each device's mean window average of `metric` in the range,
// counted into bins of width binWidth starting at binStart (devices, not rows). Counts are cumulative
// (InfluxDB's histogram): the count of devices with a mean <= le.
// Inputs: bucket, start, stop, metric ("temperature"), window ("10s" or "30s@10s"), devicePrefix, region, site ("" = all),
//   binStart (float), binWidth (float), binCount (int).
// Rows: le (float, upper bin edge; +Inf last), devices (float, cumulative).
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
    |> group(columns: ["device_id"])
    |> mean()
    |> group()
    |> histogram(bins: linearBins(start: binStart, width: binWidth, count: binCount, infinity: true))
    |> rename(columns: {_value: "devices"})
    |> keep(columns: ["le", "devices"])
