"""The temperature simulator is deterministic per seed and keeps its disorder bound."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simulators.temperature import TemperatureSimulator

START = datetime(2026, 11, 1, tzinfo=UTC)


def test_same_seed_same_readings_and_ids() -> None:
    a = TemperatureSimulator(devices=3, seed=7).readings(START, 20)
    b = TemperatureSimulator(devices=3, seed=7).readings(START, 20)
    c = TemperatureSimulator(devices=3, seed=8).readings(START, 20)
    assert a == b
    assert [r.value for r in a] != [r.value for r in c]
    assert len({r.event_id for r in a}) == 60


def test_disorder_is_bounded() -> None:
    readings = TemperatureSimulator(devices=4, seed=1, max_disorder_ms=1500).readings(START, 50)
    high = 0
    late = 0
    for r in readings:
        late = max(late, high - r.ts)
        high = max(high, r.ts)
    assert 0 < late <= 1500


def test_overheat_episode_raises_only_that_device_and_span() -> None:
    base = TemperatureSimulator(devices=2, seed=3).readings(START, 30)
    hot = TemperatureSimulator(devices=2, seed=3, overheats=[(1, 10_000, 5_000, 40.0)]).readings(START, 30)
    start_ms = int(START.timestamp() * 1000)
    for a, b in zip(base, hot, strict=True):
        in_episode = a.device_id.endswith("0001") and 10_000 <= a.ts - start_ms < 15_000
        assert b.value == pytest.approx(a.value + (40.0 if in_episode else 0.0), abs=1e-3)


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TemperatureSimulator().readings(datetime(2026, 1, 1), 1)  # noqa: DTZ001
