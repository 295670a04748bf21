"""The MTConnect connector against the in-process agent simulator, with a recording sink instead of Kafka.

Expectations come from the simulator's ground truth (every observation it ever produced), not from
the connector's own bookkeeping.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ingest.mtconnect.config import ConfigError, load_config, settings_from_dict
from ingest.mtconnect.connector import AgentFollower
from ingest.mtconnect.state import Cursor, load_cursor, save_cursor
from machinewatch import names, quality
from machinewatch.device_events import DeviceEvent
from machinewatch.kafka_io import PublishError
from machinewatch.record import Reading, RecordError, make_event_id
from simulators.mtconnect_agent import MTConnectAgentSimulator

SAMPLE_CONF = Path(__file__).resolve().parents[2] / "ingest" / "mtconnect" / "sample.conf"


class RecordingSink:
    """Stands in for Publisher: keeps (topic, key, record dict) in send order, dead letters and notes."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self.dead: list[tuple[str, str]] = []
        self.letters: list[dict[str, Any]] = []  # dead letters and notes as the shared envelope writes them
        self.fail_flushes = 0
        self._lock = threading.Lock()

    def send(self, reading: Reading) -> None:
        with self._lock:
            self.records.append((names.TOPIC_READINGS, reading.device_id, json.loads(reading.to_json())))

    def send_json(self, key: str, value: bytes, topic: str | None = None) -> None:
        with self._lock:
            self.records.append((topic or names.TOPIC_READINGS, key, json.loads(value)))

    def send_event(self, event: DeviceEvent) -> None:
        self.send_json(event.device_id, event.to_json(), names.TOPIC_DEVICE_EVENTS)

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "",
                    size: int | None = None) -> None:
        with self._lock:
            self.dead.append((reason, raw if isinstance(raw, str) else raw.decode(errors="replace")))
            self.letters.append(quality.letter(source, raw, reason, origin))

    def note(self, source: str, kind: str, raw: bytes | str, reason: str, origin: str = "",
             note_id: str = "") -> None:
        with self._lock:
            self.letters.append(quality.letter(source, raw, reason, origin, kind=kind, note_id=note_id))

    def notes(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.letters if d["kind"] != quality.KIND_DEAD_LETTER and kind in (None, d["kind"])]

    def flush(self, timeout: float | None = None) -> None:
        if self.fail_flushes:
            self.fail_flushes -= 1
            msg = "1 of 10 records were not acknowledged: [simulated]"
            raise PublishError(msg)

    def observations(self) -> list[dict[str, Any]]:
        """Records that stand for one agent observation (readings and observation device events)."""
        return [r for t, _, r in self.records if t == names.TOPIC_READINGS or r.get("kind") == "observation"]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for _, _, r in self.records if r.get("kind") == kind]


def alert_facts(records: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The device events the device-alerts job opens an alert for (what the collector itself derived before
    issue 16), each with the job's ``rule``; the job's alerts are checked end to end in
    tests/integration/test_mtconnect_alerts.py."""
    found = []
    for topic, _, r in records:
        if topic != names.TOPIC_DEVICE_EVENTS or r.get("kind") != "observation":
            continue
        value = str(r.get("value") or "").upper()
        rule = ("machine_unavailable" if r.get("item_type") == "AVAILABILITY" and value == "UNAVAILABLE" else
                "emergency_stop" if r.get("item_type") == "EMERGENCY_STOP" and value == "TRIGGERED" else
                "condition_fault" if r.get("category") == "CONDITION" and r.get("state") == "FAULT" else "")
        if rule:
            found.append({**r, "rule": rule})
    return found


def config(url: str, tmp_path: Path, **extra: Any) -> Any:
    base = {"agent_url": url, "mode": "stream", "interval_ms": 10, "heartbeat_ms": 200, "count": 40,
            "start": "buffer", "state_path": str(tmp_path / "state.json"), "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2, "agent_id": "test-agent"}
    return settings_from_dict({**base, **extra})


@contextmanager
def running(cfg: Any, sink: Any) -> Iterator[AgentFollower]:
    """The connector following its agent in a thread until the block ends (also used with a real Publisher)."""
    src = AgentFollower(cfg, sink)
    src.setup()
    thread = threading.Thread(target=src.run, daemon=True)
    thread.start()
    try:
        yield src
    finally:
        src.stop()
        thread.join(15)
        assert not thread.is_alive(), "connector did not stop"


def wait_caught_up(src: AgentFollower, sim: MTConnectAgentSimulator, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    want = (str(sim.instance_id), sim.next_sequence)
    while time.monotonic() < deadline:
        if src.cursor and (src.cursor.instance_id, src.cursor.next_sequence) == want:
            return
        time.sleep(0.02)
    pytest.fail(f"connector at {src.cursor}, agent at {want}")


def sim_event_id(sim: MTConnectAgentSimulator, obs: Any, *rule: str) -> str:
    """The event id of one simulated observation: (instanceId, device uuid, data item id, sequence)."""
    return make_event_id("mtconnect", str(obs.instance_id), sim.device(obs.device).uuid, obs.item.id, obs.sequence,
                         *rule)


def id_index(sim: MTConnectAgentSimulator) -> dict[str, tuple[str, int]]:
    """event id -> (instanceId, sequence) for every observation the agent produced."""
    return {sim_event_id(sim, o): (str(o.instance_id), o.sequence) for o in sim.produced}


def check_exactly_once(sim: MTConnectAgentSimulator, sink: RecordingSink) -> None:
    index = id_index(sim)
    got = [index[r["event_id"]] for r in sink.observations()]
    assert len(got) == len(set(got)), "an observation was published twice"
    lost: set[tuple[str, int]] = set()
    for gap in sink.of_kind("gap"):
        lost |= {(gap["instance_id"], s) for s in range(gap["sequence"], gap["sequence"] + gap["lost_count"])}
    # Every produced observation is either published or inside a gap record, never both.
    assert set(got) | lost == set(index.values())
    assert not set(got) & lost
    # Per device, in sequence order within each agent instance, instances in the order they ran.
    instances = list(dict.fromkeys(inst for inst, _ in sim.produced_keys()))
    by_device: dict[str, list[tuple[int, int]]] = {}
    for rec in sink.observations():
        inst, seq = index[rec["event_id"]]
        by_device.setdefault(rec["device_id"], []).append((instances.index(inst), seq))
    for device, keys in by_device.items():
        assert keys == sorted(keys), f"{device} out of order"


@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_every_observation_once_in_order_across_restarts_and_overrun(tmp_path: Path, mode: str) -> None:
    with MTConnectAgentSimulator(devices=2, buffer_size=60, seed=7) as sim:
        sim.serve()
        sink = RecordingSink()
        cfg = config(sim.url, tmp_path, mode=mode)
        with running(cfg, sink) as src:
            wait_caught_up(src, sim)
            sim.step(4)
            wait_caught_up(src, sim)
        # Connector restart: the agent keeps producing while it is down (less than the buffer).
        sim.step(3)
        with running(cfg, sink) as src:
            wait_caught_up(src, sim)
            lost_before = src.metrics.lost
            before = sim.next_sequence
            sim.overrun(extra=9)
            # The buffer keeps the newest 60: everything older than that since 'before' is gone unread.
            expected_lost = (sim.next_sequence - before) - 60
            wait_caught_up(src, sim)
            sim.restart()
            wait_caught_up(src, sim)
            sim.step(3)
            wait_caught_up(src, sim)
            assert src.metrics.agent_restarts == 1
        gaps = sink.of_kind("gap")
        assert len(gaps) == 1 and lost_before == 0
        assert expected_lost >= 9
        assert gaps[0]["sequence"] == before and gaps[0]["lost_count"] == expected_lost
        restarted = sink.of_kind("agent_restarted")
        assert [r["instance_id"] for r in restarted] == [str(sim.instance_id)]
        check_exactly_once(sim, sink)


def test_crash_between_ack_and_persist_rereads_with_identical_ids(tmp_path: Path) -> None:
    with MTConnectAgentSimulator(devices=1, buffer_size=500, seed=3) as sim:
        sim.serve()
        sink = RecordingSink()
        cfg = config(sim.url, tmp_path, mode="poll")
        with running(cfg, sink) as src:
            sim.step(5)
            wait_caught_up(src, sim)
        published = len(sink.observations())
        # A crash after Kafka acknowledged but before the cursor was written leaves the older cursor.
        save_cursor(cfg.state_path, Cursor(str(sim.instance_id), sim.next_sequence - 12))
        with running(cfg, sink) as src:
            wait_caught_up(src, sim)
        ids = [r["event_id"] for r in sink.observations()]
        assert len(ids) == published + 12
        assert set(ids[published:]) <= set(ids[:published]), "re-read records must carry the same event ids"
        assert not sink.of_kind("gap")


def test_first_run_with_current_baseline(tmp_path: Path) -> None:
    with MTConnectAgentSimulator(devices=2, buffer_size=500, seed=4) as sim:
        sim.step(10)
        sim.serve()
        latest = {o.item.id: o.sequence for o in sim.produced}
        baseline_next = sim.next_sequence
        sink = RecordingSink()
        with running(config(sim.url, tmp_path, start="current"), sink) as src:
            wait_caught_up(src, sim)
            sim.step(2)
            wait_caught_up(src, sim)
        index = id_index(sim)
        got = {index[r["event_id"]][1] for r in sink.observations()}
        expected = set(latest.values()) | set(range(baseline_next, sim.next_sequence))
        assert got == expected


def test_alert_worthy_device_events_match_the_ground_truth(tmp_path: Path) -> None:
    with MTConnectAgentSimulator(devices=2, buffer_size=2000, seed=9) as sim:
        sim.serve()
        sink = RecordingSink()
        with running(config(sim.url, tmp_path), sink) as src:
            sim.step(3)
            sim.emergency_stop(0)
            sim.overheat(1, rounds=25, extra_c=70)
            sim.step(25)
            sim.machine_unavailable(1)
            sim.fault(0, "SERVO ALARM 414")
            wait_caught_up(src, sim)
        expected = set()
        expected_ids = set()
        for o in sim.produced:
            rule = ""
            if o.item.type == "AVAILABILITY" and o.value == "UNAVAILABLE":
                rule = "machine_unavailable"
            elif o.item.type == "EMERGENCY_STOP" and o.value == "TRIGGERED":
                rule = "emergency_stop"
            elif o.level == "FAULT":
                rule = "condition_fault"
            if rule:
                expected.add((o.device, o.sequence, rule))
                expected_ids.add(sim_event_id(sim, o))
        # The collector no longer derives alerts (issue 16): it publishes the device events the device-alerts
        # job derives them from, one per alert-worthy observation, with the observation's own id.
        alerts = alert_facts(sink.records)
        assert {(a["device_id"], a["sequence"], a["rule"]) for a in alerts} == expected
        assert {a["event_id"] for a in alerts} == expected_ids
        assert {"emergency_stop", "condition_fault", "machine_unavailable"} <= {e[2] for e in expected}
        assert not [r for t, _, r in sink.records if t == names.TOPIC_ALERTS]
        for alert in alerts:
            DeviceEvent.from_dict({k: v for k, v in alert.items() if k != "rule"})


def test_records_carry_units_values_and_condition_states(tmp_path: Path) -> None:
    with MTConnectAgentSimulator(devices=1, buffer_size=2000, seed=1, sloppy=True) as sim:
        sim.serve()
        sink = RecordingSink()
        with running(config(sim.url, tmp_path, mode="poll"), sink) as src:
            sim.overheat(0, rounds=20, extra_c=70)
            sim.step(20)
            wait_caught_up(src, sim)
        by_id = {sim_event_id(sim, o): o for o in sim.produced}
        units = {"CELSIUS": "°C", "REVOLUTION/MINUTE": "rpm", "PERCENT": "%", "MILLIMETER": "mm"}
        for _, _, rec in sink.records:
            if rec.get("kind") in (None,):  # a reading
                obs = by_id[rec["event_id"]]
                assert rec["value"] == float(obs.value)
                assert rec["unit"] == units[obs.item.units]
                assert rec["ts"] == obs.ts
            elif rec["kind"] == "observation":
                obs = by_id[rec["event_id"]]
                assert rec["category"] == obs.item.category
                assert rec["value"] == obs.value
                assert (rec["state"] or "") == obs.level
        assert not sink.dead


def test_silent_agent_makes_the_connector_reconnect(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "ingest.mtconnect.connector")
    with MTConnectAgentSimulator(devices=1, buffer_size=500, seed=2) as sim:
        sim.serve()
        sink = RecordingSink()
        with running(config(sim.url, tmp_path, silence_timeout_ms=400), sink) as src:
            wait_caught_up(src, sim)
            sim.silence(1.2)
            sim.step(3)
            time.sleep(0.6)
            assert src.metrics.reconnects >= 1
            wait_caught_up(src, sim)
        assert "silent for 0.4s" in caplog.text
        check_exactly_once(sim, sink)


@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_malicious_documents_are_refused_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.WARNING, "ingest.mtconnect.connector")
    laughs = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
              b"<MTConnectStreams><Streams>&b;</Streams></MTConnectStreams>")
    xxe = b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><MTConnectStreams>&x;</MTConnectStreams>'
    oversized = b"<MTConnectStreams>" + b"<!-- padding -->" * 20_000 + b"</MTConnectStreams>"
    with MTConnectAgentSimulator(devices=1, buffer_size=2000, seed=6) as sim:
        sim.serve()
        sink = RecordingSink()
        with running(config(sim.url, tmp_path, mode=mode, max_body_bytes=100_000), sink) as src:
            wait_caught_up(src, sim)
            for body in (laughs, xxe, oversized):
                if mode == "poll":
                    sim.inject(body, "/sample")
                else:
                    framing = (f"--mw-mtconnect-sim-boundary\r\nContent-type: text/xml\r\n"
                               f"Content-length: {len(body)}\r\n\r\n")
                    sim.inject_stream_bytes(framing.encode() + body + b"\r\n")
                sim.step(2)
                deadline = time.monotonic() + 10
                while src.metrics.refused_documents < 1 + [laughs, xxe, oversized].index(body):
                    assert time.monotonic() < deadline, "document was not refused"
                    time.sleep(0.02)
                wait_caught_up(src, sim)
            if mode == "stream":
                sim.inject_stream_bytes(b"--not-the-boundary\r\n\r\n<junk/>")
                sim.step(2)
                time.sleep(0.3)
                wait_caught_up(src, sim)
                assert "broken multipart stream" in caplog.text
        reasons = [reason for reason, _ in sink.dead]
        assert any("entity expansion" in r for r in reasons)
        assert any("XXE" in r for r in reasons)
        assert any("cap" in r for r in reasons)
        assert "refused a document from MTConnect agent" in caplog.text
        check_exactly_once(sim, sink)


def test_publish_failure_keeps_the_cursor_and_rereads(tmp_path: Path) -> None:
    with MTConnectAgentSimulator(devices=1, buffer_size=500, seed=8) as sim:
        sim.serve()
        sink = RecordingSink()
        cfg = config(sim.url, tmp_path, mode="poll")
        with running(cfg, sink) as src:
            wait_caught_up(src, sim)
            saved = load_cursor(cfg.state_path)
            sink.fail_flushes = 1
            sim.step(3)
            time.sleep(0.03)
            wait_caught_up(src, sim)
        assert saved is not None and saved.instance_id == str(sim.instance_id)
        index = id_index(sim)
        assert {index[r["event_id"]] for r in sink.observations()} == set(index.values())


def test_sample_config_loads_and_bad_keys_are_named(tmp_path: Path) -> None:
    cfg = load_config(SAMPLE_CONF)
    assert cfg.agent_url == "http://127.0.0.1:5000" and cfg.state_path.is_absolute()
    bad = tmp_path / "bad.conf"
    bad.write_text('[mtconnect]\nagent_url = "ftp://x"\nstate_path = "s.json"\nmode = "push"\ncolour = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    text = str(info.value)
    assert "mtconnect.agent_url = 'ftp://x'" in text and "mtconnect.mode = 'push'" in text
    assert "mtconnect.colour" in text
    relative = tmp_path / "rel.conf"
    relative.write_text('[mtconnect]\nagent_url = "http://a:5000/"\nstate_path = "st/x.json"\n')
    rel = load_config(relative)
    assert rel.state_path == tmp_path / "st" / "x.json" and rel.agent_id == "mtconnect-agent:a:5000"


def test_device_event_round_trip_and_validation() -> None:
    event = DeviceEvent(source="mtconnect", device_id="M1", kind="gap", ts=1_700_000_000_000, event_id="e1",
                        sequence=5, lost_count=3, instance_id="9", detail="sequences 5..7 lost")
    assert DeviceEvent.from_json(event.to_json()) == event
    with pytest.raises(RecordError, match="lost_count"):
        DeviceEvent(source="mtconnect", device_id="M1", kind="gap", ts=1_700_000_000_000, event_id="e")
    with pytest.raises(RecordError, match="kind"):
        DeviceEvent(source="mtconnect", device_id="M1", kind="other", ts=1_700_000_000_000, event_id="e")
    with pytest.raises(RecordError, match="ts"):
        DeviceEvent(source="mtconnect", device_id="M1", kind="observation", ts=1_700_000_000, event_id="e")
    with pytest.raises(RecordError, match="not JSON"):
        DeviceEvent.from_json(b"{")
