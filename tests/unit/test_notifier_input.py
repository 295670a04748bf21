"""What the notifier does with records on the alerts topic that are not alerts: dead letters, never a stop."""

from __future__ import annotations

from typing import NamedTuple

from sinks.notifier import decode_alerts


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes


def test_non_alerts_become_rejects_with_their_bytes_and_alerts_pass() -> None:
    records = [Rec("mw.alerts", 0, 1, b'{"alert_id": "a1", "state": "firing"}'),
               Rec("mw.alerts", 0, 2, b"not json"),
               Rec("mw.alerts", 0, 3, b'["a list"]'),
               Rec("mw.alerts", 0, 4, b'{"alert_id": "\xff"}'),
               Rec("mw.alerts", 0, 5, b'{"alert_id": "a2"}')]
    docs, rejects = decode_alerts(records)
    assert [d["alert_id"] for d in docs] == ["a1", "a2"]
    assert [(raw, origin) for raw, _, origin in rejects] == [
        (b"not json", "mw.alerts/0@2"), (b'["a list"]', "mw.alerts/0@3"), (b'{"alert_id": "\xff"}', "mw.alerts/0@4")]
    assert "not JSON" in rejects[0][1] and "not an object (list)" in rejects[1][1]
