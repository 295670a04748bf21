"""The sustained-condition alert lifecycle as a pure state machine (no Flink imports, unit-testable).

One rule (``OverheatRules``: the shipped overheat rule by default, any metric above or below a
threshold in general, see ``flink_jobs.sustained_rules``). Input: per-device buckets of the rule's
metric in event-time order (start, end, min, max, sum, count), as the SQL stage of
``flink_jobs.sustained_overheat`` computes them. Rules (for ``direction="below"`` read "below" for
"above", ``threshold + hysteresis`` for ``threshold - hysteresis`` and "lowest" for "peak"):
- a bucket is *hot* (in the condition) when every reading in it is above ``threshold``; the first hot
  bucket makes the alert *pending* (with ``fires_at_ms``), a break in the run before it fires
  *cancels* it, and a run of hot buckets with no gap longer than ``max_gap_ms`` that spans at least
  ``duration_ms`` opens it;
- an open alert escalates once it has lasted ``escalate_factor`` x ``duration_ms``;
- it resolves when the device has stayed below ``threshold - hysteresis`` (every reading) for
  ``clear_ms``;
- if no bucket arrives for ``silence_ms`` of event time while it is open, it is reported *silent*
  (not resolved) at ``last bucket end + silence_ms``, exactly when the next bucket ends later than that,
  however the readings were paced; it stays active and goes on when data resumes. Event time is moved by the other
  devices' readings: when every device stops sending, the watermark (and so silence) stands still.
Each transition is one record with a stable alert id (rule kind + device + start of the hot run), so
replays produce identical records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from machinewatch.record import make_event_id


@dataclass(frozen=True)
class OverheatRules:
    threshold: float = 80.0
    duration_ms: int = 60_000
    hysteresis: float = 5.0
    clear_ms: int = 30_000
    escalate_factor: float = 2.0
    max_gap_ms: int = 10_000
    silence_ms: int = 60_000
    direction: str = "above"  # above | below: which side of the threshold is the condition
    kind: str = "sustained_overheat"  # the alerts' kind (and part of their ids): sustained_<rule name>
    metric: str = "temperature"

    def __post_init__(self) -> None:
        # A negative hysteresis would make a bucket both hot and cool; the SQL prefilter relies on it too.
        if self.hysteresis < 0:
            msg = f"hysteresis must be >= 0, got {self.hysteresis}"
            raise ValueError(msg)
        if self.direction not in ("above", "below"):
            msg = f"direction must be 'above' or 'below', got {self.direction!r}"
            raise ValueError(msg)

    @property
    def above(self) -> bool:
        return self.direction == "above"

    def hot(self, vmin: float, vmax: float) -> bool:
        """Every reading of the bucket is in the condition (strictly beyond the threshold)."""
        return vmin > self.threshold if self.above else vmax < self.threshold

    def cool(self, vmin: float, vmax: float) -> bool:
        """Every reading of the bucket is clear of the condition by more than the hysteresis."""
        return vmax < self.threshold - self.hysteresis if self.above else vmin > self.threshold + self.hysteresis

    @property
    def clear_line(self) -> float:
        """The value a reading must be beyond (below for 'above' rules) to count as clear."""
        return self.threshold - self.hysteresis if self.above else self.threshold + self.hysteresis

    def extreme(self, vmin: float, vmax: float) -> float:
        """The bucket's value furthest into the condition: the episode's peak is the extreme of these."""
        return vmax if self.above else vmin

    def further(self, a: float, b: float) -> float:
        return max(a, b) if self.above else min(a, b)

    @property
    def no_peak(self) -> float:
        return float("-inf") if self.above else float("inf")


@dataclass
class DeviceState:
    status: str = "normal"  # normal | open | silent
    run_start: int | None = None
    cool_start: int | None = None
    last_end: int | None = None
    alert_id: str = ""
    escalated: bool = False
    ep_sum: float = 0.0
    ep_count: int = 0
    ep_peak: float = float("-inf")
    region: str = ""
    site: str = ""
    gaps_in_row: int = 0  # consecutive buckets after a gap (the job warns when a device is too sparse)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Transition:
    alert_id: str
    state: str  # pending | cancelled | opened | escalated | resolved | silent
    device_id: str
    ts: int
    started_ms: int
    duration_ms: int
    avg: float
    peak: float
    threshold: float
    severity: str
    region: str = ""
    site: str = ""
    fires_at_ms: int | None = None
    kind: str = field(default="sustained_overheat")
    metric: str = "temperature"
    direction: str = "above"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _emit(st: DeviceState, rules: OverheatRules, device: str, state: str, ts: int) -> Transition:
    assert st.run_start is not None
    severity = "critical" if st.escalated else "warning"
    if state in ("resolved", "pending", "cancelled"):
        severity = "info"
    return Transition(
        alert_id=st.alert_id, state=state, device_id=device, ts=ts, started_ms=st.run_start,
        duration_ms=ts - st.run_start, avg=st.ep_sum / st.ep_count if st.ep_count else float("nan"),
        peak=st.ep_peak, threshold=rules.threshold, severity=severity, region=st.region, site=st.site,
        fires_at_ms=st.run_start + rules.duration_ms if state == "pending" else None, kind=rules.kind,
        metric=rules.metric, direction=rules.direction,
    )


def on_bucket(
    st: DeviceState, rules: OverheatRules, device: str, start: int, end: int,
    vmin: float, vmax: float, vsum: float, count: int,
) -> list[Transition]:
    """Advance the device's state by one bucket; returns the transitions it causes."""
    out: list[Transition] = []
    if st.status == "open" and st.last_end is not None and st.last_end + rules.silence_ms < end:
        # Event time passed the silence point before this bucket closed: the device *was* silent, whether
        # or not the timer fired before this bucket arrived (that depends only on how fast the watermark
        # moved, e.g. a backlog read in one burst). Reporting it here makes the answer independent of
        # arrival pacing; the timer, if it fires later, finds the device active again.
        out += on_timer(st, rules, device, st.last_end + rules.silence_ms)
    hot = rules.hot(vmin, vmax)
    cool = rules.cool(vmin, vmax)
    if st.last_end is not None and start - st.last_end > rules.max_gap_ms:
        # No readings for too long: "continuously hot" (or cool) cannot be claimed across the gap.
        if st.status == "normal" and st.run_start is not None:
            out.append(_emit(st, rules, device, "cancelled", st.last_end))
            st.run_start = None
        st.cool_start = None
    st.last_end = end
    if st.status == "normal":
        if not hot:
            if st.run_start is not None:
                out.append(_emit(st, rules, device, "cancelled", end))
            st.run_start = None
            return out
        if st.run_start is None:
            st.run_start, st.ep_sum, st.ep_count, st.ep_peak = start, 0.0, 0, rules.no_peak
            st.alert_id = make_event_id(rules.kind, device, start)
            if end - start < rules.duration_ms:
                st.ep_sum, st.ep_count, st.ep_peak = vsum, count, rules.extreme(vmin, vmax)
                out.append(_emit(st, rules, device, "pending", end))
                return out
        st.ep_sum += vsum
        st.ep_count += count
        st.ep_peak = rules.further(st.ep_peak, rules.extreme(vmin, vmax))
        if end - st.run_start >= rules.duration_ms:
            st.status = "open"
            out.append(_emit(st, rules, device, "opened", end))
        return out
    # open or silent: the episode goes on (data after a silence resumes it)
    st.status = "open"
    st.ep_sum += vsum
    st.ep_count += count
    st.ep_peak = rules.further(st.ep_peak, rules.extreme(vmin, vmax))
    assert st.run_start is not None
    if not st.escalated and end - st.run_start >= rules.escalate_factor * rules.duration_ms:
        st.escalated = True
        out.append(_emit(st, rules, device, "escalated", end))
    if cool:
        if st.cool_start is None:
            st.cool_start = start
        if end - st.cool_start >= rules.clear_ms:
            out.append(_emit(st, rules, device, "resolved", end))
            st.__dict__.update(DeviceState(region=st.region, site=st.site, last_end=end).__dict__)
    else:
        st.cool_start = None
    return out


def on_timer(st: DeviceState, rules: OverheatRules, device: str, now: int) -> list[Transition]:
    """Event time reached ``now`` with no new bucket: an open alert whose device went quiet is silent."""
    if st.status == "open" and st.last_end is not None and now - st.last_end >= rules.silence_ms:
        st.status = "silent"
        return [_emit(st, rules, device, "silent", now)]
    return []


def keep_window_ms(rules: OverheatRules, bucket_ms: int) -> int:
    """How far back a not-cool or after-gap bucket keeps a device's buckets relevant (see below)."""
    return rules.clear_ms + 2 * rules.max_gap_ms + 2 * bucket_ms


def relevant_buckets(
    buckets: list[tuple[int, int, float, float]], rules: OverheatRules, bucket_ms: int,
) -> list[bool]:
    """Which of one device's buckets (start, end, vmin, vmax), in order, can change its state.

    The reference for flink_jobs/sql/overheat_prefilter.sql. A bucket is a *marker* when it is not
    cool or follows a gap longer than ``max_gap_ms`` (a device's first bucket follows none); a bucket
    is relevant when a marker ended within ``keep_window_ms`` before it (itself included). Why that is
    exact: a cool bucket with no episode pending or open only moves ``last_end``, which nothing reads
    outside an episode; and inside one, the episode resolves within clear + max gap + bucket of the
    first cool bucket after the last marker, which starts at most max gap after that marker ends.
    tests/unit/test_overheat_logic.py checks that the kept buckets give the same transitions as all.
    """
    keep = keep_window_ms(rules, bucket_ms)
    near = rules.max_gap_ms + bucket_ms
    markers: list[int] = []
    out = []
    prev_end: int | None = None
    for _start, end, vmin, vmax in buckets:
        after_gap = prev_end is not None and end - prev_end > near
        if not rules.cool(vmin, vmax) or after_gap:
            markers.append(end)
        out.append(bool(markers) and end - markers[-1] <= keep)
        prev_end = end
    return out
