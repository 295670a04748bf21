"""The first slice as a demo: stack up, job submitted, writer running, readings simulated, results shown."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

from machinewatch import jobs, query
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from machinewatch.stack.provision import say
from simulators.temperature import TemperatureSimulator


def ensure_pipeline(settings: Settings, stack: Stack) -> None:
    """Window job on the cluster and the InfluxDB writer running; both left as they are if up."""
    if jobs.running(settings, "machinewatch-window-aggregates"):
        say("window-aggregates job already running")
    else:
        say(f"window-aggregates job submitted: {jobs.submit(settings, 'window-aggregates')}")
    if stack.writer.pid() is None:
        stack.writer.start([sys.executable, "-m", "machinewatch", "sink", "influxdb"], env=settings.to_env())
    say(f"influx writer running (pid {stack.writer.pid()}, log {stack.writer.logfile})")


def run(settings: Settings, duration: float, devices: int) -> int:
    stack = Stack(settings)
    stack.up()
    ensure_pipeline(settings, stack)
    started = datetime.now(tz=UTC)
    sim = TemperatureSimulator(devices=devices, seed=int(started.timestamp()), max_disorder_ms=500,
                               device_prefix="demo-sensor")
    say(f"simulating {devices} sensors for {duration:.0f}s (1 reading/s each, up to 0.5s out of order)")
    deadline = time.monotonic() + duration
    with Publisher(settings) as pub:
        for reading in sim.live():
            pub.send(reading)
            if time.monotonic() >= deadline:
                break
        pub.flush()
        say(f"published {pub.sent} readings, {pub.acked} acknowledged by Kafka")
    # The last windows close once the watermark passes them: idle timeout plus one window.
    wait = settings.window_size_s + (settings.source_idle_timeout_ms + settings.watermark_delay_ms) / 1000 + 5
    say(f"waiting {wait:.0f}s for the last windows to close and reach InfluxDB")
    time.sleep(wait)
    frame = query.window_aggregates(settings, started - timedelta(minutes=1), device_prefix="demo-sensor")
    if frame.empty:
        say("no results reached InfluxDB: see 'machinewatch stack logs' and the writer log")
        return 1
    print(frame.tail(20).to_string(index=False))
    say(f"{len(frame)} window results in InfluxDB bucket 'aggregates'. "
        "Try: machinewatch query --last 15m --device demo-sensor")
    return 0
