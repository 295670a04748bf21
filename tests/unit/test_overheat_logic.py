"""The sustained-overheat state machine on hand-made bucket sequences (no Flink)."""

from __future__ import annotations

from flink_jobs.overheat_logic import DeviceState, OverheatRules, Transition, on_bucket, on_timer

RULES = OverheatRules(threshold=80, duration_ms=10_000, hysteresis=5, clear_ms=5_000, escalate_factor=2,
                      max_gap_ms=3_000, silence_ms=20_000)


def feed(temps: list[float | None], st: DeviceState | None = None, t0: int = 0) -> tuple[list[Transition], DeviceState]:
    """One bucket per second; None = no reading that second."""
    st = st or DeviceState()
    out: list[Transition] = []
    for i, temp in enumerate(temps):
        if temp is None:
            continue
        start = t0 + i * 1000
        out += on_bucket(st, RULES, "dev", start, start + 1000, temp, temp, temp, 1)
    return out, st


def states(out: list[Transition]) -> list[tuple[str, int]]:
    return [(t.state, t.ts // 1000) for t in out]


def test_opens_after_duration_escalates_and_resolves_with_hysteresis() -> None:
    # 25 s hot, then 3 s in the hysteresis band (neither hot nor cool), then 6 s cool
    out, _ = feed([90.0] * 25 + [78.0] * 3 + [70.0] * 6)
    assert states(out) == [("pending", 1), ("opened", 10), ("escalated", 20), ("resolved", 33)]
    assert len({t.alert_id for t in out}) == 1
    assert out[0].fires_at_ms == 10_000 and out[1].fires_at_ms is None
    assert out[2].severity == "critical" and out[1].severity == "warning"
    assert out[1].peak == 90.0 and out[1].avg == 90.0


def test_a_dip_below_threshold_restarts_the_run() -> None:
    out, _ = feed([90.0] * 8 + [79.0] + [90.0] * 10)
    assert states(out) == [("pending", 1), ("cancelled", 9), ("pending", 10), ("opened", 19)]
    assert out[0].alert_id == out[1].alert_id != out[2].alert_id == out[3].alert_id


def test_a_gap_longer_than_max_gap_breaks_continuity() -> None:
    out, _ = feed([90.0] * 6 + [None] * 4 + [90.0] * 9)
    # 6 s + 9 s with a 4 s hole: never 10 s continuous; the first run is cancelled at its last reading
    assert states(out) == [("pending", 1), ("cancelled", 6), ("pending", 11)]
    out, _ = feed([90.0] * 6 + [None] * 2 + [90.0] * 9)
    assert states(out) == [("pending", 1), ("opened", 10)]  # a 2 s hole is tolerated


def test_silence_is_not_recovery_and_data_resumes_the_same_alert() -> None:
    out, st = feed([90.0] * 12)
    assert states(out) == [("pending", 1), ("opened", 10)]
    silent = on_timer(st, RULES, "dev", 12_000 + RULES.silence_ms)
    assert states(silent) == [("silent", 32)] and st.status == "silent"
    assert on_timer(st, RULES, "dev", 40_000) == []  # reported once
    more, st = feed([70.0] * 6, st, t0=40_000)
    assert states(more) == [("escalated", 41), ("resolved", 45)]
    assert {t.alert_id for t in out + silent + more} == {out[0].alert_id}


def test_replay_gives_identical_transitions() -> None:
    temps = [90.0] * 30 + [60.0] * 10
    first, _ = feed(temps)
    second, _ = feed(temps)
    assert [t.to_dict() for t in first] == [t.to_dict() for t in second]
