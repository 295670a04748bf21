// How long was each device in alarm? Per device, the seconds between each alert opening and its
// resolution (or `stop` while it is still open or silent), clipped to the range; pending alerts do not count.
// Inputs: bucket (the alerts bucket), start and stop (times), devicePrefix ("" = all).
// Rows: device_id, alerts (int), seconds (float), longest desc.
import "regexp"

// The device prefix as an anchored tag regex: InfluxDB pushes it down to the storage index, while
// strings.hasPrefix ran row by row over every window in the range (seconds at 100 devices x 1 h).
devicePrefixRe = regexp.compile(v: "^" + regexp.quoteMeta(v: devicePrefix))

// "" turns the filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => if devicePrefix == "" then tables else tables |> filter(fn: (r) => r.device_id =~ devicePrefixRe)

startNs = int(v: start)
stopNs = int(v: stop)

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "device_alert" and r.state != "pending")
    |> filter(fn: (r) => r._field == "alert_id" or r._field == "started_ms")
    |> narrow()
    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
    |> filter(fn: (r) => exists r.alert_id and exists r.started_ms)
    |> group(columns: ["alert_id"])
    |> sort(columns: ["_time"])
    |> last(column: "_time")
    |> map(fn: (r) => {
        endNs = if r.state == "resolved" then int(v: r._time) else stopNs
        openedNs = int(v: r.started_ms) * 1000000
        fromNs = if openedNs > startNs then openedNs else startNs
        return {device_id: r.device_id, seconds: if endNs > fromNs then float(v: endNs - fromNs) / 1000000000.0 else 0.0}
    })
    |> group(columns: ["device_id"])
    |> reduce(identity: {alerts: 0, seconds: 0.0}, fn: (r, accumulator) => ({alerts: accumulator.alerts + 1, seconds: accumulator.seconds + r.seconds}))
    |> group()
    |> sort(columns: ["seconds"], desc: true)
