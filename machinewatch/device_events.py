"""The canonical device event: state changes, conditions, agent gaps and restarts beside readings.

A ``Reading`` carries one numeric value; everything a machine reports that is not a number (an
MTConnect EVENT or CONDITION, a SAMPLE that is UNAVAILABLE) and everything the connector learns
about the stream itself (observations lost to a wrapped agent buffer, an agent restart) is a
``DeviceEvent``. The device-alerts job (flink_jobs/device_alerts.py) writes its alerts (machine
unavailable, emergency stop, condition warning and fault) in the same columns with kind ``derived``
to the alerts topic (``schema.DERIVED_ALERT``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from machinewatch import schema
from machinewatch.record import RecordError, check_fields, json_object
from machinewatch.schema import DEVICE_EVENT

# What a device event can be; consumers switch on this field.
KIND_OBSERVATION = "observation"  # one observation the device produced (EVENT, CONDITION, non-numeric SAMPLE)
KIND_GAP = "gap"  # observations that existed at the source but can no longer be read
KIND_AGENT_RESTARTED = "agent_restarted"  # the source restarted: its sequence numbers start over
KIND_DERIVED = schema.KIND_DERIVED  # an alert the device-alerts job derived from observations (on the alerts topic)
KINDS = (KIND_OBSERVATION, KIND_GAP, KIND_AGENT_RESTARTED, KIND_DERIVED)

# (name, python type) of schema.DEVICE_EVENT, where each field is described. Order is the JSON order.
DEVICE_EVENT_FIELDS: tuple[tuple[str, type], ...] = tuple((c.name, c.json) for c in DEVICE_EVENT.columns)

_OPTIONAL = {c.name for c in DEVICE_EVENT.columns if not c.required}
_MAX_TEXT = 256
_MAX_VALUE = 4096


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One non-numeric fact about a device or its data source at one event time (UTC ms)."""

    source: str
    device_id: str
    kind: str
    ts: int
    event_id: str
    category: str = ""
    item: str = ""
    item_type: str = ""
    value: str | None = None
    state: str | None = None
    sequence: int | None = None
    instance_id: str = ""
    detail: str = ""
    lost_count: int | None = None
    region: str = ""
    site: str = ""

    def __post_init__(self) -> None:
        validate(asdict(self))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _ in DEVICE_EVENT_FIELDS}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceEvent:
        validate(data)
        return cls(**{name: data[name] for name, _ in DEVICE_EVENT_FIELDS if data.get(name) is not None})

    @classmethod
    def from_json(cls, payload: bytes | str) -> DeviceEvent:
        return cls.from_dict(json_object(payload))


def validate(data: dict[str, Any]) -> None:
    """Raise RecordError naming the first field that is missing or wrong."""
    check_fields(data, DEVICE_EVENT_FIELDS, _OPTIONAL, ("source", "device_id", "event_id"),
                 max_text=lambda name: _MAX_VALUE if name in ("value", "detail") else _MAX_TEXT)
    if data["kind"] not in KINDS:
        msg = f"field 'kind' = {data['kind']!r} is not one of {', '.join(KINDS)}"
        raise RecordError(msg)
    if data["kind"] == KIND_GAP:
        lost = data.get("lost_count")
        if lost is None or lost < 1:
            msg = f"a gap needs lost_count >= 1, got {lost!r}"
            raise RecordError(msg)
    seq = data.get("sequence")
    if seq is not None and seq < 0:
        msg = f"field 'sequence' must not be negative, got {seq}"
        raise RecordError(msg)

