"""Sustained-condition rules from TOML in the real job: a below-threshold rule with per-device-group
overrides next to the shipped overheat rule, in one job instance, on a synthetic drop series.

The job's transitions must equal the Python lifecycle run on ALL one-second buckets with the
parameters each device resolves to (so the SQL prefilter's per-device CASE expressions, the LIKE
translation of device globs and the region match are checked against the Python ones), and a few
facts are checked by hand from the scenario alone.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from flink_jobs.overheat_logic import DeviceState, on_bucket
from flink_jobs.sustained_rules import load_sustained_rules
from machinewatch import jobs
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import Reading, make_event_id
from machinewatch.stack import Stack
from tests.integration.conftest import require_free_slot
from tests.stack_support import create_topics

pytestmark = pytest.mark.integration

SECONDS = 200
TRAILER = 40  # every device keeps sending, so event time passes every transition of the scenario

RULES = """
[[rule]]
name = "overheat"
metric = "temperature"

[[rule]]
name = "coolant_low"
metric = "coolant_temp"
direction = "below"
threshold = 20.0
hysteresis = 2.0
duration_s = 10
clear_s = 5
escalate_factor = 2.0
max_gap_s = 3
silence_s = 20

  [[rule.override]]
  device = "{run}_pump_b*"
  threshold = 15.0

  [[rule.override]]
  region = "south"
  duration_s = 20
"""


def coolant(device: str, sec: int) -> float:
    """The drop series: each pump normally at 25 °C; the '_' in the override glob is literal."""
    if device == "pump_a1" and 20 <= sec < 60:
        return 12.0  # below 20 for 40 s: pending 21, opened 30, escalated 40, resolved 65 (clear 5 s above 22)
    if device == "pump_b1" and 20 <= sec < 60:
        return 17.0  # below the base 20 but not below its override's 15: no alert
    if device == "pump_b1" and 80 <= sec < 100:
        return 10.0  # below 15 for 20 s: opened 90, escalated 100, resolved 105
    if device == "pumpXb1" and 20 <= sec < 60:
        return 18.0  # not matched by 'pump_b*' (a LIKE '_' would match the X): the base 20 applies, it opens
    if device == "pump_s1" and 20 <= sec < 60:
        return 12.0  # region south: duration 20, opened at 40, not 30
    return 25.0


def readings(run: str, t0: int, seconds: int) -> list[Reading]:
    rng = random.Random(5)
    out = []
    for sec in range(seconds):
        for name, region in (("pump_a1", "north"), ("pump_b1", "north"), ("pumpXb1", "north"), ("pump_s1", "south")):
            device = f"{run}_{name}"
            ts = t0 + sec * 1000 + rng.randrange(900)
            out.append(Reading(source="rules-test", device_id=device, metric="coolant_temp",
                               value=coolant(name, sec), unit="°C", ts=ts, region=region, site="plant",
                               event_id=make_event_id("rules-test", device, "c", sec)))
        oven = f"{run}_oven1"
        ts = t0 + sec * 1000 + rng.randrange(900)
        out.append(Reading(source="rules-test", device_id=oven, metric="temperature",
                           value=90.0 if 10 <= sec < 90 else 50.0, unit="°C", ts=ts, region="north", site="plant",
                           event_id=make_event_id("rules-test", oven, "t", sec)))
    return out


def reference(settings: Settings, sent: list[Reading]) -> dict[tuple[str, str], dict[str, Any]]:
    """(alert id, state) -> transition: the Python lifecycle on every bucket, per rule and device."""
    buckets: dict[tuple[str, str], dict[int, list[Reading]]] = defaultdict(lambda: defaultdict(list))
    for r in sent:
        buckets[(r.metric, r.device_id)][r.ts // 1000 * 1000].append(r)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for rule in load_sustained_rules(settings):
        for (metric, device), by_start in sorted(buckets.items()):
            if metric != rule.rule.metric:
                continue
            st = DeviceState()
            for start, rs in sorted(by_start.items()):
                values = [r.value for r in rs]
                st.region, st.site = rs[0].region, rs[0].site  # as the job keeps them
                params = rule.params(device, rs[0].region, rs[0].site)
                for t in on_bucket(st, params, device, start, start + 1000, min(values), max(values), sum(values),
                                   len(values)):
                    out[(t.alert_id, t.state)] = t.to_dict()
    return out


def test_a_below_rule_with_overrides_fires_on_a_drop_series(stack: Stack, settings: Settings,
                                                            tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    rules_file = tmp_path / "sustained.toml"
    rules_file.write_text(RULES.replace("{run}", run))
    job_settings = settings.model_copy(update={"sustained_rules": rules_file})
    topics = {"readings": f"mw.test-{run}.readings", "alerts": f"mw.test-{run}.alerts"}
    create_topics(settings, topics.values())
    t0 = int((datetime.now(tz=UTC) - timedelta(seconds=SECONDS + TRAILER + 60)).timestamp()) * 1000
    sent = readings(run, t0, SECONDS + TRAILER)
    want = reference(job_settings, [r for r in sent if r.ts < t0 + SECONDS * 1000])
    by_hand = {(d, s, (ts - t0) // 1000) for d, s, ts in
               ((w["device_id"].removeprefix(f"{run}_"), w["state"], w["ts"]) for w in want.values())}
    # The scenario by hand: what the reference must give, so a wrong reference cannot pass the job.
    assert {("pump_a1", "pending", 21), ("pump_a1", "opened", 30), ("pump_a1", "escalated", 40),
            ("pump_a1", "resolved", 65), ("pump_b1", "opened", 90), ("pump_b1", "escalated", 100),
            ("pump_b1", "resolved", 105), ("pumpXb1", "opened", 30), ("pump_s1", "opened", 40),
            ("oven1", "opened", 70), ("oven1", "resolved", 120)} <= by_hand, sorted(by_hand)
    assert not any(d == "pump_b1" and t < 80 for d, _s, t in by_hand), "pump_b1's override (15 °C) keeps it quiet"

    job_name = f"mw-rules-{run}"
    require_free_slot(settings)
    jobs.submit(job_settings, "sustained-overheat", [
        "--readings-topic", topics["readings"], "--alerts-topic", topics["alerts"],
        "--group-id", f"g-{run}", "--job-name", job_name,
    ])
    got: list[dict[str, Any]] = []
    consumer = KafkaConsumer(topics["alerts"], **settings.kafka_client_config(), auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)
    try:
        with Publisher(settings, topic=topics["readings"]) as pub:
            pub.send_many(sent)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not set(want) <= {(a["alert_id"], a["state"]) for a in got}:
            got += [json.loads(m.value) for m in consumer]
        time.sleep(3)
        got += [json.loads(m.value) for m in consumer]  # anything more would show now
    finally:
        consumer.close()
        for job in jobs.running(settings, job_name):
            jobs.cancel(settings, job["jid"])

    seen = {(a["alert_id"], a["state"]): a for a in got}
    assert set(seen) == set(want), (f"missing {sorted((want[k]['device_id'], k[1]) for k in set(want) - set(seen))}, "
                                    f"unexpected {sorted((seen[k]['device_id'], k[1]) for k in set(seen) - set(want))}")
    for key, doc in seen.items():
        assert doc == json.loads(json.dumps(want[key])), key
    low = [a for a in got if a["kind"] == "sustained_coolant_low"]
    assert low and all(a["direction"] == "below" and a["metric"] == "coolant_temp" for a in low)
    opened = next(a for a in low if a["device_id"] == f"{run}_pump_a1" and a["state"] == "opened")
    assert opened["peak"] == 12.0 and opened["threshold"] == 20.0, "a below rule's peak is the lowest value"
    assert {a["kind"] for a in got} == {"sustained_coolant_low", "sustained_overheat"}
