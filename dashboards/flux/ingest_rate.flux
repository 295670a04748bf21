// How many readings per second arrive now? The newest `span` of data (e.g. 1m): the tumbling windows'
// counts summed per window end, for the windows that end within `span` of the newest window end in the
// range. The caller divides by the time those windows cover; a rate over the whole range would also count
// the time before the data began.
// Inputs: bucket, start, stop (times), span (duration, e.g. 1m), window (the tumbling shape, e.g. "10s":
//   sliding windows would count a reading several times), devicePrefix, region, site ("" = all),
//   measurement ("window_agg", each device's windows; or "fleet_agg" with a roll-up bucket and window "1m": the
//   fleet roll-ups' counts, a few series instead of one per device, the newest whole minute written).
// Rows: _time (window end), readings (int); none when the range holds no data.
import "date"
import "regexp"

// The device prefix as an anchored tag regex: InfluxDB pushes it down to the storage index, while
// strings.hasPrefix ran row by row over every window in the range (seconds at 100 devices x 1 h).
devicePrefixRe = regexp.compile(v: "^" + regexp.quoteMeta(v: devicePrefix))

// "" turns a filter off; a filter that is off is left out, so InfluxDB can push the rest down to storage.
narrow = (tables=<-) => {
    inRegion = if region == "" then tables else tables |> filter(fn: (r) => r.region == region)
    inSite = if site == "" then inRegion else inRegion |> filter(fn: (r) => r.site == site)

    return if devicePrefix == "" then inSite else inSite |> filter(fn: (r) => r.device_id =~ devicePrefixRe)
}

counts = (lo, hi) => from(bucket: bucket)
    |> range(start: lo, stop: hi)
    |> filter(fn: (r) => r._measurement == measurement and r._field == "count" and r.window == window)
    |> narrow()

// The newest window end: each series' last window, then the newest of those.
newest = counts(lo: start, hi: stop)
    |> last()
    |> keep(columns: ["_time"])
    |> group()
    |> sort(columns: ["_time"], desc: true)
    |> limit(n: 1)
    |> findColumn(fn: (key) => true, column: "_time")

// Without data, the instant `start` alone: the search above found nothing there either.
lastEnd = if length(arr: newest) > 0 then newest[0] else start
cutoff = date.sub(d: span, from: lastEnd)
// Windows that end after the cutoff, and not before the range starts.
recentStart = if cutoff < start then start else date.add(d: 1ns, to: cutoff)

// Only the columns summed go into the regrouping: carrying every tag of 1,000 series into group() made this
// query take ~1.4 s at 1,000 devices, ~0.3 s without them (same rows out).
counts(lo: recentStart, hi: date.add(d: 1ns, to: lastEnd))
    |> keep(columns: ["_time", "_value"])
    |> group(columns: ["_time"])
    |> sum()
    |> group()
    |> rename(columns: {_value: "readings"})
    |> keep(columns: ["_time", "readings"])
    |> sort(columns: ["_time"])
