"""MTConnect alerts end to end: the agent simulator -> the collector on the runner -> Kafka -> the device-alerts
job on Flink -> mw.alerts -> the InfluxDB writer.

Two machines go unavailable, fault, warn and come back, with the collector stopped and started again in the
middle. Expectations come from the simulator's ground truth (every observation it made), through the rule
the job implements (a change into an alert-worthy state opens, the first change out of it resolves), not
from what the pipeline produced: each alert is opened once and resolved once, with ids derived from the
observations; and every observation reaches Kafka exactly once across the restart.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from machinewatch import jobs, names, query
from machinewatch.config import Settings
from machinewatch.stack import Stack
from simulators.mtconnect_agent import MTConnectAgentSimulator
from sinks.influxdb_writer import InfluxWriter, alert_line
from tests.integration.conftest import require_free_slot
from tests.integration.test_mtconnect_kafka import config, on_runner, wait_cursor
from tests.stack_support import create_topics, read_topic
from tests.waiting import poll

pytestmark = pytest.mark.integration

CONDITION_RULES = {"WARNING": "condition_warning", "FAULT": "condition_fault"}


def expected_alerts(sim: MTConnectAgentSimulator) -> list[tuple[str, str, str, int, str]]:
    """(device, rule, state, sequence, alert id) of every transition the ground truth holds, in order."""
    active: dict[tuple[str, str], str | None] = {}
    out = []
    for o in sim.produced:
        if o.item.category == "CONDITION":
            rule = CONDITION_RULES.get(o.level)
        elif o.item.type == "AVAILABILITY":
            rule = "machine_unavailable" if o.value.upper() == "UNAVAILABLE" else None
        elif o.item.type == "EMERGENCY_STOP":
            rule = "emergency_stop" if o.value.upper() == "TRIGGERED" else None
        else:
            continue
        key = (o.device, o.item.id)
        before = active.get(key)
        obs_id = observation_id(sim, o)
        if before and before != rule:
            out.append((o.device, before, "resolved", o.sequence, alert_id(obs_id, before, "resolved")))
        if rule and rule != before:
            out.append((o.device, rule, "opened", o.sequence, alert_id(obs_id, rule, "opened")))
        active[key] = rule
    return out


def observation_id(sim: MTConnectAgentSimulator, o: Any) -> str:
    from machinewatch.record import make_event_id

    return make_event_id("mtconnect", str(o.instance_id), sim.device(o.device).uuid, o.item.id, o.sequence)


def alert_id(observation: str, rule: str, state: str) -> str:
    return hashlib.md5(f"{observation}|{rule}|{state}".encode()).hexdigest()  # noqa: S324 - an id, not a secret


def test_unavailable_and_faults_open_and_resolve_once_across_a_collector_restart(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {k: f"mw.test-{run}.{k}" for k in ("readings", "device-events", "alerts")}
    create_topics(settings, topics.values())
    job_name = f"mw-device-alerts-{run}"
    require_free_slot(settings)
    jobs.submit(settings, "device-alerts", ["--device-events-topic", topics["device-events"],
                                            "--alerts-topic", topics["alerts"], "--group-id", f"g-{run}",
                                            "--job-name", job_name])
    writer = InfluxWriter(settings, group_id=f"w-{run}", routes={topics["alerts"]: (alert_line, names.BUCKET_ALERTS)})
    writer_thread = threading.Thread(target=writer.run, daemon=True)
    writer_thread.start()
    start = datetime.now(tz=UTC)
    prefix = f"M{run}-"
    try:
        with MTConnectAgentSimulator(devices=2, buffer_size=5000, seed=11, device_prefix=prefix) as sim:
            sim.serve()
            cfg = config(sim.url, tmp_path, f"agent-{run}", topic=topics["readings"],
                         device_events_topic=topics["device-events"])
            with on_runner(cfg, settings) as src:
                sim.step(3)
                sim.machine_unavailable(1)
                sim.fault(0, "SERVO ALARM 414")
                # Repeats: a second active fault, the machine reported unavailable again: no new alert.
                sim.fault(0, "SPINDLE AMPLIFIER ALARM")
                sim.machine_unavailable(1)
                sim.step(2)
                wait_cursor(lambda: src.cursor, sim)
            # Produced while the collector is down: it must go on from its saved cursor, nothing twice.
            sim.fault(0, "SERVO OVERLOAD", native_level="WARNING")
            sim.machine_available(1)
            with on_runner(cfg, settings) as src:
                sim.step(2)
                sim.emergency_stop(0)
                sim.release_emergency_stop(0)
                sim.machine_unavailable(0)
                sim.machine_available(0)
                sim.step(2)
                wait_cursor(lambda: src.cursor, sim)
            want = expected_alerts(sim)
            produced = {observation_id(sim, o) for o in sim.produced}

        # Every observation reached Kafka exactly once (readings and device events), across the restart.
        published = [r["event_id"] for t in ("readings", "device-events") for r in read_topic(settings, topics[t])
                     if r.get("kind", "observation") == "observation"]
        assert [i for i, n in Counter(published).items() if n > 1] == [], "an observation was published twice"
        assert set(published) == produced

        repeats = [o for o in sim.produced if o.item.category == "CONDITION" and o.level == "FAULT"]
        assert len(repeats) > len([w for w in want if w[1] == "condition_fault" and w[2] == "opened"])
        rules = {rule for _, rule, _, _, _ in want}
        assert {"machine_unavailable", "condition_fault", "condition_warning", "emergency_stop"} <= rules
        assert {s for _, _, s, _, _ in want} == {"opened", "resolved"}

        def alerts() -> list[dict[str, Any]]:
            return read_topic(settings, topics["alerts"])

        got = poll(alerts, lambda a: len(a) >= len(want), 180, f"{len(want)} alerts on {topics['alerts']}", every=2)
        time.sleep(3)  # an extra (duplicate) alert would arrive now
        got = alerts()
        assert sorted((a["device_id"], a["item_type"], a["state"], a["sequence"], a["event_id"]) for a in got) == \
            sorted(want)
        # Each alert opened once and resolved once: per device and rule, opened and resolved alternate, and the
        # scenario ends with every machine recovered.
        by_rule: dict[tuple[str, str], list[str]] = {}
        for a in sorted(got, key=lambda a: a["sequence"]):
            by_rule.setdefault((a["device_id"], a["item_type"]), []).append(a["state"])
        for key, states in by_rule.items():
            assert states == ["opened", "resolved"] * (len(states) // 2) and len(states) % 2 == 0, (key, states)
        assert len({a["event_id"] for a in got}) == len(got), "an alert id repeats"
        for a in got:
            assert a["kind"] == "derived" and a["source"] == "mtconnect" and a["instance_id"]

        # The writer put every transition into InfluxDB's alerts bucket (device_alert, kind=derived).
        since, until = start - timedelta(minutes=10), datetime.now(tz=UTC) + timedelta(minutes=10)
        flux = f'''import "strings"
from(bucket: "{names.BUCKET_ALERTS}")
  |> range(start: {since.isoformat()}, stop: {until.isoformat()})
  |> filter(fn: (r) => r._measurement == "device_alert" and r.kind == "derived" and r._field == "event_id")
  |> filter(fn: (r) => strings.hasPrefix(v: r.device_id, prefix: "{prefix}"))
  |> group()'''
        rows = poll(lambda: query.run_flux(settings, flux), lambda f: len(f) >= len(want),
                    60, f"{len(want)} derived alerts in InfluxDB", every=2)
        assert sorted(rows["_value"]) == sorted(a[4] for a in want)
    finally:
        writer.stop_event.set()
        writer_thread.join(timeout=30)
        for job in jobs.running(settings, job_name):
            jobs.cancel(settings, job["jid"])
    print(json.dumps({"alerts": len(want)}))
