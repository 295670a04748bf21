// Which threshold rules fired, on which devices, how often and when last? Threshold alerts (one per
// matching sliding window) counted per device, rule group, severity and label.
// Inputs: bucket (the alerts bucket), start, stop, devicePrefix, region, site ("" = all).
// Rows: device_id, rule_group, severity, label, windows (int), last (time of the latest window end).
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
    |> filter(fn: (r) => r._measurement == "threshold_alert" and r._field == "label")
    |> narrow()
    |> group(columns: ["device_id", "rule_group", "severity", "_value"])
    |> reduce(identity: {windows: 0, last: time(v: 0)}, fn: (r, accumulator) => ({windows: accumulator.windows + 1, last: if r._time > accumulator.last then r._time else accumulator.last}))
    |> group()
    |> rename(columns: {_value: "label"})
    |> sort(columns: ["last"], desc: true)
