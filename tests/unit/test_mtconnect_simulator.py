"""The MTConnect agent simulator: ring buffer, HTTP endpoints, errors, scenarios, determinism."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ingest.mtconnect.documents import AgentError, parse_probe, parse_streams
from simulators.mtconnect_agent import MTConnectAgentSimulator, parse_scenario

START = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[MTConnectAgentSimulator]:
    with MTConnectAgentSimulator(devices=2, buffer_size=50, seed=5, start=START) as s:
        s.serve()
        yield s


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_same_seed_same_observations() -> None:
    def run() -> list[tuple[int, str, str]]:
        s = MTConnectAgentSimulator(devices=3, seed=11, start=START)
        s.step(20)
        s.overheat(1, rounds=10)
        s.step(10)
        return [(o.sequence, o.item.id, o.value) for o in s.produced]

    assert run() == run()
    other = MTConnectAgentSimulator(devices=3, seed=12, start=START)
    other.step(30)
    assert [(o.sequence, o.value) for o in other.produced] != [(s, v) for s, _, v in run()]


def test_ring_buffer_sequences_and_overrun(sim: MTConnectAgentSimulator) -> None:
    sim.overrun(extra=5)
    doc = parse_streams(get(f"{sim.url}/sample?count=1000")[1])
    h = doc.header
    assert h.last_sequence == len(sim.produced) and h.next_sequence == len(sim.produced) + 1
    assert h.first_sequence == h.next_sequence - 50
    assert [o.sequence for o in doc.observations] == list(range(h.first_sequence, h.next_sequence))
    status, body = get(f"{sim.url}/sample?from=1")
    assert status == 404
    with pytest.raises(AgentError) as info:
        parse_streams(body)
    assert info.value.doc.codes == {"OUT_OF_RANGE"}
    status, body = get(f"{sim.url}/sample?count=zero")
    assert status == 400 and b"INVALID_REQUEST" in body
    status, body = get(f"{sim.url}/assets")
    assert status == 404 and b"UNSUPPORTED" in body


def test_probe_declares_every_item_with_units(sim: MTConnectAgentSimulator) -> None:
    probe = parse_probe(get(f"{sim.url}/probe")[1])
    assert [d.name for d in probe.devices] == ["CNC01", "CNC02"]
    produced_items = {o.item.id for o in sim.produced}
    assert produced_items == {i for d in probe.devices for i in d.items}
    units = {i.type: i.unit for i in probe.devices[0].items.values() if i.units}
    assert units == {"ROTARY_VELOCITY": "rpm", "LOAD": "%", "TEMPERATURE": "°C", "POSITION": "mm"}


def test_current_holds_the_latest_value_of_each_item(sim: MTConnectAgentSimulator) -> None:
    sim.step(3)
    doc = parse_streams(get(f"{sim.url}/current")[1])
    latest: dict[str, int] = {}
    for o in sim.produced:
        latest[o.item.id] = o.sequence
    assert {o.item_id: o.sequence for o in doc.observations} == latest


def test_restart_changes_instance_and_starts_at_one(sim: MTConnectAgentSimulator) -> None:
    before = sim.instance_id
    sim.step(5)
    sim.restart()
    doc = parse_streams(get(f"{sim.url}/sample")[1])
    assert doc.header.instance_id == str(before + 1)
    assert doc.observations[0].sequence == 1 and doc.header.first_sequence == 1
    # Every item starts UNAVAILABLE after a restart.
    first_obs = {o.item_id: o for o in reversed(doc.observations)}
    assert all(o.value == "UNAVAILABLE" or o.level == "UNAVAILABLE" for o in first_obs.values())


def test_scenarios_produce_what_they_say() -> None:
    s = MTConnectAgentSimulator(devices=2, seed=2, start=START, buffer_size=5000)
    s.emergency_stop(0)
    s.machine_unavailable(1)
    s.overheat(0, rounds=30, extra_c=80)
    s.step(30)
    values = [(o.device, o.item.type, o.value, o.level) for o in s.produced]
    assert ("CNC01", "EMERGENCY_STOP", "TRIGGERED", "") in values
    assert ("CNC02", "AVAILABILITY", "UNAVAILABLE", "") in values
    assert any(d == "CNC01" and t == "TEMPERATURE" and lvl == "FAULT" for d, t, _, lvl in values)
    # An unavailable machine sends nothing more; a stopped spindle stays at 0 rpm.
    unavailable_at = max(o.sequence for o in s.produced if o.device == "CNC02" and o.value == "UNAVAILABLE")
    assert not [o for o in s.produced if o.device == "CNC02" and o.sequence > unavailable_at]


def test_sloppy_mode_and_schema_versions() -> None:
    s = MTConnectAgentSimulator(devices=1, seed=1, start=START, sloppy=True, schema_version="2.0")
    body = s.sample_xml(None, 10)[0]
    assert b'encoding="UTF8"' in body and b"urn:mtconnect.org:MTConnectStreams:2.0" in body
    assert b'Z"' not in body.split(b"<Streams>")[1]
    doc = parse_streams(body)
    assert doc.observations[0].ts == int(START.timestamp() * 1000)


def test_scenario_syntax() -> None:
    assert parse_scenario("overheat@20:1") == (20.0, "overheat", 1)
    assert parse_scenario("restart@1.5") == (1.5, "restart", 0)
    assert parse_scenario("estop@3:CNC02") == (3.0, "estop", "CNC02")
    with pytest.raises(ValueError, match="KIND@SECONDS"):
        parse_scenario("explode@3")
