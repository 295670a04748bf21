// When did data last arrive from each source? The newest window end (event time) of its readings'
// window aggregates: a source whose newest window is old has stopped sending, or its data stopped on the way.
// Inputs: bucket, start (how far back a source is looked for).
// Rows: source, _time (the newest window end).
from(bucket: bucket)
    |> range(start: start)
    |> filter(fn: (r) => r._measurement == "window_agg" and r._field == "count")
    |> last()
    |> keep(columns: ["source", "_time"])
    |> group(columns: ["source"])
    |> sort(columns: ["_time"])
    |> last(column: "_time")
    |> group()
    |> sort(columns: ["source"])
