"""Benchmark: p50/p95 time of each dashboard panel query over 24 h of aggregates of 1,000 devices.

    python -m bench.dashboard_queries [--devices 1000 --hours 24 --step-s 10 --repeat 20 --no-rollups]

Writes synthetic 10 s window aggregates into a throw-away bucket (operator token) and, as the window job
makes them, their 1-minute and hourly roll-ups (each device's and the fleet's) into two more (``--no-rollups``: none,
every panel reads the windows, as before the roll-ups); runs the Streamlit app's panel queries
(dashboards/streamlit/data.py, i.e. the Flux library) with the range set to the whole period, and deletes
the buckets. Results go to stdout and, with --out, to a Markdown file. Goal: p95 <= 100 ms per panel.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from bench.common import scratch_buckets
from dashboards.streamlit import data
from machinewatch import rollups
from machinewatch.config import load_settings

GOAL_MS = 100.0
# The roll-ups written beside the windows (window tag -> seconds), those machinewatch.rollups makes.
ROLLUP_EVERY_S = {r.label: int(r.every.total_seconds()) for r in rollups.ROLLUPS}
# The baseline beside the panels: no panel asks it, it reads each device's newest window once and returns one
# number. Its time is what InfluxDB takes to open every device's series (the panels that read each device's
# latest value pay it whatever the range), so a panel can be judged against it as well as against the goal.
FLOOR_NAME = "floor: last() of every device's window series, counted (no panel)"
FLOOR_FLUX = """from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "window_agg" and r.window == window and r._field == "avg")
    |> last()
    |> group()
    |> count()"""
# The verdict column of the floor's row: a baseline, not a panel held to the goal.
BASELINE = "baseline"
# influxdb-client types the precision as its WritePrecision class, whose members are plain strings
SECONDS = cast("WritePrecision", WritePrecision.S)


def _windows(devices: int, start: datetime, hours: float, step_s: int, prefix: str,
             region: str = "") -> Iterator[tuple[str, int, float]]:
    """(tags without the window tag, window end in epoch seconds, average) of every synthetic window; every device
    in ``region`` when one is given, else spread over five."""
    first = int(start.timestamp())
    for i in range(devices):
        tags = (f"window_agg,device_id={prefix}-{i:04d},metric=temperature,region={region or f'r{i % 5}'},"
                f"site=s{i % 20},source=src{i % 3},unit=°C")
        base = 40 + (i % 37)
        for k in range(int(hours * 3600) // step_s):
            yield tags, first + (k + 1) * step_s, base + (k % 60) / 10


def lines(devices: int, start: datetime, hours: float, step_s: int, prefix: str = "bench",
          region: str = "") -> Iterator[str]:
    """Line protocol of one temperature window per device and step (deterministic values)."""
    for tags, end, avg in _windows(devices, start, hours, step_s, prefix, region):
        yield f"{tags},window={step_s}s avg={avg},min={avg - 1.5},max={avg + 1.5},count={step_s}i {end}"


def rollup_lines(devices: int, start: datetime, hours: int, step_s: int, every_s: int, label: str,
                 prefix: str = "bench", region: str = "") -> Iterator[str]:
    """The rows the roll-ups (machinewatch.rollups) make of ``lines(...)``: per device and ``every_s``
    bucket, stamped at its end (a window ending on the boundary counts in the bucket it closes), the mean of
    the averages, min of mins, max of maxes and sum of counts, tagged ``window=label``."""
    key: tuple[str, int] | None = None
    avgs: list[float] = []

    def row() -> str:
        assert key is not None
        avg = sum(avgs) / len(avgs)
        return (f"{key[0]},window={label} avg={avg},min={min(avgs) - 1.5},max={max(avgs) + 1.5},"
                f"count={step_s * len(avgs)}i {key[1]}")

    for tags, end, avg in _windows(devices, start, hours, step_s, prefix, region):
        bucket_end = -(-end // every_s) * every_s
        if key != (tags, bucket_end):
            if avgs:
                yield row()
            key, avgs = (tags, bucket_end), []
        avgs.append(avg)
    if avgs:
        yield row()


def fleet_lines(devices: int, start: datetime, hours: int, step_s: int, every_s: int, label: str,
                prefix: str = "bench", region: str = "") -> Iterator[str]:
    """The fleet rows the window job makes beside ``rollup_lines(...)``: per source, region, site, metric and
    ``every_s`` bucket, the device rows counted (``devices``), their averages summed (``avg_sum``), min of mins,
    max of maxes and sum of counts, tagged ``window=label`` (schema.FLEET_RESULT)."""
    fleet: dict[tuple[str, int], list[float]] = {}  # (tags, end) -> [devices, avg_sum, min, max, count]
    for line in rollup_lines(devices, start, hours, step_s, every_s, label, prefix, region):
        series, fields, end_text = line.split(" ")
        tags = dict(kv.split("=", 1) for kv in series.split(",")[1:])
        values = dict(kv.split("=", 1) for kv in fields.split(","))
        key = (",".join(f"{k}={tags[k]}" for k in ("metric", "region", "site", "source", "unit", "window")),
               int(end_text))
        acc = fleet.setdefault(key, [0, 0.0, float("inf"), float("-inf"), 0])
        acc[0] += 1
        acc[1] += float(values["avg"])
        acc[2] = min(acc[2], float(values["min"]))
        acc[3] = max(acc[3], float(values["max"]))
        acc[4] += int(values["count"].rstrip("i"))
    for (tags_text, end), (n, avg_sum, low, high, count) in sorted(fleet.items(), key=lambda kv: kv[0][1]):
        yield (f"fleet_agg,{tags_text} avg_sum={avg_sum},count={int(count)}i,devices={int(n)}i,max={high},min={low} "
               f"{end}")


def load(client: InfluxDBClient, bucket: str, records: Iterable[str], precision: WritePrecision = SECONDS) -> int:
    """Write the line protocol (timestamps in ``precision``) in batches of 50,000; returns the number of points."""
    write = client.write_api(write_options=SYNCHRONOUS)
    batch: list[str] = []
    points = 0
    for line in records:
        batch.append(line)
        if len(batch) == 50_000:
            write.write(bucket, record=batch, write_precision=precision)
            points += len(batch)
            batch = []
    if batch:
        write.write(bucket, record=batch, write_precision=precision)
        points += len(batch)
    return points


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm-up: connection, Flux compile caches
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--step-s", type=int, default=10, help="window length of the synthetic aggregates (the "
                        "app's tumbling window is 10 s)")
    parser.add_argument("--rollups", action=argparse.BooleanOptionalAction, default=True,
                        help="also write the 1-minute and hourly roll-ups the panels read over long ranges")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, help="append the Markdown table here")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped: still delete the bucket
    settings = load_settings()
    token = settings.operator_token()  # creates and deletes its own bucket; the read token cannot
    bucket_name = f"bench-dashboard-{uuid.uuid4().hex[:6]}"
    rollup_buckets = {label: f"{bucket_name}-{label}" for label in ROLLUP_EVERY_S} if args.rollups else {}
    stop = datetime.now(tz=UTC).replace(second=0, microsecond=0)
    start = stop - timedelta(hours=args.hours)
    with (InfluxDBClient(url=settings.influx, token=token, org=settings.influx_org, timeout=120_000) as client,
          scratch_buckets(client, settings.influx_org, [bucket_name, *rollup_buckets.values()], retention_s=3 * 86400)):
        t0 = time.perf_counter()
        points = load(client, bucket_name, lines(args.devices, start, args.hours, args.step_s))
        load_s = time.perf_counter() - t0
        print(f"wrote {points:,} windows ({args.devices} devices x {args.hours} h / {args.step_s} s) "
              f"in {load_s:.0f} s", flush=True)
        for label, name in rollup_buckets.items():
            written = load(client, name, rollup_lines(args.devices, start, args.hours, args.step_s,
                                                   ROLLUP_EVERY_S[label], label))
            fleet = load(client, name, fleet_lines(args.devices, start, args.hours, args.step_s,
                                                   ROLLUP_EVERY_S[label], label))
            print(f"wrote {written:,} {label} roll-up rows and {fleet:,} fleet rows", flush=True)

        dash = data.Dashboard(url=settings.influx, token=token, org=settings.influx_org, timeout_ms=120_000,
                              aggregates_bucket=bucket_name, rollup_1m_bucket=rollup_buckets.get("1m", ""),
                              rollup_1h_bucket=rollup_buckets.get("1h", ""))
        f = data.Filters(start=start, stop=stop + timedelta(minutes=1), window=f"{args.step_s}s")
        region = data.Filters(start=f.start, stop=f.stop, window=f.window, region="r1")
        eight = tuple(f"bench-{i:04d}" for i in range(8))
        choices = dash.choices(f)
        panels: dict[str, Callable[[], Any]] = {
            "KPI fleet summary, 4 metrics (fleet_mean)": lambda: dash.fleet_summary(f),
            "KPI fleet summary, 1 metric (fleet_mean)": lambda: dash.fleet_summary(f, (data.TEMPERATURE,)),
            "KPI power now (latest_per_device)": lambda: dash.latest(f, (data.POWER,)),
            "filter choices (latest_per_device, all metrics)": lambda: dash.choices(f),
            # the fleet rows when the roll-ups hold them (fleet_series), else every device's rows (chart_series)
            "chart per region (fleet_series)": lambda: dash.series(f, "region"),
            "chart 8 devices (chart_series)": lambda: dash.series(f, "device_id", eight),
            "hottest 10 (hottest_devices)": lambda: dash.hottest(f, n=10),
            "histogram (device_means)": lambda: dash.histogram(f),
            # the page reads its filter choices before its panels, and the data volume takes its devices from them
            "data volume (data_volume, fleet rows)": lambda: dash.view(f, choices).data_volume(f),
            "events/s per source (fleet_events_per_source)": lambda: dash.events_per_source(f),
            "KPI events/s now (ingest_rate, fleet minutes)": lambda: dash.events_rate(f),
            "hottest 10, one region filtered": lambda: dash.hottest(region, n=10),
        }
        rows = []
        for name, fn in panels.items():
            ms = timed(fn, args.repeat)
            rows.append((name, statistics.median(ms), p95(ms)))
            print(f"{name:<50} p50 {rows[-1][1]:8.1f} ms   p95 {rows[-1][2]:8.1f} ms")
        floor_params = {"bucket": bucket_name, "start": f.start, "stop": f.stop, "window": f.window}
        ms = timed(lambda: client.query_api().query(FLOOR_FLUX, params=floor_params), args.repeat)
        floor = (statistics.median(ms), p95(ms))
        print(f"{FLOOR_NAME:<50} p50 {floor[0]:8.1f} ms   p95 {floor[1]:8.1f} ms")
        dash.close()
    table = [
        f"\n### {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC — {args.devices} devices, {args.hours} h of "
        f"{args.step_s} s windows ({points:,} windows{', with their 1 m and 1 h roll-ups' if args.rollups else ''}), "
        f"{args.repeat} runs each\n",
        "| panel query | p50 ms | p95 ms | goal p95 ≤ 100 ms |", "|---|---:|---:|---|",
        *[f"| {n} | {a:.1f} | {b:.1f} | {'met' if b <= GOAL_MS else 'missed'} |" for n, a, b in rows],
        f"| {FLOOR_NAME} | {floor[0]:.1f} | {floor[1]:.1f} | {BASELINE} |",
    ]
    if args.out:
        with args.out.open("a") as out:
            out.write("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
