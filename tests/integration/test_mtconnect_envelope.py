"""A broken envelope never costs the values, end to end: recorded documents of a gateway agent that numbers
sequences per machine, served over HTTP on 127.0.0.1, through the connector and the real Publisher into a
real Kafka broker (the project's own Kafka service, private to this module).

What is checked is read back from the topics: every observation element of the served documents (counted
with plain ElementTree) is on mw.readings / mw.device-events exactly once by event id, or in mw.deadletter
with its exact bytes, or (a repeat inside one document) in mw.quality; every machine's machine_unavailable
alert is on mw.alerts; the header, numbering and probe notes are on mw.quality; across a connector restart
from its state file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ingest.mtconnect.config import MTConnectSettings, settings_from_dict
from ingest.mtconnect.connector import AgentFollower
from ingest.mtconnect.recorded_agent import RecordedAgent
from machinewatch import names, quality
from machinewatch.config import Settings
from machinewatch.record import make_event_id
from machinewatch.stack.private import private_settings
from machinewatch.stack.services import Kafka
from tests.integration.test_mtconnect_kafka import on_runner
from tests.stack_support import read_messages
from tests.unit.test_mtconnect_connector import alert_facts
from tests.unit.test_mtconnect_envelope import (
    GATEWAY,
    PHASE_1,
    PHASE_2,
    TESTDATA,
    UUIDS,
    account,
    elements_of,
    event_id,
    froms,
    served,
)

pytestmark = pytest.mark.integration

TOPICS = (names.TOPIC_READINGS, names.TOPIC_DEVICE_EVENTS, names.TOPIC_ALERTS, names.TOPIC_DEAD_LETTER,
          names.TOPIC_QUALITY)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A private Kafka broker (only Kafka: these tests need no Flink or InfluxDB), with the project's topics."""
    broker = Kafka(private_settings(Path(tmp_path_factory.mktemp("mw-mtconnect-envelope"))))
    try:
        broker.up(timeout=180)
        yield broker.s
    finally:
        broker.proc.stop()


@contextmanager
def connector(cfg: MTConnectSettings, settings: Settings) -> Iterator[AgentFollower]:
    """The connector running in a thread, publishing to the real broker."""
    with on_runner(cfg, settings, "mw-test-mtconnect-envelope") as src:
        yield src


def wait_for(what: str, done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def marks(src: AgentFollower) -> dict[str, int]:
    return {k: m.next_sequence for k, m in src.cursor.devices.items()} if src.cursor else {}


def topics(settings: Settings) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """(key, JSON value) of every message on each topic, from the beginning."""
    return {t: [(m.key.decode() if m.key else "", json.loads(m.value)) for m in read_messages(settings, t)]
            for t in TOPICS}


def test_gateway_numbering_per_machine_every_value_reaches_kafka_once(kafka: Settings, tmp_path: Path) -> None:
    routes = dict(PHASE_1)
    with RecordedAgent(TESTDATA, routes) as agent:
        agent.serve()
        cfg = settings_from_dict({
            "agent_url": agent.url, "agent_id": "it-gateway", "mode": "stream", "interval_ms": 20,
            "heartbeat_ms": 300, "start": "current", "state_path": str(tmp_path / "state.json"),
            "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
        })
        with connector(cfg, kafka) as src:
            wait_for("every machine read", lambda: marks(src) == {"lathe-1": 132016, "mill-2": 15, "grind-3": 13})
            wait_for("a second round", lambda: all(len(froms(agent, f"/{d}/sample")) >= 2 for d in UUIDS))
        phase_1 = len(agent.requests)
        for key, name in PHASE_2.items():
            agent.route(key, name)
        routes.update(PHASE_2)
        # The connector process restarts from its state file.
        with connector(cfg, kafka) as src:
            wait_for("new data read", lambda: marks(src) == {"lathe-1": 132018, "mill-2": 17, "grind-3": 13})
            assert src.metrics.reread_skipped == 2
        docs = served(agent.requests, routes)
        assert not [t for t in agent.requests[phase_1:] if t.startswith("/current")]
        assert froms(agent, "/LATHE1/sample")[:2] == [132011, 132016]
        assert state_devices(cfg.state_path) == {"lathe-1": 132018, "mill-2": 17, "grind-3": 13}

    got = topics(kafka)
    records = [(t, key, rec) for t in (names.TOPIC_READINGS, names.TOPIC_DEVICE_EVENTS, names.TOPIC_ALERTS)
               for key, rec in got[t]]
    letters = [rec for t in (names.TOPIC_DEAD_LETTER, names.TOPIC_QUALITY) for _, rec in got[t]]
    found = account(GATEWAY, docs, records, letters)
    assert len(found["published"]) == sum(1 for _ in {el.key for d in docs for el in elements_of(d)}) - 2
    assert set(found["dead"]) == {("mill-2", "pos", 13), ("grind-3", "Stemp", 12)}
    assert set(found["duplicates"]) == {("mill-2", "Srpm", 12)}
    # Records are keyed by machine, so each machine's records stay in one partition.
    assert {key for t, key, _ in records} == {"LATHE1", "MILL2", "GRIND3"}

    # The UNAVAILABLE event of every machine, once each (the device-alerts job opens machine_unavailable from
    # it; the collector publishes no alerts since issue 16).
    assert not got[names.TOPIC_ALERTS]
    alerts = alert_facts(records)
    unavailable = {event_id(GATEWAY, el) for d in dict.fromkeys(docs)
                   for el in elements_of(d) if el.tag == "Availability" and el.text == "UNAVAILABLE"}
    assert sorted(a["event_id"] for a in alerts) == sorted(unavailable)
    assert {a["device_id"] for a in alerts if a["rule"] == "machine_unavailable"} == set(UUIDS)

    # The notes and dead letters carry the shared envelope and stable ids.
    notes = [rec for _, rec in got[names.TOPIC_QUALITY]]
    for doc in notes + [rec for _, rec in got[names.TOPIC_DEAD_LETTER]]:
        assert {"raw", "raw_encoding", "size", "truncated", "reason", "origin", "kind"} <= set(doc)
        assert len(quality.raw_bytes(doc)) == doc["size"] and not doc["truncated"]
    kinds = {n["kind"] for n in notes}
    assert kinds == {"per_device_sequences", "header_disagrees", "duplicate_observation", "duplicate_item_id"}
    assert all(n.get("note_id") for n in notes)
    [numbering] = [n for n in notes if n["kind"] == "per_device_sequences"]
    assert numbering["note_id"] == make_event_id("mtconnect", GATEWAY, "", "", "", "per_device_sequences")
    assert quality.raw_bytes(numbering) == (TESTDATA / "multi-current.xml").read_bytes()


def state_devices(path: Path) -> dict[str, int]:
    data = json.loads(path.read_text())
    assert data["per_device"] is True
    return {k: v["next_sequence"] for k, v in data["devices"].items()}
