"""The demo: stack up, both jobs, the writer and a live simulator running; results read back.

Everything is left running afterwards (``machinewatch stack down`` stops it), so the dashboard and
Flux queries keep showing live data. Event times are the wall clock, so a second demo run is never
late data for the jobs.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

from machinewatch import jobs, names, query
from machinewatch.config import Settings
from machinewatch.stack import Stack
from machinewatch.stack.provision import say

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


def ensure_simulator(settings: Settings, stack: Stack, devices: int) -> None:
    """A live temperature simulator in the background; sensor 3 overheats for 150 s every 10 minutes."""
    if stack.simulator.pid() is None:
        stack.simulator.start(
            [sys.executable, "-m", "machinewatch", "simulate", "temperature", "--devices", str(devices),
             "--seed", str(int(time.time())), "--site", "demo-line", "--disorder-ms", "500",
             "--overheat-every", "600", "--overheat-length", "150", "--overheat-device", "3"],
            env=settings.to_env(),
        )
        say(f"simulator started (pid {stack.simulator.pid()}): {devices} sensors, 1 reading/s each; "
            "sensor-0003 overheats (+35 °C) for 150 s every 10 minutes, the first time 10 s from now")
    else:
        say(f"simulator already running (pid {stack.simulator.pid()})")


def run(settings: Settings, duration: float, devices: int) -> int:
    stack = Stack(settings)
    stack.up()
    ensure_pipeline(settings, stack, tuple(JOBS))
    started = datetime.now(tz=UTC)
    ensure_simulator(settings, stack, devices)
    say(f"watching for {duration:.0f}s: windows every {settings.window_size_s}s; an overheat alert opens after "
        f"{settings.overheat_duration_s}s above {settings.overheat_threshold_c:.0f} °C")
    deadline = time.monotonic() + duration
    alerts = query.run_flux(settings, _alerts_flux(started))
    while time.monotonic() < deadline:
        time.sleep(10)
        windows = query.window_aggregates(settings, started - timedelta(minutes=1), site="demo-line",
                                          window=f"{settings.window_size_s}s")
        alerts = query.run_flux(settings, _alerts_flux(started))
        say(f"{time.monotonic() - deadline + duration:4.0f}s: {len(windows)} window results, "
            f"{len(alerts)} alert transitions in InfluxDB")
    windows = query.window_aggregates(settings, started - timedelta(minutes=1), site="demo-line",
                                      window=f"{settings.window_size_s}s")
    if windows.empty:
        say("no results reached InfluxDB: see 'machinewatch stack logs' and the writer log")
        return 1
    print(windows.sort_values("_time").tail(12).to_string(index=False))
    print()
    print(alerts.to_string(index=False) if not alerts.empty else "no alert transition yet (wait a little longer)")
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
