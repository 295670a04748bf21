"""MTConnect end to end on the real Kafka: simulator agent -> connector -> topics, checked against ground truth.

Every observation the agent produced must be on mw.readings or mw.device-events exactly once, in
sequence order per device, across a connector restart, an agent restart and a forced buffer
overrun, whose gap record must state exactly how many observations were lost. A hard kill of the
connector process may re-publish the last batch, but only with identical event ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from ingest.mtconnect.config import MTConnectSettings, settings_from_dict
from ingest.mtconnect.connector import AgentFollower
from ingest.mtconnect.source import MTConnectSource
from ingest.mtconnect.state import Cursor, load_cursor
from machinewatch import names, quality
from machinewatch.config import Settings
from machinewatch.kafka_io import KafkaDeadLetters, Publisher, PublisherSink
from machinewatch.record import make_event_id
from machinewatch.runtime import Runner
from machinewatch.stack import Stack
from simulators.mtconnect_agent import MTConnectAgentSimulator
from tests.unit.test_mtconnect_connector import alert_facts

pytestmark = pytest.mark.integration

Row = tuple[str, int, int, str, dict[str, Any]]  # topic, partition, offset, key, record
TOPICS = (names.TOPIC_READINGS, names.TOPIC_DEVICE_EVENTS, names.TOPIC_ALERTS, names.TOPIC_DEAD_LETTER)


@pytest.fixture(scope="module")
def kafka(stack: Stack, settings: Settings) -> Settings:
    """The running stack, with the device-events topic (a stack started before it existed lacks it)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers)
    try:
        if names.TOPIC_DEVICE_EVENTS not in admin.list_topics():
            with contextlib.suppress(TopicAlreadyExistsError):  # another test run created it meanwhile
                admin.create_topics([NewTopic(names.TOPIC_DEVICE_EVENTS, settings.kafka_partitions, 1)])
    finally:
        admin.close()
    return settings


class TopicTail:
    """Reads what is appended to the topics after it was created (no consumer group, nothing committed)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False,
                                      group_id=None)
        parts = []
        deadline = time.monotonic() + 30
        for topic in TOPICS:
            while not (found := self.consumer.partitions_for_topic(topic)):
                assert time.monotonic() < deadline, f"no metadata for {topic}"
                time.sleep(0.2)
            parts += [TopicPartition(topic, p) for p in found]
        self.consumer.assign(parts)
        # Explicit end offsets, resolved now (seek_to_end would resolve them lazily, possibly after
        # the connector's first records were written).
        for tp, offset in self.consumer.end_offsets(parts).items():
            self.consumer.seek(tp, offset)
        self.records: list[Row] = []

    def read_until(self, done: Callable[[list[Row]], bool],
                   keys: set[str], timeout: float = 60) -> list[Row]:
        deadline = time.monotonic() + timeout
        while not done(self.records):
            assert time.monotonic() < deadline, f"timed out with {len(self.records)} records"
            for tp, batch in self.consumer.poll(timeout_ms=500).items():
                for msg in batch:
                    key = msg.key.decode() if msg.key else ""
                    if key in keys:
                        self.records.append((tp.topic, tp.partition, msg.offset, key, json.loads(msg.value)))
        return self.records

    def close(self) -> None:
        self.consumer.close()


def config(url: str, tmp_path: Path, agent_id: str, **extra: Any) -> MTConnectSettings:
    base = {"agent_url": url, "agent_id": agent_id, "mode": "stream", "interval_ms": 20, "heartbeat_ms": 300,
            "count": 200, "start": "buffer", "state_path": str(tmp_path / "state.json"),
            "reconnect_min_s": 0.05, "reconnect_max_s": 0.5}
    return settings_from_dict({**base, **extra})


@contextmanager
def on_runner(cfg: MTConnectSettings, settings: Settings, client_id: str = "mw-test-mtconnect",
              ) -> Iterator[AgentFollower]:
    """The collector on the connector runtime in a thread (what ``machinewatch ingest mtconnect`` runs),
    publishing to the real broker; yields its follower (cursor, metrics). Leaving the block stops it
    gracefully: a last flush, then the cursor is saved."""
    source = MTConnectSource(cfg)
    publisher = Publisher(settings, topic=cfg.topic, client_id=client_id)
    runner = Runner("mtconnect", source, PublisherSink(publisher, device_events_topic=cfg.device_events_topic),
                    KafkaDeadLetters(publisher), cfg.runner)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield source.follower
    finally:
        runner.stop()
        thread.join(60)
        assert not thread.is_alive(), "collector did not stop"


@contextmanager
def connector(cfg: MTConnectSettings, settings: Settings) -> Iterator[AgentFollower]:
    """The connector running in a thread, publishing to the real broker."""
    with on_runner(cfg, settings) as src:
        yield src


def wait_cursor(get: Callable[[], Cursor | None], sim: MTConnectAgentSimulator, timeout: float = 30) -> None:
    want = (str(sim.instance_id), sim.next_sequence)

    def at() -> tuple[str, int] | None:
        cursor = get()
        return (cursor.instance_id, cursor.next_sequence) if cursor else None

    deadline = time.monotonic() + timeout
    while at() != want:
        assert time.monotonic() < deadline, f"connector at {get()}, agent at {want}"
        time.sleep(0.05)


def event_index(sim: MTConnectAgentSimulator) -> dict[str, tuple[str, int]]:
    """event id -> (instanceId, sequence) of every observation the agent produced; an id is made of
    (instanceId, device uuid, data item id, sequence)."""
    return {make_event_id("mtconnect", str(o.instance_id), sim.device(o.device).uuid, o.item.id, o.sequence):
            (str(o.instance_id), o.sequence) for o in sim.produced}


def observation_records(records: list[Row]) -> list[Row]:
    return [r for r in records if r[0] == names.TOPIC_READINGS
            or (r[0] == names.TOPIC_DEVICE_EVENTS and r[4].get("kind") == "observation")]


def lost_keys(records: list[Row]) -> set[tuple[str, int]]:
    lost: set[tuple[str, int]] = set()
    for topic, _, _, _, rec in records:
        if topic == names.TOPIC_DEVICE_EVENTS and rec.get("kind") == "gap":
            lost |= {(rec["instance_id"], s) for s in range(rec["sequence"], rec["sequence"] + rec["lost_count"])}
    return lost


def assert_in_order(records: list[Row],
                    index: dict[str, tuple[str, int]], instances: list[str]) -> None:
    """Per (topic, device): offsets order == (instance, sequence) order; one device stays in one partition."""
    by_stream: dict[tuple[str, str], list[tuple[int, int, int, int]]] = {}
    for topic, partition, offset, key, rec in observation_records(records):
        inst, seq = index[rec["event_id"]]
        by_stream.setdefault((topic, key), []).append((partition, offset, instances.index(inst), seq))
    for stream, rows in by_stream.items():
        assert len({p for p, *_ in rows}) == 1, f"{stream} spread over partitions"
        rows.sort()
        keys = [(i, s) for _, _, i, s in rows]
        assert keys == sorted(keys), f"{stream} out of sequence order"


def test_exactly_once_in_order_across_connector_restart_agent_restart_and_overrun(
    kafka: Settings, tmp_path: Path
) -> None:
    prefix = f"it{uuid.uuid4().hex[:6]}"
    agent_id = f"it-agent-{prefix}"
    tail = TopicTail(kafka)
    with MTConnectAgentSimulator(devices=3, buffer_size=120, seed=21, device_prefix=prefix) as sim:
        sim.serve()
        cfg = config(sim.url, tmp_path, agent_id)
        with connector(cfg, kafka) as src:
            # First run with start="buffer": what the agent holds when the connector arrives is the start.
            wait_cursor(lambda: src.cursor, sim)
            sim.step(5)
            sim.emergency_stop(0)
            sim.step(3)
            wait_cursor(lambda: src.cursor, sim)
        sim.step(4)  # produced while the connector is down; it must catch up from its saved cursor
        with connector(cfg, kafka) as src:
            wait_cursor(lambda: src.cursor, sim)
            before = sim.next_sequence
            sim.overrun(extra=25)
            expected_lost = (sim.next_sequence - before) - 120
            wait_cursor(lambda: src.cursor, sim)
            old_instance = str(sim.instance_id)
            sim.restart()
            sim.machine_unavailable(2)
            sim.fault(1, "SPINDLE AMPLIFIER ALARM")
            sim.step(3)
            wait_cursor(lambda: src.cursor, sim)
        index = event_index(sim)
        instances = list(dict.fromkeys(i for i, _ in sim.produced_keys()))
        keys = {d.name for d in sim.devices} | {agent_id}
        expected_derived = {
            (o.device, str(o.instance_id), o.sequence) for o in sim.produced
            if (o.item.type == "AVAILABILITY" and o.value == "UNAVAILABLE")
            or (o.item.type == "EMERGENCY_STOP" and o.value == "TRIGGERED") or o.level == "FAULT"
        }

        def complete(records: list[Row]) -> bool:
            seen = {index[r[4]["event_id"]] for r in observation_records(records) if r[4]["event_id"] in index}
            alerts = len(alert_facts([(r[0], "", r[4]) for r in records]))
            return len(seen | lost_keys(records)) >= len(index) and alerts >= len(expected_derived)

        records = tail.read_until(complete, keys)
        time.sleep(1.0)  # anything extra (a duplicate) would arrive now
        records = tail.read_until(lambda _: True, keys, timeout=5)
        tail.close()

    got = [index[r[4]["event_id"]] for r in observation_records(records)]
    assert len(got) == len(set(got)), "an observation reached Kafka twice"
    lost = lost_keys(records)
    assert set(got) | lost == set(index.values())
    assert not set(got) & lost
    gaps = [r[4] for r in records if r[4].get("kind") == "gap"]
    assert len(gaps) == 1 and gaps[0]["lost_count"] == expected_lost and gaps[0]["sequence"] == before
    assert gaps[0]["instance_id"] == old_instance
    restarts = [r[4] for r in records if r[4].get("kind") == "agent_restarted"]
    assert [(r["device_id"], r["instance_id"]) for r in restarts] == [(agent_id, str(sim.instance_id))]
    assert_in_order(records, index, instances)
    # The collector publishes no alerts (issue 16): the device events the device-alerts job derives them from.
    assert not [r for r in records if r[0] == names.TOPIC_ALERTS]
    alerts = {(r["device_id"], r["instance_id"], r["sequence"]) for r in alert_facts([(r[0], "", r[4])
                                                                                    for r in records])}
    assert alerts == expected_derived
    # Readings carry normalised units.
    units = {r[4]["metric"].split("-")[-1]: r[4]["unit"] for r in records if r[0] == names.TOPIC_READINGS}
    assert units == {"Srpm": "rpm", "Sload": "%", "Stemp": "°C", "Xpos": "mm", "Ypos": "mm", "Zpos": "mm"}


def test_killed_connector_resumes_without_gaps_and_replays_only_identical_ids(
    kafka: Settings, tmp_path: Path
) -> None:
    prefix = f"ik{uuid.uuid4().hex[:6]}"
    agent_id = f"it-agent-{prefix}"
    tail = TopicTail(kafka)
    with MTConnectAgentSimulator(devices=2, buffer_size=5000, seed=22, device_prefix=prefix) as sim:
        sim.serve()
        conf = tmp_path / "mtconnect.conf"
        conf.write_text(
            f'[mtconnect]\nagent_url = "{sim.url}"\nagent_id = "{agent_id}"\nmode = "poll"\ninterval_ms = 20\n'
            f'start = "buffer"\ncount = 50\nstate_path = "{tmp_path / "state.json"}"\nreconnect_min_s = 0.05\n')
        env = {**os.environ, **kafka.to_env()}
        cmd = [sys.executable, "-m", "machinewatch", "ingest", "mtconnect", "--config", str(conf)]
        state = tmp_path / "state.json"

        def cursor() -> Cursor | None:
            try:
                return load_cursor(state)
            except ValueError:
                return None

        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            sim.step(10)
            wait_cursor(cursor, sim, timeout=60)
            # Kill it hard while it is busy with a stream of small batches.
            for _ in range(5):
                sim.step(2)
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            sim.step(5)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wait_cursor(cursor, sim, timeout=60)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err.decode()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        index = event_index(sim)
        keys = {d.name for d in sim.devices} | {agent_id}
        records = tail.read_until(
            lambda recs: {r[4]["event_id"] for r in observation_records(recs)} >= set(index), keys)
        time.sleep(1.0)
        records = tail.read_until(lambda _: True, keys, timeout=5)
        tail.close()
    ids = [r[4]["event_id"] for r in observation_records(records)]
    assert set(ids) == set(index), "an observation is missing or foreign"
    assert not lost_keys(records)
    # A kill between Kafka's ack and the cursor write may re-publish one batch (<= count), same ids.
    assert len(ids) - len(set(ids)) <= 50
    instances = list(dict.fromkeys(i for i, _ in sim.produced_keys()))
    deduped = []
    seen: set[str] = set()
    for rec in sorted(observation_records(records), key=lambda r: (r[0], r[1], r[2])):
        if rec[4]["event_id"] not in seen:
            seen.add(rec[4]["event_id"])
            deduped.append(rec)
    assert_in_order(deduped, index, instances)


def test_malicious_xml_is_dead_lettered_and_the_connector_keeps_running(
    kafka: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"im{uuid.uuid4().hex[:6]}"
    agent_id = f"it-agent-{prefix}"
    tail = TopicTail(kafka)
    laughs = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">'
              b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;">]><MTConnectStreams><Streams>&c;</Streams></MTConnectStreams>')
    xxe = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<MTConnectStreams><Header instanceId="&x;"/></MTConnectStreams>')
    with MTConnectAgentSimulator(devices=1, buffer_size=2000, seed=23, device_prefix=prefix) as sim:
        sim.serve()
        with connector(config(sim.url, tmp_path, agent_id, max_body_bytes=64_000), kafka) as src:
            wait_cursor(lambda: src.cursor, sim)
            for body in (laughs, xxe, b"<MTConnectStreams>" + b" " * 100_000 + b"</MTConnectStreams>"):
                framing = (f"--mw-mtconnect-sim-boundary\r\nContent-type: text/xml\r\n"
                           f"Content-length: {len(body)}\r\n\r\n").encode()
                refused = src.metrics.refused_documents
                sim.inject_stream_bytes(framing + body + b"\r\n")
                sim.step(2)
                deadline = time.monotonic() + 20
                while src.metrics.refused_documents == refused:
                    assert time.monotonic() < deadline, "document was not refused"
                    time.sleep(0.05)
                wait_cursor(lambda: src.cursor, sim)
            sim.inject_stream_bytes(b"--some-other-boundary\r\nContent-length: 3\r\n\r\nabc")
            sim.step(2)
            time.sleep(0.5)
            sim.step(2)
            wait_cursor(lambda: src.cursor, sim)
        index = event_index(sim)
        origin = sim.url
        records = tail.read_until(
            lambda recs: {r[4].get("event_id") for r in observation_records(recs)} >= set(index)
            and sum(1 for r in recs if r[0] == names.TOPIC_DEAD_LETTER) >= 3,
            {prefix + "01", agent_id, "mtconnect"})
        tail.close()
    dead = [r[4] for r in records if r[0] == names.TOPIC_DEAD_LETTER and r[4].get("origin") == origin]
    reasons = " | ".join(d["reason"] for d in dead)
    assert "entity expansion" in reasons and "XXE" in reasons and "cap" in reasons
    # Refused whole: the exact bytes; refused at the cap: the head that came, cut, with the declared size.
    by_reason = {d["reason"]: d for d in dead}
    laughs_letter = next(d for r, d in by_reason.items() if "entity expansion" in r)
    assert quality.raw_bytes(laughs_letter) == laughs and laughs_letter["truncated"] is False
    capped = next(d for r, d in by_reason.items() if "cap" in r)
    assert capped["truncated"] is True and capped["size"] == 100_000 + len(b"<MTConnectStreams></MTConnectStreams>")
    assert quality.raw_bytes(capped).startswith(b"<MTConnectStreams>")
    assert "refused a document from MTConnect agent" in caplog.text
    assert "broken multipart stream" in caplog.text
    ids = [r[4]["event_id"] for r in observation_records(records)]
    assert sorted(ids) == sorted(index), "every observation exactly once despite the bad documents"
