"""Malformed readings on the real stack: the window job dead-letters what it skips, with itself as the source,
and the valid readings beside them give exactly the windows they would give alone. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from flink_jobs.window_aggregates import JOB_SOURCE
from machinewatch import jobs, quality
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import Reading, make_event_id
from machinewatch.stack import Stack
from tests.integration.conftest import require_free_slot
from tests.stack_support import create_topics, read_topic
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def test_malformed_readings_are_dead_lettered_by_the_job_and_valid_ones_unaffected(
    stack: Stack, settings: Settings,
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {k: f"mw.test-{run}.{k}" for k in ("readings", "aggregates", "late", "alerts", "dead")}
    create_topics(settings, topics.values())
    size_ms = settings.window_size_s * 1000
    t0 = (int((datetime.now(tz=UTC) - timedelta(minutes=3)).timestamp() * 1000) // size_ms) * size_ms
    devices = [f"mf{run}-{i}" for i in range(2)]

    def reading(device: str, s: int) -> Reading:
        return Reading(source="malformed-test", device_id=device, metric="temperature", value=40.0 + s % 7,
                       unit="°C", ts=t0 + s * 1000, event_id=make_event_id("malformed-test", device, s))

    valid = [reading(d, s) for s in range(40) for d in devices]
    tail = [reading(d, s) for s in range(40, 60) for d in devices]  # moves the watermark past the windows
    bad_type = json.dumps({"source": "malformed-test", "device_id": f"mf{run}-bad", "metric": "temperature",
                           "value": "hot", "unit": "°C", "ts": t0 + 5000, "event_id": "b1"}).encode()
    no_id = json.dumps({"source": "malformed-test", "device_id": f"mf{run}-bad", "metric": "temperature",
                        "value": 1.0, "unit": "°C", "ts": t0 + 6000}).encode()
    not_json = b'{"device_id": "cut short'
    not_text = b"\xff\xfe\x00binary"

    require_free_slot(settings)
    job_name = f"mw-malformed-{run}"
    jobs.submit(settings.model_copy(update={"hop_size_s": 0}), "window-aggregates", [
        "--readings-topic", topics["readings"], "--aggregates-topic", topics["aggregates"],
        "--late-topic", topics["late"], "--alerts-topic", topics["alerts"], "--dead-letter-topic", topics["dead"],
        "--group-id", f"g-{run}", "--job-name", job_name,
    ])
    try:
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many(valid[:40])
            for i, raw in enumerate((bad_type, no_id, not_json, not_text)):
                pub.send_json(devices[i % 2], raw)  # the same partitions as the valid readings beside them
            pub.send_many(valid[40:])
            pub.send_many(tail)

        letters: list[dict[str, Any]] = []

        def four_letters() -> bool:
            letters[:] = read_topic(settings, topics["dead"])
            return len(letters) >= 4

        wait_for(four_letters, 240, "four dead letters from the window job", every=3)
        windows: list[dict[str, Any]] = []

        def closed_windows() -> bool:
            # the devices' 10 s windows (the topic also carries their roll-ups and the fleet's)
            windows[:] = [d for d in read_topic(settings, topics["aggregates"]) if d.get("device_id") in devices
                          and d["window_ms"] == d.get("slide_ms") == size_ms]
            return sum(d["window_end_ms"] <= t0 + 40_000 for d in windows) >= 4 * len(devices)

        wait_for(closed_windows, 240, "the windows of the valid readings", every=3)
    finally:
        for job in jobs.running(settings, job_name):
            jobs.cancel(settings, job["jid"])

    # Counted and visible per source: every letter names the job and where the message was.
    assert len(letters) == 4, letters
    assert {d["source"] for d in letters} == {JOB_SOURCE}
    assert all(d["kind"] == quality.KIND_DEAD_LETTER for d in letters)
    assert all(d["origin"].startswith(topics["readings"] + "/") and "@" in d["origin"] for d in letters)
    unparsed = {quality.raw_bytes(d) for d in letters if d["reason"] == "not a JSON object"}
    assert unparsed == {not_json, not_text}  # the exact bytes
    incomplete = [d["reason"] for d in letters if d["raw_encoding"] == "utf-8"]
    assert len(incomplete) == 2
    assert any("missing or not of their type: event_id;" in r for r in incomplete), incomplete
    assert any("missing or not of their type: value;" in r for r in incomplete), incomplete

    # The valid readings' windows are exactly what pandas gives for them alone.
    got = pd.DataFrame(windows).drop_duplicates(["device_id", "window_end_ms"], keep="last")
    got = got[got.window_end_ms <= t0 + 40_000].set_index(["device_id", "window_end_ms"]).sort_index()
    frame = pd.DataFrame([r.to_dict() for r in valid])
    frame["window_end_ms"] = (frame.ts // size_ms + 1) * size_ms
    expected = frame.groupby(["device_id", "window_end_ms"])["value"].agg(["mean", "count"]).sort_index()
    assert list(got.index) == list(expected.index)
    assert (got["count"] == expected["count"]).all()
    assert (got["avg_value"] - expected["mean"]).abs().max() <= 1e-9


def test_malformed_device_events_are_dead_lettered_by_the_device_alerts_job(stack: Stack, settings: Settings) -> None:
    """The device-alerts job skips what it cannot read, as the window job does: each malformed device event is a
    dead letter naming the job, with its exact bytes when it is no JSON object; the valid events beside them
    still open and resolve their alert once."""
    from flink_jobs.device_alerts import JOB_SOURCE as DEVICE_ALERTS_SOURCE
    from machinewatch.device_events import DeviceEvent

    run = uuid.uuid4().hex[:8]
    topics = {k: f"mw.test-{run}.{k}" for k in ("events", "alerts", "dead")}
    create_topics(settings, topics.values())
    device = f"md{run}"
    t0 = int((datetime.now(tz=UTC) - timedelta(minutes=2)).timestamp() * 1000)

    def availability(seq: int, value: str) -> DeviceEvent:
        return DeviceEvent(source="malformed-test", device_id=device, kind="observation", ts=t0 + seq * 1000,
                           event_id=f"{run}-{seq}", category="EVENT", item="avail", item_type="AVAILABILITY",
                           value=value, sequence=seq, instance_id="i1")

    valid = [availability(1, "AVAILABLE"), availability(2, "UNAVAILABLE"), availability(3, "AVAILABLE")]
    no_id = json.dumps({"source": "malformed-test", "device_id": device, "kind": "observation",
                        "ts": t0 + 1500, "item": "avail", "item_type": "AVAILABILITY", "value": "UNAVAILABLE"}).encode()
    bad_ts = json.dumps({"source": "malformed-test", "device_id": device, "kind": "observation", "ts": "soon",
                         "event_id": "b2", "item": "avail", "item_type": "AVAILABILITY"}).encode()
    not_json = b'{"device_id": "cut short'
    not_text = b"\xff\xfe\x00binary"

    require_free_slot(settings)
    job_name = f"mw-malformed-events-{run}"
    jobs.submit(settings, "device-alerts", [
        "--device-events-topic", topics["events"], "--alerts-topic", topics["alerts"],
        "--dead-letter-topic", topics["dead"], "--group-id", f"g-{run}", "--job-name", job_name,
    ])
    try:
        with Publisher(settings, topic=topics["events"]) as pub:
            pub.send_json(device, valid[0].to_json())
            for raw in (no_id, bad_ts, not_json, not_text):
                pub.send_json(device, raw)  # the same partition as the valid events beside them
            for event in valid[1:]:
                pub.send_json(device, event.to_json())

        letters: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []

        def all_out() -> bool:
            letters[:] = read_topic(settings, topics["dead"])
            alerts[:] = read_topic(settings, topics["alerts"])
            return len(letters) >= 4 and len(alerts) >= 2

        wait_for(all_out, 240, "four dead letters and two alert transitions from the device-alerts job", every=3)
    finally:
        for job in jobs.running(settings, job_name):
            jobs.cancel(settings, job["jid"])

    assert len(letters) == 4, letters
    assert {d["source"] for d in letters} == {DEVICE_ALERTS_SOURCE}
    assert all(d["origin"].startswith(topics["events"] + "/") and "@" in d["origin"] for d in letters)
    unparsed = {quality.raw_bytes(d) for d in letters if d["reason"] == "not a JSON object"}
    assert unparsed == {not_json, not_text}  # the exact bytes
    incomplete = [d["reason"] for d in letters if d["raw_encoding"] == "utf-8"]
    assert any("missing or not of their type: event_id;" in r for r in incomplete), incomplete
    assert any("missing or not of their type: ts;" in r for r in incomplete), incomplete
    assert [(a["device_id"], a["item_type"], a["state"]) for a in alerts] == [
        (device, "machine_unavailable", "opened"), (device, "machine_unavailable", "resolved")]
