// Window aggregates (avg/min/max/count) per device and metric, one row per window end.
// Inputs (injected as Flux options by machinewatch.query / influxdb-client `params`):
//   bucket (string), start and stop (times), devicePrefix ("" = all devices), site ("" = all sites),
//   window ("" = all; "10s" tumbling, "30s@10s" sliding 30 s windows every 10 s).
import "strings"

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "window_agg")
    |> filter(fn: (r) => devicePrefix == "" or strings.hasPrefix(v: r.device_id, prefix: devicePrefix))
    |> filter(fn: (r) => site == "" or r.site == site)
    |> filter(fn: (r) => window == "" or r.window == window)
    |> pivot(rowKey: ["_time", "window"], columnKey: ["_field"], valueColumn: "_value")
    |> group()
    |> keep(columns: ["_time", "device_id", "metric", "site", "region", "unit", "window", "avg", "min", "max", "count"])
    |> sort(columns: ["device_id", "metric", "_time"])
