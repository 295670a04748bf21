// How many readings arrived too late for their window, per source? Late events (written by the
// sink at their event time, count = 1 each) summed per source in the range.
// Inputs: bucket, start, stop, devicePrefix ("" = all).
// Rows: source, late (int), devices (int), last_event (time of the latest late reading's event time).
import "regexp"

// The device prefix as an anchored tag regex: InfluxDB pushes it down to the storage index, while
// strings.hasPrefix ran row by row over every window in the range (seconds at 100 devices x 1 h).
devicePrefixRe = regexp.compile(v: "^" + regexp.quoteMeta(v: devicePrefix))

// "" turns the filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => if devicePrefix == "" then tables else tables |> filter(fn: (r) => r.device_id =~ devicePrefixRe)

from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "late_event" and r._field == "count")
    |> narrow()
    |> group(columns: ["source", "device_id"])
    |> reduce(identity: {late: 0, last_event: time(v: 0)}, fn: (r, accumulator) => ({late: accumulator.late + r._value, last_event: if r._time > accumulator.last_event then r._time else accumulator.last_event}))
    |> group(columns: ["source"])
    |> reduce(identity: {devices: 0, late: 0, last_event: time(v: 0)}, fn: (r, accumulator) => ({devices: accumulator.devices + 1, late: accumulator.late + r.late, last_event: if r.last_event > accumulator.last_event then r.last_event else accumulator.last_event}))
    |> group()
    |> sort(columns: ["source"])
