"""The demo: stack up, both jobs, the writer and a live simulator running; results read back.

Everything is left running afterwards (``machinewatch stack down`` stops it), so the dashboard and
Flux queries keep showing live data. Event times are the wall clock, so a second demo run is never
late data for the jobs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from machinewatch import jobs, names, query
from machinewatch.config import Settings
from machinewatch.stack import Stack
from machinewatch.stack.provision import say

# The demo's simulator sends temperature readings only; the device-alerts job (MTConnect device events) would
# sit idle in a third task slot the default TaskManager (2 slots) does not have: 'jobs submit device-alerts'.
JOBS = {"window-aggregates": "machinewatch-window-aggregates", "sustained-overheat": "machinewatch-sustained-overheat"}


def ensure_pipeline(settings: Settings, stack: Stack, job_names: tuple[str, ...] = ("window-aggregates",)) -> None:
    """Jobs on the cluster and the InfluxDB writer running; left as they are if already up."""
    for job in job_names:
        if jobs.running(settings, JOBS[job]):
            say(f"{job} job already running")
        else:
            say(f"{job} job submitted: {jobs.submit(settings, job)}")
    if stack.writer.pid() is None:
        stack.writer.start([sys.executable, "-m", "machinewatch", "sink", "influxdb"], env=settings.to_env())
    say(f"influx writer running (pid {stack.writer.pid()}, log {stack.writer.logfile})")


def ensure_simulator(settings: Settings, stack: Stack, devices: int) -> bool:
    """A live temperature simulator in the background; sensor 3 overheats for 150 s every 10 minutes.

    True when this call started it (its first overheat is then 10 s from now).
    """
    if stack.simulator.pid() is None:
        stack.simulator.start(
            [sys.executable, "-m", "machinewatch", "simulate", "temperature", "--devices", str(devices),
             "--seed", str(int(time.time())), "--site", "demo-line", "--disorder-ms", "500",
             "--overheat-every", str(OVERHEAT_EVERY_S), "--overheat-length", "150", "--overheat-device", "3"],
            env=settings.to_env(),
        )
        say(f"simulator started (pid {stack.simulator.pid()}): {devices} sensors, 1 reading/s each; "
            "sensor-0003 overheats (+35 °C) for 150 s every 10 minutes, the first time 10 s from now")
        return True
    say(f"simulator already running (pid {stack.simulator.pid()})")
    return False


# The simulator's sensor-0003 overheats every this many seconds, the first time 10 s after it starts.
OVERHEAT_EVERY_S = 600
FIRST_OVERHEAT_S = 10


@dataclass
class Seen:
    """What the demo read back from InfluxDB."""

    windows: pd.DataFrame
    alerts: pd.DataFrame


def watch(settings: Settings, started: datetime, alerts_since: datetime, duration: float) -> Seen:
    """Poll InfluxDB every 10 s for ``duration`` s; a slow or failed poll is reported and the watch goes on."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
        try:
            windows = query.window_aggregates(settings, started - timedelta(minutes=1), site="demo-line",
                                              window=f"{settings.window_size_s}s")
            alerts = query.run_flux(settings, _alerts_flux(alerts_since))
        except query.QueryError as exc:
            say(f"{time.monotonic() - deadline + duration:4.0f}s: {exc} (still watching)")
            continue
        say(f"{time.monotonic() - deadline + duration:4.0f}s: {len(windows)} window results, "
            f"{len(alerts)} alert transitions in InfluxDB")
    # The final answer decides the exit code: a failure here is an error, not a note.
    return Seen(
        windows=query.window_aggregates(settings, started - timedelta(minutes=1), site="demo-line",
                                        window=f"{settings.window_size_s}s"),
        alerts=query.run_flux(settings, _alerts_flux(alerts_since)),
    )


def verdict(settings: Settings, seen: Seen, duration: float, fresh_simulator: bool, writer_log: str) -> str | None:
    """Why the demo did not show the pipeline working (None when windows and an alert transition arrived)."""
    logs = f"'machinewatch jobs list', 'machinewatch stack logs flink -n 80' and the writer log {writer_log}"
    if seen.windows.empty:
        return (f"no window result reached InfluxDB in {duration:.0f}s (bucket '{names.BUCKET_AGGREGATES}', "
                f"site demo-line): the window-aggregates job, Kafka or the writer is not working; see {logs}")
    if seen.alerts.empty:
        first = FIRST_OVERHEAT_S + settings.overheat_duration_s
        if fresh_simulator and duration < first + 15:
            return (f"no alert transition yet: the first overheat alert opens about {first}s after the simulator "
                    f"starts and the watch lasted {duration:.0f}s; run the demo with a longer --duration")
        return (f"window results arrived, but no overheat alert transition reached InfluxDB (bucket "
                f"'{names.BUCKET_ALERTS}', site demo-line) although sensor-0003 overheated for longer than "
                f"{settings.overheat_duration_s}s: the sustained-overheat job or the writer is not working; "
                f"see {logs}")
    return None


def run(settings: Settings, duration: float, devices: int) -> int:
    stack = Stack(settings)
    stack.up()
    ensure_pipeline(settings, stack, tuple(JOBS))
    started = datetime.now(tz=UTC)
    fresh = ensure_simulator(settings, stack, devices)
    # A simulator that was already running overheats once per cycle: look back over a whole cycle (and the
    # alert's lifecycle after it) for its transitions instead of expecting one within this watch.
    alerts_since = started if fresh else started - timedelta(seconds=OVERHEAT_EVERY_S + 240)
    say(f"watching for {duration:.0f}s: windows every {settings.window_size_s}s; an overheat alert opens after "
        f"{settings.overheat_duration_s}s above {settings.overheat_threshold_c:.0f} °C")
    seen = watch(settings, started, alerts_since, duration)
    if not seen.windows.empty:
        print(seen.windows.sort_values("_time").tail(12).to_string(index=False))
        print()
    if not seen.alerts.empty:
        print(seen.alerts.to_string(index=False))
    problem = verdict(settings, seen, duration, fresh, str(stack.writer.logfile))
    if problem is not None:
        say(f"demo failed: {problem}")
        return 1
    say("everything keeps running. Next: machinewatch query --last 15m --site demo-line; "
        "machinewatch stack status; machinewatch stack down (stops it all)")
    return 0


def _alerts_flux(since: datetime) -> str:
    return f"""
from(bucket: "{names.BUCKET_ALERTS}")
  |> range(start: {(since - timedelta(minutes=1)).isoformat()})
  |> filter(fn: (r) => r._measurement == "device_alert" and r.site == "demo-line")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group() |> sort(columns: ["_time"])
  |> keep(columns: ["_time", "device_id", "state", "severity", "avg", "peak", "duration_ms"])"""
