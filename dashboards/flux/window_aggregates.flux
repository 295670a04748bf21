// Window aggregates (avg/min/max/count) per device and metric, one row per window end.
// Inputs (injected as Flux options by machinewatch.query / influxdb-client `params`):
//   bucket (string), start and stop (times), devicePrefix ("" = all devices), site ("" = all sites).
import "strings"

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "window_agg")
    |> filter(fn: (r) => devicePrefix == "" or strings.hasPrefix(v: r.device_id, prefix: devicePrefix))
    |> filter(fn: (r) => site == "" or r.site == site)
    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
    |> group()
    |> keep(columns: ["_time", "device_id", "metric", "site", "region", "unit", "window", "avg", "min", "max", "count"])
    |> sort(columns: ["device_id", "metric", "_time"])
