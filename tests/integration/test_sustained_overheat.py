"""Sustained-overheat alert lifecycle on the real stack, against expectations from the scenario alone.

Readings (out of order within the watermark bound) go to an isolated job instance; the expected
transitions are derived from the scripted episodes (start, length, rules), not from the data.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer

from machinewatch import jobs, names, query
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.stack import Stack
from simulators.temperature import TemperatureSimulator
from sinks.influxdb_writer import InfluxWriter, alert_line
from tests.integration.conftest import require_free_slot
from tests.stack_support import create_topics
from tests.waiting import poll

pytestmark = pytest.mark.integration

STEPS = 400  # seconds of event time, one reading per device per second


def expected(s: Settings, t0: int) -> set[tuple[int, str, int]]:
    """(device index, state, event time) implied by the scenario and the rules."""
    d, clear, esc = s.overheat_duration_s, s.overheat_clear_s, s.overheat_escalate_factor
    out = {
        # the first hot one-second bucket makes an alert pending; a run that breaks first is cancelled
        (1, "pending", 21), (2, "pending", 31), (2, "cancelled", 76), (3, "pending", 101),
        (4, "pending", 51), (4, "cancelled", 101), (4, "pending", 106),
        (1, "opened", 20 + d), (1, "escalated", 20 + int(esc * d)), (1, "resolved", 170 + clear),
        # device 3 is hot from 100 s and goes quiet at 200 s: silent, not resolved
        (3, "opened", 100 + d), (3, "silent", 200 + s.overheat_silence_s),
        # device 4 dips below the threshold at 100..105 s: the run restarts at 105 s
        (4, "opened", 105 + d), (4, "escalated", 105 + int(esc * d)), (4, "resolved", 200 + clear),
    }
    return {(dev, state, t0 + sec * 1000) for dev, state, sec in out}


def test_overheat_lifecycle_matches_scenario(stack: Stack, settings: Settings) -> None:
    assert settings.overheat_threshold_c == 80.0 and settings.overheat_duration_s == 60, "scenario assumes defaults"
    run = uuid.uuid4().hex[:8]
    topics = {"readings": f"mw.test-{run}.readings", "alerts": f"mw.test-{run}.alerts"}
    create_topics(settings, topics.values())

    start = (datetime.now(tz=UTC) - timedelta(seconds=STEPS + 30)).replace(microsecond=0)
    t0 = int(start.timestamp() * 1000)
    sim = TemperatureSimulator(
        devices=6, seed=11, device_prefix=f"oh{run}", base_c=55.0, step_c=0.3, max_disorder_ms=1500,
        overheats=[
            (1, 20_000, 150_000, 40.0),   # 150 s hot: opens, escalates, resolves
            (2, 30_000, 45_000, 40.0),    # 45 s hot: shorter than the duration, no alert
            (3, 100_000, 300_000, 40.0),  # hot, then silent (readings cut below)
            (4, 50_000, 50_000, 40.0),    # hot 50..100 s
            (4, 105_000, 95_000, 40.0),   # hot again 105..200 s
        ],
    )
    silent_from = t0 + 200_000
    everything = [r for r in sim.readings(start, STEPS + 30)
                  if not (r.device_id == sim.device_id(3) and r.ts >= silent_from)]
    readings = [r for r in everything if r.ts < t0 + STEPS * 1000]
    # Silence is noticed in event time: the other devices must keep the clock moving after the
    # silent device's last bucket was seen. They send 30 s more once the other transitions are out.
    trailer = [r for r in everything if r.ts >= t0 + STEPS * 1000]

    job_name = f"mw-overheat-{run}"
    require_free_slot(settings)
    jobs.submit(settings, "sustained-overheat", [
        "--readings-topic", topics["readings"], "--alerts-topic", topics["alerts"],
        "--group-id", f"g-{run}", "--job-name", job_name,
    ])
    writer = InfluxWriter(settings, group_id=f"w-{run}",
                          routes={topics["alerts"]: (alert_line, names.BUCKET_ALERTS)})
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    want = expected(settings, t0)
    got: list[dict[str, object]] = []
    consumer = KafkaConsumer(topics["alerts"], bootstrap_servers=settings.kafka_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many(readings)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(got) < len(want) - 1:
            got += [json.loads(m.value) for m in consumer]
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many(trailer)
        while time.monotonic() < deadline and len(got) < len(want):
            got += [json.loads(m.value) for m in consumer]
        time.sleep(3)
        got += [json.loads(m.value) for m in consumer]  # a duplicate would show up now
    finally:
        consumer.close()
        for job in jobs.running(settings, job_name):
            jobs.cancel(settings, job["jid"])

    index = {sim.device_id(i): i for i in range(6)}
    seen = {(index[str(a["device_id"])], str(a["state"]), int(a["ts"])) for a in got}  # type: ignore[call-overload]
    assert seen == want, f"missing {sorted(want - seen)}, unexpected {sorted(seen - want)}"
    assert len(got) == len(want), "each transition exactly once"
    ids = {}
    for a in got:
        ids.setdefault(a["device_id"], set()).add(a["alert_id"])
        assert a["kind"] == "sustained_overheat"
        assert float(a["peak"]) > 80.0  # type: ignore[arg-type]
    assert len(ids[sim.device_id(1)]) == 1, "one alert id per episode"
    assert len(ids[sim.device_id(4)]) == 2, "a cancelled run and the episode that fired are two alerts"
    escalated = [a for a in got if a["state"] == "escalated"]
    assert all(a["severity"] == "critical" for a in escalated)

    # The same transitions reach InfluxDB's alerts bucket; a second writer (a replay) adds nothing.
    flux = f'''
from(bucket: "{names.BUCKET_ALERTS}")
  |> range(start: {(start - timedelta(minutes=5)).isoformat()}, stop: {datetime.now(tz=UTC).isoformat()})
  |> filter(fn: (r) => r._measurement == "device_alert" and r._field == "alert_id")
  |> filter(fn: (r) => r.device_id =~ /^oh{run}/)
  |> group()'''
    rows = poll(lambda: query.run_flux(settings, flux), lambda frame: len(frame) >= len(want), 60,
                f"{len(want)} alert transitions in InfluxDB", every=2)
    writer.stop_event.set()
    thread.join(timeout=30)
    assert {(index[d], st, int(t.timestamp() * 1000)) for d, st, t in zip(rows.device_id, rows.state, rows._time,
                                                                           strict=True)} == want
    replay = InfluxWriter(settings, group_id=f"replay-{run}",
                          routes={topics["alerts"]: (alert_line, names.BUCKET_ALERTS)})
    replay.run(idle_exit_s=5)
    after_replay = poll(lambda: query.run_flux(settings, flux), lambda _frame: True, 60, "the alerts after a replay")
    assert len(after_replay) == len(want)
