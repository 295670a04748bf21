"""influxdb_client ``Point``s of the records, built from what their one encoder computes (``parts``).

Only for tests: ``Point(...).to_line_protocol()`` is an independent writer of the line protocol, so a
test can check that the encoders' lines are byte for byte what the client library writes for the same
values. Production writes the encoders' lines (machinewatch.line_protocol), never these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from influxdb_client import Point, WritePrecision

from machinewatch.line_protocol import Parts, alert_parts, late_line, window_line


def point(parts: Parts) -> Point:
    p = Point(parts.measurement)
    for key, value in parts.tags.items():
        p = p.tag(key, value)
    for key, value in parts.fields.items():
        p = p.field(key, value)
    return p.time(parts.time_ms, WritePrecision.MS)


def to_point(doc: Mapping[str, Any]) -> Point:
    return point(window_line.parts(doc))


def late_point(doc: Mapping[str, Any]) -> Point:
    return point(late_line.parts(doc))


def alert_point(doc: Mapping[str, Any]) -> Point:
    return point(alert_parts(doc))
