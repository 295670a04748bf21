// Window aggregates (avg/min/max/count) per device and metric, one row per window end.
// Inputs (injected as Flux options by machinewatch.query / influxdb-client `params`):
//   bucket (string), start and stop (times), devicePrefix ("" = all devices), site ("" = all sites),
//   window ("" = all; "10s" tumbling, "30s@10s" sliding 30 s windows every 10 s).
import "regexp"

// The device prefix as an anchored tag regex: InfluxDB pushes it down to the storage index, while
// strings.hasPrefix ran row by row over every window in the range (seconds at 100 devices x 1 h).
devicePrefixRe = regexp.compile(v: "^" + regexp.quoteMeta(v: devicePrefix))

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "window_agg")
    |> filter(fn: (r) => r.device_id =~ devicePrefixRe)
    |> filter(fn: (r) => site == "" or r.site == site)
    |> filter(fn: (r) => window == "" or r.window == window)
    |> pivot(rowKey: ["_time", "window"], columnKey: ["_field"], valueColumn: "_value")
    |> group()
    |> keep(columns: ["_time", "device_id", "metric", "site", "region", "unit", "window", "avg", "min", "max", "count"])
    |> sort(columns: ["device_id", "metric", "_time"])
