// How much data does each source deliver, and from how many devices? Readings (summed window
// counts of tumbling windows) and distinct devices per source in the range.
// Inputs: bucket, start, stop, window (the tumbling shape, e.g. "10s"), devicePrefix, region, site ("" = all),
//   rollup1m, rollup1h (the roll-up buckets, e.g. "rollup_1m" and "rollup_1h"; "" = read only the windows),
//   measurement (the roll-up rows read: "window_agg", each device's; or "fleet_agg", the fleet rows, a few series per
//   source instead of one per device, with devicePrefix "": they hold no device ids, so the rows have no devices).
// Rows: source, devices (int; not with the fleet rows), readings (int).
// With roll-ups, the whole hours (and minutes) of the range that have surely been written (their bucket
// ended more than 5 min / 1 min ago; the window job writes a roll-up seconds after it closes: the watermark
// delay plus the writer's flush) are read from hourly (minute) rows, and only the edges from the windows:
// 24 h of 1,000 devices is some 30,000 rows instead of 8.6 million. A row stamped T counts the windows
// ending in (T - 1h, T] (machinewatch/rollups.py), so the tiers below split the range's windows without a
// gap or an overlap; the job rolls up exactly the windows it wrote (a reading too late for its window is
// in neither).
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

// Readings per source and device (per source, of fleet rows) in [lo, hi) of one bucket and window tag, of
// measurement m; nothing when the span is empty.
counts = (b, w, lo, hi, m="window_agg") => {
    read = (l, h) => from(bucket: b)
        |> range(start: l, stop: h)
        |> filter(fn: (r) => r._measurement == m and r._field == "count" and r.window == w)
        |> narrow()

    return (if hi > lo then read(l: lo, h: hi) else read(l: lo, h: date.add(d: 1ns, to: lo)) |> filter(fn: (r) => false))
        |> group(columns: ["source", "device_id"])
        |> sum()
}

// Rows stamped after `lo` and up to `hi` (the buckets ending in (lo, hi]).
ends = (b, w, lo, hi) => counts(b: b, w: w, lo: date.add(d: 1ns, to: lo), hi: date.add(d: 1ns, to: hi), m: measurement)
ceilTo = (t, unit) => date.add(d: unit, to: date.truncate(t: date.sub(d: 1ns, from: t), unit: unit))
earliest = (a, b) => if a < b then a else b
lastStart = date.truncate(t: date.sub(d: 1ns, from: stop), unit: 1m)

// The tiers' bounds: minutesFrom <= hoursFrom <= hoursTo <= minutesTo < stop, all on boundaries.
minutesFrom = ceilTo(t: start, unit: 1m)
minutesTo = if rollup1m == "" then minutesFrom else earliest(a: lastStart, b: date.truncate(t: date.sub(d: 1m, from: now()), unit: 1m))
useMinutes = minutesTo > minutesFrom
hoursFrom = ceilTo(t: start, unit: 1h)
hoursTo = if rollup1h == "" or not useMinutes then hoursFrom
    else earliest(a: date.truncate(t: minutesTo, unit: 1h), b: date.truncate(t: date.sub(d: 5m, from: now()), unit: 1h))
useHours = hoursTo > hoursFrom

perDevice = if not useMinutes then counts(b: bucket, w: window, lo: start, hi: stop)
    else union(tables: [
        // windows ending in [start, minutesFrom] and (minutesTo, stop)
        counts(b: bucket, w: window, lo: start, hi: date.add(d: 1ns, to: minutesFrom)),
        counts(b: bucket, w: window, lo: date.add(d: 1ns, to: minutesTo), hi: stop),
        // minutes ending in (minutesFrom, hoursFrom] and (hoursTo, minutesTo]; or all of (minutesFrom, minutesTo]
        ends(b: rollup1m, w: "1m", lo: minutesFrom, hi: if useHours then hoursFrom else minutesTo),
        ends(b: rollup1m, w: "1m", lo: if useHours then hoursTo else minutesTo, hi: minutesTo),
        // hours ending in (hoursFrom, hoursTo]
        ends(b: if useHours then rollup1h else rollup1m, w: "1h", lo: hoursFrom, hi: hoursTo),
    ])

perDevice
    |> group(columns: ["source", "device_id"])
    |> sum()
    |> group(columns: ["source"])
    |> reduce(identity: {devices: 0, readings: 0}, fn: (r, accumulator) => ({devices: accumulator.devices + 1, readings: accumulator.readings + r._value}))
    // the fleet rows' sums stand for many devices each: their count of groups is no count of devices
    |> drop(columns: if measurement == "fleet_agg" then ["devices"] else [])
    |> group()
    |> sort(columns: ["source"])
