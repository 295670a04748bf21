// How much data does each source deliver, and from how many devices? Readings (summed window
// counts of tumbling windows) and distinct devices per source in the range.
// Inputs: bucket, start, stop, window (the tumbling shape, e.g. "10s"), devicePrefix, region, site ("" = all).
// Rows: source, devices (int), readings (int).
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
    |> group(columns: ["source", "device_id"])
    |> sum()
    |> group(columns: ["source"])
    |> reduce(identity: {devices: 0, readings: 0}, fn: (r, accumulator) => ({devices: accumulator.devices + 1, readings: accumulator.readings + r._value}))
    |> group()
    |> sort(columns: ["source"])
