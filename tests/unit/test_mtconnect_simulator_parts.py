"""The MTConnect agent simulator's parts on their own: the package still offers every name the single module did,
the ring buffer keeps its sequences and ground truth, and the documents are rendered from their inputs alone."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import simulators.mtconnect_agent as package
from simulators.mtconnect_agent.model import ObservationBuffer, device_items
from simulators.mtconnect_agent.rendering import Documents, multipart_part

START = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def test_the_package_offers_the_names_of_the_former_module() -> None:
    for name in ("MTConnectAgentSimulator", "ItemSpec", "Obs", "device_items", "SCENARIOS", "parse_scenario",
                 "serve_forever", "STREAM_BOUNDARY", "SCHEMA_NAMESPACES", "CONDITION_ELEMENTS",
                 "OVERHEAT_WARNING_C", "OVERHEAT_FAULT_C"):
        assert hasattr(package, name), name


def test_the_ring_buffer_forgets_the_oldest_and_a_reset_keeps_the_ground_truth() -> None:
    buf = ObservationBuffer(8)
    item = device_items("CNC01")["temp"]
    for i in range(11):
        buf.add(1, "CNC01", item, 1000 + i, f"{i}", "")
    assert (buf.first_sequence, buf.next_sequence) == (4, 12)
    assert [o.sequence for o in buf.since(10, 5)] == [10, 11]
    assert buf.latest[item.id].value == "10"
    buf.reset()
    assert (buf.first_sequence, buf.next_sequence, buf.latest) == (1, 1, {})
    assert len(buf.produced) == 11


def test_documents_come_from_their_inputs_alone() -> None:
    with package.MTConnectAgentSimulator(devices=2, seed=3, buffer_size=16, start=START) as sim:
        sim.step(5)
        docs = Documents(sim.instance_id, sim.schema_version, sim.buffer_size, sim.sloppy)
        first, nxt = sim.first_sequence, sim.next_sequence
        window = [o for o in sim.produced if o.sequence >= first]

        def masked(body: bytes) -> bytes:
            return re.sub(rb'creationTime="[^"]*"', b"", body)

        assert masked(docs.probe(sim.devices)) == masked(sim.probe_xml())
        assert masked(docs.streams(sim.devices, window[:16], window[15].sequence + 1, first, nxt - 1)) == masked(
            sim.sample_xml(first, 16)[0])
    part = multipart_part(b"<x/>")
    assert part.startswith(f"--{package.STREAM_BOUNDARY}\r\n".encode()) and part.endswith(b"<x/>\r\n")
