"""Late readings on the real stack: within the allowed lateness they update their window; later
ones are counted as late events in InfluxDB and leave the window as it was. Nothing is dropped silently.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from machinewatch import jobs, names, query
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import Reading, make_event_id
from machinewatch.stack import Stack
from sinks.influxdb_writer import InfluxWriter, late_line, window_line
from tests.integration.conftest import require_free_slot
from tests.stack_support import create_topics
from tests.waiting import poll, wait_for

pytestmark = pytest.mark.integration

LATENESS_S = 20


def reading(device: str, ts: int, value: float, tag: str = "") -> Reading:
    return Reading(source="late-test", device_id=device, metric="temperature", value=value, unit="°C", ts=ts,
                   site="late", event_id=make_event_id("late-test", device, ts, tag))


def test_allowed_lateness_updates_windows_and_later_readings_are_counted(stack: Stack, settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {k: f"mw.test-{run}.{k}" for k in ("readings", "aggregates", "late", "alerts")}
    create_topics(settings, topics.values())
    job_settings = settings.model_copy(update={"allowed_lateness_s": LATENESS_S, "hop_size_s": 0})
    size_ms = settings.window_size_s * 1000
    t0 = (int((datetime.now(tz=UTC) - timedelta(minutes=3)).timestamp() * 1000) // size_ms) * size_ms
    devices = [f"lt{run}-{i}" for i in range(3)]
    main = [reading(d, t0 + s * 1000, 50.0 + i + s / 10) for s in range(60) for i, d in enumerate(devices)]
    allowed = reading(devices[0], t0 + 35_500, 99.0, "late-allowed")   # its window [30 s, 40 s) may still change
    too_late = reading(devices[1], t0 + 12_500, -40.0, "late-dropped")  # [10 s, 20 s) closed for good
    tail = [reading(d, t0 + s * 1000, 50.0) for s in range(60, 75) for d in devices]

    require_free_slot(settings)
    job_name = f"mw-late-{run}"
    jobs.submit(job_settings, "window-aggregates", [
        "--readings-topic", topics["readings"], "--aggregates-topic", topics["aggregates"],
        "--late-topic", topics["late"], "--alerts-topic", topics["alerts"], "--group-id", f"g-{run}",
        "--job-name", job_name,
    ])
    writer = InfluxWriter(settings, group_id=f"w-{run}", routes={
        topics["aggregates"]: (window_line, names.BUCKET_AGGREGATES),
        topics["late"]: (late_line, names.BUCKET_AGGREGATES),
    })
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    since = datetime.fromtimestamp(t0 / 1000, tz=UTC) - timedelta(minutes=1)

    def windows() -> pd.DataFrame:
        frame = query.window_aggregates(settings, since, device_prefix=f"lt{run}", window=f"{settings.window_size_s}s")
        if not frame.empty:
            frame["end_s"] = frame["_time"].map(lambda t: int(t.timestamp() * 1000 - t0) // 1000)
        return frame

    def wait_windows(pred: Callable[[pd.DataFrame], bool], what: str) -> pd.DataFrame:
        # Each poll may time out or fail once (a busy InfluxDB); only the overall deadline fails the test.
        seen: list[pd.DataFrame] = []

        def check() -> bool:
            seen[:] = [windows()]
            return not seen[0].empty and pred(seen[0])

        wait_for(check, 180, what, every=2)
        return seen[0]

    try:
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many(main)
        # The window [40 s, 50 s) has fired: the watermark is past 50 s, the windows before it closed.
        wait_windows(lambda f: (f.end_s >= 50).sum() >= len(devices), "windows up to 50 s")
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many([allowed, too_late, *tail])
        frame = wait_windows(lambda f: (f.end_s >= 70).sum() >= len(devices) and
                         int(f[(f.device_id == devices[0]) & (f.end_s == 40)]["count"].iloc[0]) == 11,
                         "the late-but-allowed reading in its window")
    finally:
        for job in jobs.running(settings, job_name):
            jobs.cancel(settings, job["jid"])

    # Expectation: pandas over every reading except the one that came too late.
    counted = pd.DataFrame([r.to_dict() for r in [*main, allowed, *tail]])
    counted["end_s"] = ((counted.ts - t0) // size_ms + 1) * settings.window_size_s
    expected = counted.groupby(["device_id", "end_s"])["value"].agg(avg="mean", count="count").reset_index()
    merged = expected.merge(frame, on=["device_id", "end_s"], suffixes=("", "_got"))
    closed = merged[merged.end_s <= 70]
    assert len(closed) == len(devices) * 7
    assert (closed["count"] == closed["count_got"]).all()
    assert (closed["avg"] - closed["avg_got"]).abs().max() <= 1e-9
    dropped_window = frame[(frame.device_id == devices[1]) & (frame.end_s == 20)]
    assert int(dropped_window["count"].iloc[0]) == 10 and float(dropped_window["min"].iloc[0]) > 0

    flux = f'''
from(bucket: "{names.BUCKET_AGGREGATES}")
  |> range(start: {since.isoformat()})
  |> filter(fn: (r) => r._measurement == "{names.MEASUREMENT_LATE}" and r._field == "event_id")
  |> filter(fn: (r) => r.device_id =~ /^lt{run}/)
  |> group()'''
    late = poll(lambda: query.run_flux(settings, flux), lambda frame: not frame.empty, 60, "the late event", every=2)
    writer.stop_event.set()
    thread.join(timeout=30)
    assert list(late["_value"]) == [too_late.event_id], "exactly the reading beyond the allowed lateness"
    assert list(late["source"]) == ["late-test"]
