// What were the hourly aggregates? Tumbling-window results rolled up to 1 h per series (avg = mean of
// window averages, min of mins, max of maxes, sum of counts) at the hour's end; the window job writes rows
// of this shape into the rollup_1h bucket (machinewatch.rollups; its avg is the mean of the readings).
// Inputs: bucket, start, stop, window (the tumbling shape, e.g. "10s"), devicePrefix ("" = all).
// Rows: one per series, field and hour: _time, _measurement ("window_agg"), tags (window = "1h"), _field, _value.
import "regexp"

// The device prefix as an anchored tag regex: InfluxDB pushes it down to the storage index, while
// strings.hasPrefix ran row by row over every window in the range (seconds at 100 devices x 1 h).
devicePrefixRe = regexp.compile(v: "^" + regexp.quoteMeta(v: devicePrefix))

// "" turns the filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => if devicePrefix == "" then tables else tables |> filter(fn: (r) => r.device_id =~ devicePrefixRe)

data = from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "window_agg" and r.window == window)
    |> narrow()

union(tables: [
    data |> filter(fn: (r) => r._field == "avg") |> aggregateWindow(every: 1h, fn: mean, createEmpty: false),
    data |> filter(fn: (r) => r._field == "min") |> aggregateWindow(every: 1h, fn: min, createEmpty: false),
    data |> filter(fn: (r) => r._field == "max") |> aggregateWindow(every: 1h, fn: max, createEmpty: false),
    data |> filter(fn: (r) => r._field == "count") |> aggregateWindow(every: 1h, fn: sum, createEmpty: false),
])
    |> map(fn: (r) => ({r with window: "1h"}))
