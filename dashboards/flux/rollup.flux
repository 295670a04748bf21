// What were the aggregates per `every` (1 minute, 1 hour)? Window results rolled up per series (avg = mean of
// the window averages, min of mins, max of maxes, sum of counts), stamped at the end of each `every` and tagged
// window = label; the roll-up tasks (machinewatch/rollups.py) write these rows into their own buckets.
// A window counts in the bucket its end falls in, end included (the 10 s window ending 12:01:00 is in the
// minute ending 12:01:00); start and stop should be multiples of `every`, so no bucket is cut short.
// Inputs: bucket, start, stop (times), window (the tag of the rows rolled up: "10s" tumbling, or "1m" for hours
//   from minutes), every (duration, e.g. 1m or 1h), label (string, the window tag of the rows made, e.g. "1m").
// Rows: one per series, field and bucket: _time, _measurement ("window_agg"), the tags (window = label), _field, _value.

// Ends are inclusive: read (start, stop], then move every row back 1 ns so a window ending on a boundary
// falls in the bucket it closes, and aggregateWindow stamps each bucket with its end (the boundary).
data = from(bucket: bucket)
    |> range(start: time(v: int(v: start) + 1), stop: time(v: int(v: stop) + 1))
    |> filter(fn: (r) => r._measurement == "window_agg" and r.window == window)
    |> timeShift(duration: -1ns)

union(tables: [
    data |> filter(fn: (r) => r._field == "avg") |> aggregateWindow(every: every, fn: mean, createEmpty: false),
    data |> filter(fn: (r) => r._field == "min") |> aggregateWindow(every: every, fn: min, createEmpty: false),
    data |> filter(fn: (r) => r._field == "max") |> aggregateWindow(every: every, fn: max, createEmpty: false),
    data |> filter(fn: (r) => r._field == "count") |> aggregateWindow(every: every, fn: sum, createEmpty: false),
])
    |> map(fn: (r) => ({r with window: label}))
