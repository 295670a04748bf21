"""An MTConnect agent simulator: CNC devices shaped like the NIST SMS test bed's, served over HTTP.

Serves ``/probe``, ``/current``, ``/sample?from=&count=`` and streaming ``/sample?interval=``
(multipart/x-mixed-replace with heartbeats), MTConnectError documents (OUT_OF_RANGE,
INVALID_REQUEST, UNSUPPORTED), from a fixed-size ring buffer with first/next/lastSequence. A
restart starts a new ``instanceId`` at sequence 1. Scenarios are methods (machine unavailable,
overheat, emergency stop, fault, buffer overrun, agent restart, silence, injected bad documents)
so tests can script them; ``produced`` holds every observation ever made, the ground truth a
connector's output is checked against. Deterministic for a seed (timestamps follow ``start``).

One module per seam: ``model`` (devices, data items, observations, the ring buffer), ``scenarios``,
``rendering`` (the XML documents), ``server`` (HTTP), and ``agent``, the simulator that ties them together.
"""

from __future__ import annotations

from simulators.mtconnect_agent.agent import MTConnectAgentSimulator
from simulators.mtconnect_agent.model import (
    OVERHEAT_FAULT_C,
    OVERHEAT_WARNING_C,
    DeviceState,
    ItemSpec,
    Obs,
    ObservationBuffer,
    device_items,
)
from simulators.mtconnect_agent.rendering import CONDITION_ELEMENTS, SCHEMA_NAMESPACES, STREAM_BOUNDARY
from simulators.mtconnect_agent.scenarios import SCENARIOS, parse_scenario
from simulators.mtconnect_agent.server import serve_forever

__all__ = [
    "CONDITION_ELEMENTS", "OVERHEAT_FAULT_C", "OVERHEAT_WARNING_C", "SCENARIOS", "SCHEMA_NAMESPACES",
    "STREAM_BOUNDARY", "DeviceState", "ItemSpec", "MTConnectAgentSimulator", "Obs", "ObservationBuffer",
    "device_items", "parse_scenario", "serve_forever",
]
