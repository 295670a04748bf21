// Which alerts are active, pending or resolved? The latest record of every device alert (an alert id
// moves through pending -> opened -> escalated -> resolved | silent), newest first. Active means the
// latest state is opened, escalated or silent; pending ones carry fires_at_ms (when they will fire).
// Inputs: bucket (the alerts bucket), start, stop (look back far enough to see when alerts opened),
//   devicePrefix ("" = all).
// Rows: alert_id, device_id, kind, state, severity, region, site, started_ms, duration_ms, fires_at_ms
//   (floats, ms since the epoch / ms; null where the record has none), _time (time of the latest record).
import "regexp"

// The device prefix as an anchored tag regex: InfluxDB pushes it down to the storage index, while
// strings.hasPrefix ran row by row over every window in the range (seconds at 100 devices x 1 h).
devicePrefixRe = regexp.compile(v: "^" + regexp.quoteMeta(v: devicePrefix))

// "" turns the filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => if devicePrefix == "" then tables else tables |> filter(fn: (r) => r.device_id =~ devicePrefixRe)

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "device_alert")
    |> filter(fn: (r) => r._field == "alert_id" or r._field == "started_ms" or r._field == "duration_ms" or r._field == "fires_at_ms")
    |> narrow()
    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
    |> filter(fn: (r) => exists r.alert_id)
    |> group(columns: ["alert_id"])
    |> sort(columns: ["_time"])
    |> last(column: "_time")
    |> group()
    |> keep(columns: ["_time", "alert_id", "device_id", "kind", "state", "severity", "region", "site", "started_ms", "duration_ms", "fires_at_ms"])
    |> sort(columns: ["_time"], desc: true)
