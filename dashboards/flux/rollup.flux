// What were the aggregates per `every` (1 minute, 1 hour)? Window results rolled up per series (avg = mean of
// the window averages, min of mins, max of maxes, sum of counts), stamped at the end of each `every` and tagged
// window = label. The window job makes the roll-up buckets' rows (machinewatch/rollups.py); this is the
// InfluxDB-task way it was measured against (bench/rollup_cost.py), and a roll-up of window rows over any period.
// A window counts in the bucket its end falls in, end included (the 10 s window ending 12:01:00 is in the
// minute ending 12:01:00); start and stop should be multiples of `every`, so no bucket is cut short.
// Inputs: bucket, start, stop (times), window (the tag of the rows rolled up: "10s" tumbling, or "1m" for hours
//   from minutes), every (duration, e.g. 1m or 1h), label (string, the window tag of the rows made, e.g. "1m").
// Rows: one per series, field and bucket: _time, _measurement ("window_agg"), the tags (window = label), _field, _value.

// Ends are inclusive: read (start, stop] in buckets offset by 1 ns, (b - every, b] + 1 ns, then move each row
// back 1 ns, so a window ending on a boundary falls in the bucket it closes, stamped with that boundary.
// Each field is read by its own from(), so InfluxDB aggregates it in storage; one read shared by the four kept
// everything in Flux: 6.5 s against 1.4 s per run at 1,000 devices x 5 min, and 86 s per run at 10,000 devices.
rolled = (field, fn) => from(bucket: bucket)
    |> range(start: time(v: int(v: start) + 1), stop: time(v: int(v: stop) + 1))
    |> filter(fn: (r) => r._measurement == "window_agg" and r.window == window and r._field == field)
    |> aggregateWindow(every: every, offset: 1ns, fn: fn, createEmpty: false)

union(tables: [rolled(field: "avg", fn: mean), rolled(field: "min", fn: min), rolled(field: "max", fn: max),
        rolled(field: "count", fn: sum)])
    |> timeShift(duration: -1ns)
    |> set(key: "window", value: label)
