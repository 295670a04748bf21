"""The sustained-overheat state machine on hand-made bucket sequences (no Flink)."""

from __future__ import annotations

import math
import random

import pytest

from flink_jobs.overheat_logic import (
    DeviceState,
    OverheatRules,
    Transition,
    on_bucket,
    on_timer,
    relevant_buckets,
)

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


def burst(buckets: list[tuple[int, int, float, float]], rules: OverheatRules) -> list[Transition]:
    """A backlog read in one go: every bucket arrives before event time fires any timer."""
    st, out = DeviceState(), []
    for start, end, vmin, vmax in buckets:
        out += on_bucket(st, rules, "dev", start, end, vmin, vmax, (vmin + vmax) / 2, 2)
    return out


def test_silence_does_not_depend_on_arrival_pacing() -> None:
    # 12 s hot, then nothing for exactly silence_ms, then hot again; and a shorter pause that is no silence.
    silence_s = RULES.silence_ms // 1000
    hot = [(i * 1000, i * 1000 + 1000, 90.0, 91.0) for i in range(12)]
    resumed = [(t * 1000, t * 1000 + 1000, 90.0, 91.0) for t in range(12 + silence_s, 12 + silence_s + 3)]
    paced = run_device(hot + resumed, RULES, resumed[-1][1])
    assert [(t["state"], t["ts"]) for t in paced] == [
        ("pending", 1000), ("opened", 10_000), ("silent", 12_000 + RULES.silence_ms), ("escalated", 33_000)]
    assert [t.to_dict() for t in burst(hot + resumed, RULES)] == [
        {k: v for k, v in t.items()} for t in paced]
    # One second less of pause: the resumed bucket ends exactly at the silence point, so never silent.
    early = [(s - 1000, e - 1000, lo, hi) for s, e, lo, hi in resumed]
    assert "silent" not in [t["state"] for t in run_device(hot + early, RULES, early[-1][1])]
    assert "silent" not in [t.state for t in burst(hot + early, RULES)]


def test_replay_gives_identical_transitions() -> None:
    temps = [90.0] * 30 + [60.0] * 10
    first, _ = feed(temps)
    second, _ = feed(temps)
    assert [t.to_dict() for t in first] == [t.to_dict() for t in second]


def run_device(buckets: list[tuple[int, int, float, float]], rules: OverheatRules, horizon: int,
               kept: list[bool] | None = None) -> list[dict[str, object]]:
    """As the keyed process function runs one device: buckets in order, silence timers fired as event time
    (moved by other devices, one tick per second) passes them; ``kept`` drops buckets as the prefilter does."""
    st, timers, out = DeviceState(), set(), []
    todo = [b for i, b in enumerate(buckets) if kept is None or kept[i]]
    by_end = {b[1]: b for b in todo}
    for now in range(0, horizon + 1000, 1000):
        # Flink's window operator emits the bucket that ends at ``now`` before it forwards the watermark
        # that fires timers at ``now``: bucket first, then timers.
        if now in by_end:
            start, end, vmin, vmax = by_end[now]
            out += on_bucket(st, rules, "dev", start, end, vmin, vmax, (vmin + vmax) / 2, 2)
            if st.status == "open":
                timers.add(end + rules.silence_ms)
        for ts in sorted(t for t in timers if t <= now):
            timers.discard(ts)
            out += on_timer(st, rules, "dev", ts)
    return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in t.to_dict().items()}
            for t in out]


def random_buckets(rng: random.Random, seconds: int) -> list[tuple[int, int, float, float]]:
    """Runs of hot / hysteresis-band / cool seconds with short and long gaps, the cases the prefilter must keep."""
    out, t = [], 0
    while t < seconds:
        level = rng.choice([95.0, 95.0, 82.0, 78.0, 77.0, 70.0, 60.0, 60.0])
        for _ in range(rng.randint(1, 120 if level < 75 else 40)):
            if rng.random() < 0.08:
                t += rng.choice([2, 3, 4, 5, 12, 30, 90])  # gaps within and beyond max_gap, and silences
            vmin = level + rng.uniform(-4, 1)
            out.append((t * 1000, t * 1000 + 1000, vmin, max(vmin, level + rng.uniform(-1, 4))))
            t += 1
    return out


@pytest.mark.parametrize("seed", range(40))
def test_prefilter_keeps_every_bucket_that_matters(seed: int) -> None:
    rng = random.Random(seed)
    rules = OverheatRules(threshold=80, duration_ms=rng.choice([3_000, 10_000, 20_000]), hysteresis=rng.choice([0, 5]),
                          clear_ms=rng.choice([2_000, 5_000, 30_000]), escalate_factor=2,
                          max_gap_ms=rng.choice([2_000, 3_000, 10_000]), silence_ms=rng.choice([4_000, 20_000]))
    buckets = random_buckets(rng, 4000)
    kept = relevant_buckets(buckets, rules, 1000)
    horizon = buckets[-1][1] + 2 * rules.silence_ms
    full = run_device(buckets, rules, horizon)
    assert full, "the random walk should produce episodes"
    assert run_device(buckets, rules, horizon, kept) == full
    assert sum(kept) < len(kept), "and some buckets should be dropped"


def test_prefilter_drops_a_cool_device_and_keeps_an_episode() -> None:
    cool = [(i * 1000, i * 1000 + 1000, 60.0, 60.0) for i in range(100)]
    assert not any(relevant_buckets(cool, RULES, 1000))
    gap = [*cool[:10], *cool[20:]]  # a gap is kept with the keep window after it (an episode may go on)
    assert sum(relevant_buckets(gap, RULES, 1000)) == 1 + (5_000 + 2 * 3_000 + 2 * 1000) // 1000
    hot_then_cool = [(i * 1000, i * 1000 + 1000, *([90.0] * 2 if i < 30 else [60.0] * 2)) for i in range(100)]
    kept = relevant_buckets(hot_then_cool, RULES, 1000)
    assert all(kept[:30]) and not any(kept[70:])


def test_negative_hysteresis_is_refused() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        OverheatRules(hysteresis=-1)


def run_paced(buckets: list[tuple[int, int, float, float]], rules: OverheatRules, steps: list[int]) -> list[Transition]:
    """One device as the job runs it: event time advances in ``steps`` (watermarks, moved by every device's
    readings); at each, the SQL stage emits the buckets that end by then, and then the timers due by then
    fire. Many small steps are a trickle of live data, one big step a backlog read in one go."""
    st, out, timers, todo = DeviceState(), [], set(), list(buckets)
    for watermark in steps:
        while todo and todo[0][1] <= watermark:
            start, end, vmin, vmax = todo.pop(0)
            out += on_bucket(st, rules, "dev", start, end, vmin, vmax, (vmin + vmax) / 2, 2)
            if st.status == "open":
                timers.add(end + rules.silence_ms)
        for ts in sorted(t for t in timers if t <= watermark):
            timers.discard(ts)
            out += on_timer(st, rules, "dev", ts)
    return out


def _pacing_case(seed: int) -> tuple[list[tuple[int, int, float, float]], OverheatRules, int]:
    rng = random.Random(seed)
    cadence_s = rng.choice([1, 1, 5, 60, 300])  # seconds between readings, up to the 5-minute series
    ms = cadence_s * 1000
    rules = OverheatRules(threshold=80, duration_ms=rng.choice([3, 10, 20]) * ms, hysteresis=rng.choice([0, 5]),
                          clear_ms=rng.choice([2, 5, 30]) * ms, escalate_factor=2,
                          max_gap_ms=rng.choice([2, 3, 10]) * ms, silence_ms=rng.choice([12, 20, 40]) * ms)
    buckets = [(s * cadence_s, s * cadence_s + ms, lo, hi) for s, _e, lo, hi in random_buckets(rng, 1500)]
    return buckets, rules, buckets[-1][1] + 2 * rules.silence_ms


@pytest.mark.parametrize("seed", range(60))
def test_transitions_do_not_depend_on_arrival_pacing_at_any_cadence(seed: int) -> None:
    """A trickle (event time advancing second by second), a burst (one step to the end) and random paces
    in between, at cadences from 1 s to 5 minutes with gaps and silences, give the same transitions:
    event time decides, never how fast the data came."""
    buckets, rules, horizon = _pacing_case(seed)
    trickle = run_paced(buckets, rules, _finest(buckets, rules, horizon))
    burst_ = run_paced(buckets, rules, [horizon])
    rng = random.Random(seed)
    jitter = [run_paced(buckets, rules, [*sorted(rng.sample(range(horizon), rng.randint(1, 300))), horizon])
              for _ in range(3)]
    want = [_key(t) for t in trickle]
    for got in (burst_, *jitter):
        assert [_key(t) for t in got] == want


def test_the_pacing_cases_exercise_silence_and_every_transition() -> None:
    states: dict[str, int] = {}
    for seed in range(60):
        buckets, rules, horizon = _pacing_case(seed)
        for t in run_paced(buckets, rules, _finest(buckets, rules, horizon)):
            states[t.state] = states.get(t.state, 0) + 1
    assert set(states) == {"pending", "cancelled", "opened", "escalated", "resolved", "silent"}, states
    assert states["silent"] >= 10, states


def _finest(buckets: list[tuple[int, int, float, float]], rules: OverheatRules, horizon: int) -> list[int]:
    """The finest pacing that can matter: a step at every bucket end and at every time a timer may be due."""
    ends = [end for _start, end, _lo, _hi in buckets]
    return sorted({*ends, *(e + rules.silence_ms for e in ends), horizon})


def _key(t: Transition) -> tuple[object, ...]:
    return tuple((k, "nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in t.to_dict().items())
