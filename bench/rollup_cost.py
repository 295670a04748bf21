"""The minute roll-up made two ways, side by side on one stack: by the InfluxDB task or by Flink (issue 19, item 1).

- **Flink**: the window job with its 10 s tumbling windows alone (``MW_ROLLUPS=false``) and as it ships, with its
  roll-ups (minutes cascaded from the 10 s windows, hours from the minutes), alternated on the same backlog, no
  sliding windows, no threshold rules. The difference in CPU-seconds per million readings is what the roll-ups
  cost in Flink (the hours' share included). Its rows then travel like any window: through Kafka and the writer
  into InfluxDB; influxd's share is measured by writing the Flink run's minute rows, the writer's is taken from the
  capacity phase when it ran.
- **InfluxDB task**: the 1-minute task's Flux (``machinewatch.rollups``, bound to a fixed ``now``) run as the
  scheduler runs it, once per minute boundary over its 5-minute lookback, on 10 minutes of 10 s windows of as many
  devices; influxd's CPU per run is the cost of one fleet-minute.
- **Outputs checked equal**: the task run over the Flink run's own 10 s windows must give the Flink run's 60 s
  windows, device-minute by device-minute: count, min and max always, the average where the minute is whole
  (60 readings, six full windows: the mean of their means is the mean of the readings).

The hourly roll-up is not compared: the job makes it from its minutes as the hourly task made it from the task's.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from influxdb_client import InfluxDBClient, WritePrecision

from bench.common import scratch_buckets
from bench.compare import Comparison, compare, significant, tumbling_windows
from bench.dashboard_queries import lines, load
from bench.flink_runs import no_rules, run_job_on_backlog
from bench.kafka_data import read_alerts
from bench.measure import RssSampler
from machinewatch import names, rollups
from machinewatch.config import Settings
from machinewatch.line_protocol import window_line

MILLISECONDS = cast("WritePrecision", WritePrecision.MS)
MINUTE_MS = 60_000
# The Flink variants: the 10 s windows alone, and with the roll-ups the job makes (no sliding windows either way).
FLINK_VARIANTS = {"10s": {"hop_size_s": 0, "rollups": False}, "10s+rollups": {"hop_size_s": 0, "rollups": True}}
# Minutes of synthetic windows for the task's steady cost: its 5-minute lookback full from the 6th boundary on.
STEADY_MINUTES = 10


def bound_task(rollup: rollups.Rollup, org: str, now: datetime) -> str:
    """The task's Flux as the scheduler would run it at ``now``: no ``option task`` line, ``now()`` fixed."""
    text = rollups.task_flux(rollup, org)
    kept = [ln for ln in text.splitlines() if not ln.startswith("option task")]
    return "\n".join(kept).replace("now()", f'time(v: "{now.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")')


def minute_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    return (doc["device_id"], doc["metric"], int(doc["window_end_ms"]))


def minute_value(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """count, min, max always; the average only for a whole minute (see the module's docstring), 9 digits."""
    count = int(doc["count"])
    avg = significant(float(doc["avg_value"])) if count == 60 else None
    return (count, float(doc["min_value"]), float(doc["max_value"]), avg)


def compare_minutes(flink: list[dict[str, Any]], task: list[dict[str, Any]], last_end_ms: int,
                    what: str = "1-minute roll-up: the window job's minutes vs the InfluxDB task on the same run's "
                                "10 s windows") -> Comparison:
    """Device-minute by device-minute, up to ``last_end_ms`` (the newest 10 s window end): the watermark is one
    for all devices, so Flink has closed every minute ending there or before and none after, while the task would
    also roll the newest minute's first windows into a row Flink has not closed yet."""
    closed = [d for d in task if int(d["window_end_ms"]) <= last_end_ms]
    return compare(what, ("flink", flink), ("influxdb task", closed), minute_key, minute_value)


def task_rows(client: InfluxDBClient, bucket: str) -> list[dict[str, Any]]:
    """The roll-up rows in ``bucket`` as window documents (the field names of the Kafka results)."""
    flux = (f'from(bucket: "{bucket}") |> range(start: 0)'
            f' |> filter(fn: (r) => r._measurement == "{names.MEASUREMENT_WINDOW}")'
            ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")')
    out = []
    for table in client.query_api().query(flux):
        for rec in table.records:
            v = rec.values
            out.append({"device_id": v["device_id"], "metric": v["metric"],
                        "window_end_ms": int(rec.get_time().timestamp() * 1000), "count": v["count"],
                        "min_value": v["min"], "max_value": v["max"], "avg_value": v["avg"]})
    return out


def run_task(client: InfluxDBClient, rollup: rollups.Rollup, org: str, boundaries: list[datetime],
             influxd_cpu: Callable[[], float]) -> list[dict[str, float]]:
    """The task once per boundary (scheduled at boundary + offset: ``now`` is the boundary); wall ms and influxd
    CPU-s of each run."""
    runs = []
    for b in boundaries:
        flux = bound_task(rollup, org, b + rollup.offset)
        cpu0, t0 = influxd_cpu(), time.perf_counter()
        client.query_api().query(flux)
        runs.append({"ms": (time.perf_counter() - t0) * 1000, "cpu_s": influxd_cpu() - cpu0})
    return runs


def scratch(client: InfluxDBClient, org: str, *labels: str) -> AbstractContextManager[list[str]]:
    tag = uuid.uuid4().hex[:6]
    return scratch_buckets(client, org, [f"bench-rollup-{label}-{tag}" for label in labels])


def minute_boundaries(first_ms: int, last_ms: int, lookback: timedelta) -> list[datetime]:
    """Every boundary whose run covers a window ending in [first_ms, last_ms]: from the first minute end at or after
    the first window's end up to the last lookback that still holds the last window."""
    lo = -(-first_ms // MINUTE_MS) * MINUTE_MS
    hi = -(-last_ms // MINUTE_MS) * MINUTE_MS + int(lookback.total_seconds() * 1000) - MINUTE_MS
    return [datetime.fromtimestamp(ms / 1000, tz=UTC) for ms in range(lo, hi + 1, MINUTE_MS)]


def task_steady(client: InfluxDBClient, org: str, devices: int, influxd_cpu: Callable[[], float]) -> dict[str, Any]:
    """The 1-minute task's cost per run (= per fleet-minute) once its lookback is full: ``devices`` devices'
    10 s windows for STEADY_MINUTES minutes, the task run at each boundary from the 6th on."""
    rollup = rollups.ROLLUP_1M
    start = datetime.now(tz=UTC).replace(second=0, microsecond=0) - timedelta(minutes=STEADY_MINUTES + 5)
    with scratch(client, org, "steady-src", "steady-1m") as (src, dst):
        points = load(client, src, lines(devices, start, STEADY_MINUTES / 60, 10))
        bound = replace(rollup, source_bucket=src, bucket=dst)
        lookback_min = int(rollup.lookback.total_seconds() // 60)
        boundaries = [start + timedelta(minutes=m) for m in range(lookback_min + 1, STEADY_MINUTES + 1)]
        runs = run_task(client, bound, org, boundaries, influxd_cpu)
        made = len(task_rows(client, dst))
    return {"devices": devices, "windows": points, "runs": runs, "rows_made": made,
            "cpu_s_per_run": statistics.median(r["cpu_s"] for r in runs),
            "ms_per_run": statistics.median(r["ms"] for r in runs)}


def measure(settings: Settings, topic: str, events: int, devices: int, sampler: RssSampler, tmp: Path,
            repeats: int = 2, perturb: bool = False) -> tuple[dict[str, Any], list[Comparison]]:
    """Both ways on the backlog ``topic`` (``events`` readings of ``devices`` devices, one per device-second):
    the figures, and the output check (with ``perturb`` also the same check with one task row dropped, which must
    come out DIFFER)."""
    variants = {name: settings.model_copy(update=update) for name, update in FLINK_VARIANTS.items()}
    flink: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(repeats):  # alternated, so drift in the machine's load touches both alike
        for name, s in variants.items():
            tag = f"ru{name.replace('+', 'p')}-{i}"
            flink[name].append(run_job_on_backlog(s, "window-aggregates", topic, events, tag, sampler,
                                                  extra_args=no_rules(tmp)))

    cpus = {name: [r["cpu"]["cpu_s_per_million_events"] for r in runs if r.get("cpu")] for name, runs in flink.items()}
    if not all(cpus.values()):
        msg = "no CPU figure for some Flink runs (the backlog was read between two samples: too small)"
        raise RuntimeError(msg)
    # The minute's cost in Flink: the difference of the medians, and the largest difference the runs allow (the
    # dearest run with the minute against the cheapest without): below zero is noise, counted as nothing.
    delta_per_m = max(statistics.median(cpus["10s+rollups"]) - statistics.median(cpus["10s"]), 0.0)
    delta_max_per_m = max(max(cpus["10s+rollups"]) - min(cpus["10s"]), 0.0)
    last = flink["10s+rollups"][-1]
    docs = read_alerts(settings, next(t for t in last["output_topics"] if ".aggregates." in t))
    ten, minutes = tumbling_windows(docs, 10_000), tumbling_windows(docs, MINUTE_MS)
    org = settings.influx_org

    def influxd_cpu() -> float:
        return sampler.cpu_seconds()["influxdb"]

    with InfluxDBClient(url=settings.influx, token=settings.operator_token(), org=org, timeout=600_000) as client:
        with scratch(client, org, "src", "1m", "flink-1m") as (src, dst, flink_dst):
            load(client, src, (window_line(d) for d in ten), MILLISECONDS)
            ends = [int(d["window_end_ms"]) for d in ten]
            boundaries = minute_boundaries(min(ends), max(ends), rollups.ROLLUP_1M.lookback)
            run_task(client, replace(rollups.ROLLUP_1M, source_bucket=src, bucket=dst), org, boundaries, influxd_cpu)
            made = task_rows(client, dst)
            checks = [compare_minutes(minutes, made, max(ends))]
            if perturb:
                checks.append(compare_minutes(minutes, made[1:], max(ends), what=f"{checks[0].what} (self-check: "
                                              "one task row dropped)"))
            # influxd's share of the Flink way: writing its minute rows
            cpu0 = influxd_cpu()
            written = load(client, flink_dst, (window_line(d) for d in minutes), MILLISECONDS)
            write_cpu_per_row = (influxd_cpu() - cpu0) / max(written, 1)
        steady = task_steady(client, org, devices, influxd_cpu)

    fleet_minute_readings = devices * 60
    return {"devices": devices, "events": events, "flink_runs": flink, "flink_cpu_s_per_million": cpus,
            "flink_delta_cpu_s_per_million": delta_per_m, "flink_delta_max_cpu_s_per_million": delta_max_per_m,
            "flink_minute_rows": len(minutes),
            "influxd_write_cpu_s_per_row": write_cpu_per_row, "task_steady": steady,
            "per_fleet_minute": {"flink_cpu_s": delta_per_m * fleet_minute_readings / 1e6,
                                 "flink_cpu_s_max": delta_max_per_m * fleet_minute_readings / 1e6,
                                 "flink_influxd_write_cpu_s": write_cpu_per_row * devices,
                                 "task_cpu_s": steady["cpu_s_per_run"]}}, checks
