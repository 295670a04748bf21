"""Shared by the unit tests of the PerfMon watcher: a publisher double and Kafka read-back without Kafka."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ingest.perfmon import watcher as watcher_mod
from machinewatch import quality


class _Future:
    def succeeded(self) -> bool:
        return True


class RecordingPublisher:
    """Everything sent counts as delivered at once: the worst case for duplicates after a crash."""

    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.failed = 0
        self.flushes = 0

    def send(self, reading: Any) -> _Future:
        self.delivered.append(reading.to_json())
        return _Future()

    def dead_letter(self, source: str, raw: bytes | str, reason: str, origin: str = "",
                    size: int | None = None) -> None:
        self.delivered.append(json.dumps(quality.letter(source, raw, reason, origin, size=size)).encode())

    def note(self, source: str, kind: str, raw: bytes | str, reason: str, origin: str = "",
             note_id: str = "") -> None:
        self.delivered.append(json.dumps(quality.letter(source, raw, reason, origin, kind=kind,
                                                        note_id=note_id)).encode())

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def close(self) -> None:
        pass

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(v) for v in self.delivered]


@pytest.fixture
def kafka_readback(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordingPublisher]]:
    """Recovery reads back what the recording publishers 'delivered' instead of consuming Kafka."""
    pubs: list[RecordingPublisher] = []

    def read_back(_settings: Any, _since: int, _timeout: float) -> Iterator[bytes]:
        for pub in pubs:
            yield from pub.delivered

    monkeypatch.setattr(watcher_mod, "_read_topics_since", read_back)
    yield pubs
