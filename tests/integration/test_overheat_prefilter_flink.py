"""The SQL prefilter of sustained-overheat, run in Flink, gives the transitions of the Python reference.

``flink_jobs/sql/overheat_prefilter.sql`` drops the buckets it deems unable to change an alert; the claim is
that this is exact. For a few rule sets, random devices (fixed seeds: hot runs, dips, hysteresis-band runs,
mixed and edge-valued buckets, gaps shorter and longer than the max gap, silences, devices that start late or
stop for good) go to the real job with the prefilter on and, at the same time, off. Each job's transitions,
device by device, in order and field by field, must equal those of ``overheat_logic`` run here on *all*
buckets (bucketed as the SQL does). A second test builds the job from mutated prefilters (a narrower keep
window; no gap rule) and requires the comparison to see the difference.

Event time is made deterministic on purpose. A silence timer fires once the watermark has passed it, and
after a burst the watermark may pass it only after the device's next buckets were processed, so 'silent'
depends on arrival pacing (issue 15, item 4). Here readings go out in phases: at the end of each phase every
device but a 'tick' device is quiet for longer than the silence time, and the next phase is published only
once both jobs reported the silence of a 'clock' device, whose timer is the phase's last; while waiting, the
source is kept busy at the phase's latest event time, because an idle source can make the job lose a watermark
(see ``await_clock``). Within a phase no device is quiet that long, so no silence decision depends on how fast
the job reads (``reference`` checks it). One partition per topic, so no idle partition can overtake another
(issue 15, item 3).
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from kafka import KafkaConsumer

from flink_jobs import sustained_overheat
from flink_jobs.overheat_logic import (
    DeviceState,
    OverheatRules,
    keep_window_ms,
    on_bucket,
    on_timer,
    relevant_buckets,
)
from machinewatch import jobs
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import Reading, make_event_id
from machinewatch.stack import Stack
from tests.stack_support import create_topics

pytestmark = pytest.mark.integration

MUTANT_JOB = Path(__file__).with_name("overheat_prefilter_mutant_job.py")
SOURCE = "prefilter-test"

# Rule sets as the MW_OVERHEAT_* settings the job reads (whole seconds), each with its own seed.
RULE_SETS: dict[str, dict[str, Any]] = {
    # the unit tests' rules: short duration and clear, a 5 degree band, max gap 3 s
    "a": {"overheat_threshold_c": 80.0, "overheat_duration_s": 10, "overheat_hysteresis_c": 5.0,
          "overheat_clear_s": 5, "overheat_escalate_factor": 2.0, "overheat_max_gap_s": 3,
          "overheat_silence_s": 20, "overheat_bucket_s": 1},
    # no band (cool = below the threshold), silence shorter than the duration, escalation at 1.5x
    "b": {"overheat_threshold_c": 60.5, "overheat_duration_s": 20, "overheat_hysteresis_c": 0.0,
          "overheat_clear_s": 8, "overheat_escalate_factor": 1.5, "overheat_max_gap_s": 5,
          "overheat_silence_s": 12, "overheat_bucket_s": 1},
    # 2 s buckets, a wide band, clear longer than the duration, escalation at 3x
    "c": {"overheat_threshold_c": 90.0, "overheat_duration_s": 8, "overheat_hysteresis_c": 7.5,
          "overheat_clear_s": 12, "overheat_escalate_factor": 3.0, "overheat_max_gap_s": 2,
          "overheat_silence_s": 10, "overheat_bucket_s": 2},
}
SEEDS = {"a": 1301, "b": 1302, "c": 1303}
DEVICES = 30  # random devices per rule set, besides the clock and the tick
PHASES = 5


@dataclass(frozen=True)
class Bucket:
    start: int
    end: int
    vmin: float
    vmax: float
    vsum: float
    n: int
    region: str
    site: str


@dataclass
class Scenario:
    rules: OverheatRules
    bucket_ms: int
    t0: int
    phases: list[list[Reading]]  # published one after the other, each in this order
    barriers: list[tuple[int, int]]  # the watermark once a phase is read: within [low, high]
    clock: str
    clock_silent: list[int]  # event time of the clock's silence at the end of each phase
    last_ts: list[int]  # the latest event time of each phase (the tick's last reading)

    def buckets(self) -> dict[str, list[Bucket]]:
        """Per device, its temperature buckets in order, as overheat_buckets.sql computes them (TUMBLE from epoch)."""
        groups: dict[tuple[str, int], list[Reading]] = defaultdict(list)
        for phase in self.phases:
            for r in phase:
                if r.metric == "temperature":
                    groups[(r.device_id, r.ts - r.ts % self.bucket_ms)].append(r)
        out: dict[str, list[Bucket]] = defaultdict(list)
        for (device, start), rs in sorted(groups.items()):
            values = [r.value for r in rs]
            # values are multiples of 1/4: every sum is exact, whatever order Flink adds them in
            out[device].append(Bucket(start, start + self.bucket_ms, min(values), max(values), sum(values), len(rs),
                                      max(r.region for r in rs), max(r.site for r in rs)))
        return dict(out)


def job_settings(settings: Settings, rule_set: str, **extra: object) -> Settings:
    # parallelism 1: one source reader and one lifecycle operator, so the clock's silence proves the watermark
    return settings.model_copy(update={**RULE_SETS[rule_set], "flink_parallelism": 1, **extra})


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def scenario(s: Settings, seed: int, prefix: str, now_s: int) -> Scenario:
    """Random devices in phases; each phase ends with every device but the tick quiet for longer than the silence."""
    rules = sustained_overheat.rules_from(s)
    rng = random.Random(seed)
    b = s.overheat_bucket_ms // 1000  # the rule sets' buckets are whole seconds
    thr, hyst = rules.threshold, rules.hysteresis
    gap_s, silence_s, dur_s, clear_s = (rules.max_gap_ms // 1000, rules.silence_ms // 1000,
                                        rules.duration_ms // 1000, rules.clear_ms // 1000)
    # every timer of a phase (at most silence after its last bucket) is behind the watermark its tick reaches
    quiet_s = _round_up(silence_s + 2 * b + 6, b)
    active_s = _round_up(max(90, 6 * dur_s), b)
    phase_s = active_s + quiet_s
    t0 = (now_s - PHASES * phase_s - 120) // 2 * 2 * 1000  # recent (topic retention), whole 2 s (bucket bounds)
    phases: list[list[tuple[int, Reading]]] = [[] for _ in range(PHASES)]
    seq = 0

    def add(k: int, device: str, second: int, offset_ms: int, value: float, region: str, site: str,
            metric: str = "temperature") -> None:
        nonlocal seq
        seq += 1
        ts = t0 + second * 1000 + offset_ms
        reading = Reading(source=SOURCE, device_id=device, metric=metric, value=value, unit="°C", ts=ts,
                          event_id=make_event_id(SOURCE, device, seq), region=region, site=site)
        # published out of order by up to 0.8 s, well within the watermark delay: nothing is late
        phases[k].append((ts + rng.randrange(800), reading))

    def value(kind: str) -> float:
        if kind == "hot":
            return thr + 0.25 * rng.randint(1, 48)
        if kind == "band":  # neither hot nor cool: threshold - hysteresis <= v <= threshold
            return thr - 0.25 * rng.randint(0, int(hyst * 4))
        if kind == "cool":
            return thr - hyst - 0.25 * rng.randint(1, 100)
        if kind == "edge":
            return rng.choice([thr, thr + 0.25, thr - hyst, thr - hyst - 0.25])
        return value(rng.choice(["hot", "band", "cool"]))  # mixed: one second's readings on both sides

    def hole() -> int:
        """Seconds without readings inside a phase: around the max gap, and up to the longest hole after which
        the next bucket ends no later than the silence timer of the last one (a longer one is a phase end)."""
        longest = silence_s - b
        choice = rng.choice([*range(1, gap_s + 2), gap_s + b + 1, longest, 0])
        return choice or rng.randint(gap_s + 2, longest)

    lengths: dict[str, Callable[[], int]] = {
        "hot": lambda: rng.randint(1, int(2.5 * dur_s) + 2),
        "band": lambda: rng.randint(1, clear_s + 2),
        "cool": lambda: rng.randint(1, rng.choice([3 * clear_s + 4, 60])),
        "mixed": lambda: rng.randint(1, 4),
        "edge": lambda: rng.randint(1, 6),
    }

    def tight_episode(k: int, device: str, t: int, end: int, region: str, site: str) -> int:
        """An episode that resolves as late after its last not-cool bucket as the rules allow: a hot run, a
        hole of the max gap, cool for one bucket less than the clear time, again the max gap, then cool. The
        resolving bucket ends clear + 2 x max gap after the last hot one: a keep window shorter than that
        loses it (keep_window_ms adds two buckets of slack, so it needs to be a little shorter still)."""
        hot = _round_up(rng.randint(dur_s, 2 * dur_s), b)
        t = _round_up(t, b)
        if t + hot + 2 * gap_s + clear_s + 3 * b > end:
            return end
        seconds = [*range(t, t + hot)]
        t += hot + gap_s
        cool = [*range(t, t + clear_s - b)]
        t += clear_s - b + gap_s
        cool += range(t, t + rng.randint(1, 3) * b)
        for second, kind in [*((x, "hot") for x in seconds), *((x, "cool") for x in cool)]:
            for offset in sorted(rng.sample(range(1000), rng.choice([1, 2]))):
                add(k, device, second, offset, value(kind), region, site)
        return cool[-1] + 1

    kinds = [*lengths, "tight"]
    for i in range(DEVICES):
        # most devices are mostly cool (the prefilter's business), a third run hot often
        weights = [4, 2, 4, 1, 1, 1] if i % 3 == 0 else [1, 1, 8, 0.5, 0.5, 0.3]
        device, region, site = f"{prefix}-d{i:02d}", f"r{i % 3}", f"s{i % 5}"
        first = 0 if rng.random() < 0.75 else rng.randrange(1, PHASES)  # some start late
        last = PHASES - 1 if rng.random() < 0.7 else rng.randrange(first, PHASES)  # some stop for good
        for k in range(first, last + 1):
            if first < k < last and rng.random() < 0.15:
                continue  # quiet for a whole phase
            t, end = k * phase_s + rng.randrange(10), k * phase_s + active_s
            while t < end:
                kind = rng.choices(kinds, weights)[0]
                if kind == "tight":
                    t = tight_episode(k, device, t, end, region, site)
                    continue
                for _ in range(lengths[kind]()):
                    if rng.random() < 0.07:
                        t += hole()
                    if t >= end:
                        break
                    for offset in sorted(rng.sample(range(1000), rng.choice([1, 1, 2, 3]))):
                        add(k, device, t, offset, value(kind), region, site)
                    if rng.random() < 0.15:  # another metric: moves the watermark, never a bucket
                        add(k, device, t, 999, thr + 50, region, site, metric="vibration")
                    t += 1
    # The clock is hot through every phase's active part (one bucket longer than any device), so its silence
    # timer is each phase's last; the tick is cool and never stops, and moves the watermark past that timer.
    clock, tick = f"{prefix}-clock", f"{prefix}-tick"
    clock_silent, barriers, last_ts = [], [], []
    for k in range(PHASES):
        for second in range(k * phase_s, k * phase_s + active_s + b):
            add(k, clock, second, 300, thr + 5, "clock", "clock")
        for second in range(k * phase_s, (k + 1) * phase_s):
            add(k, tick, second, 500, thr - hyst - 20, "tick", "tick")
        clock_silent.append(t0 + (k * phase_s + active_s + b) * 1000 + rules.silence_ms)
        last_ts.append(t0 + ((k + 1) * phase_s - 1) * 1000 + 500)
        barriers.append((last_ts[-1] - s.watermark_delay_ms - 1, last_ts[-1] - s.watermark_delay_ms))
        assert clock_silent[-1] <= barriers[-1][0], "the tick must move the watermark past the clock's silence"
    return Scenario(rules, b * 1000, t0, [[r for _, r in sorted(p, key=lambda x: x[0])] for p in phases],
                    barriers, clock, clock_silent, last_ts)


def lifecycle(buckets: list[Bucket], rules: OverheatRules, device: str, barriers: list[tuple[int, int]],
              problems: list[str] | None = None) -> list[dict[str, Any]]:
    """One device through overheat_logic as the keyed function runs it, with timers in event-time order.

    A bucket reaches the function once the watermark passed its row time (end - 1 ms); a timer fires once the
    watermark reached it. So timers up to the row time fire after the bucket, whatever the pacing; a timer
    before it fires first only if the watermark stopped in between: here only at a phase end. A silence that
    needs such a stop elsewhere is reported in ``problems`` (its outcome would depend on arrival pacing).
    """
    st, out = DeviceState(), []
    timers: set[int] = set()

    def fire(until: int | None) -> None:
        for ts in sorted(t for t in timers if until is None or t < until):
            timers.discard(ts)
            fired = on_timer(st, rules, device, ts)
            if fired and until is not None and problems is not None and not any(
                ts <= low and high < until for low, high in barriers
            ):
                problems.append(f"{device}: silent at {ts} before a bucket at row time {until} in the same phase")
            out.extend(fired)

    for bk in buckets:
        fire(bk.end - 1)
        st.region, st.site = bk.region, bk.site
        out += on_bucket(st, rules, device, bk.start, bk.end, bk.vmin, bk.vmax, bk.vsum, bk.n)
        if st.status == "open":
            timers.add(bk.end + rules.silence_ms)
    if problems is not None and timers and max(timers) > barriers[-1][0]:
        problems.append(f"{device}: a timer at {max(timers)} is beyond the final watermark {barriers[-1][0]}")
    fire(None)
    # as the job writes them: JSON of Transition.to_dict()
    return [json.loads(json.dumps(t.to_dict(), allow_nan=False, default=str)) for t in out]


def reference(scn: Scenario, problems: list[str] | None = None,
              keep: Callable[[list[Bucket]], list[Bucket]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per device, the transitions of overheat_logic on all buckets (or on those ``keep`` selects)."""
    out = {}
    for device, buckets in scn.buckets().items():
        transitions = lifecycle(keep(buckets) if keep else buckets, scn.rules, device, scn.barriers, problems)
        if transitions:
            out[device] = transitions
    return out


def sql_prefilter(scn: Scenario, keep_ms: int | None = None, gap_rule: bool = True
                  ) -> Callable[[list[Bucket]], list[Bucket]]:
    """overheat_prefilter.sql in Python (or a mutant of it): to measure what the input can catch, not the job."""
    rules = scn.rules
    keep_ms = keep_window_ms(rules, scn.bucket_ms) if keep_ms is None else keep_ms
    near_ms, cool_below = rules.max_gap_ms + scn.bucket_ms, rules.threshold - rules.hysteresis

    def keep(buckets: list[Bucket]) -> list[Bucket]:
        kept, last_warm, last_gap, prev_end = [], None, None, None
        for bk in buckets:
            if bk.vmax >= cool_below:
                last_warm = bk.end
            if gap_rule and prev_end is not None and bk.end - prev_end > near_ms:
                last_gap = bk.end
            prev_end = bk.end
            if any(m is not None and bk.end - m <= keep_ms for m in (last_warm, last_gap)):
                kept.append(bk)
        return kept

    return keep


def differences(scn: Scenario, want: dict[str, list[dict[str, Any]]], got: dict[str, list[dict[str, Any]]]
                ) -> list[str]:
    """Per device that differs: counts and the first differing transition (times in s since the scenario's t0)."""

    def show(t: dict[str, Any] | None, fields: list[str]) -> str:
        if t is None:
            return "nothing"
        return f"{t['state']}@{(t['ts'] - scn.t0) / 1000:g}s " + ", ".join(f"{k}={t.get(k)!r}" for k in fields)

    out = []
    for device in sorted(set(want) | set(got)):
        w, g = want.get(device, []), got.get(device, [])
        if w == g:
            continue
        i = next((i for i, (x, y) in enumerate(zip(w, g, strict=False)) if x != y), min(len(w), len(g)))
        x, y = (w[i] if i < len(w) else None), (g[i] if i < len(g) else None)
        fields = sorted(k for k in set(x or {}) | set(y or {}) if (x or {}).get(k) != (y or {}).get(k))
        out.append(f"{device}: {len(w)} transitions expected, {len(g)} from the job; #{i}: expected "
                   f"{show(x, fields)}; job {show(y, fields)}")
    return out


@dataclass
class Variant:
    name: str
    settings: Settings
    job: str = "sustained-overheat"
    args: list[str] = field(default_factory=list)


def wait_for_free_slots(settings: Settings, count: int, seconds: float = 120) -> None:
    deadline, available = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        try:
            available = int(requests.get(f"{settings.flink_rest}/overview", timeout=10).json()["slots-available"])
        except (requests.RequestException, KeyError, ValueError):
            available = 0  # a slow answer: ask again
        if available >= count:
            return
        time.sleep(1)
    pytest.fail(f"{count} free Flink task slots needed for this test's jobs, {available} after {seconds:.0f}s")


def job_trouble(settings: Settings, job_names: dict[str, str]) -> str | None:
    """A job of ours that is no longer running, with Flink's root exception; None if all run (or no answer)."""
    try:
        listed = {j["name"]: j for j in jobs.list_jobs(settings)}
        for name in job_names.values():
            job = listed.get(name)
            if job and job["state"] in {"FAILED", "CANCELED", "FINISHED"}:
                exc = requests.get(f"{settings.flink_rest}/jobs/{job['jid']}/exceptions", timeout=10).json()
                return f"job {name} is {job['state']}: {str(exc.get('root-exception'))[:3000]}"
    except requests.RequestException:
        return None
    return None


def lifecycle_watermarks(settings: Settings, job_names: dict[str, str]) -> dict[str, object]:
    """The input watermark of each job's lifecycle operator (for a failure message; best effort)."""
    out: dict[str, object] = {}
    try:
        listed = {j["name"]: j["jid"] for j in jobs.list_jobs(settings) if j["state"] == "RUNNING"}
        for name, job_name in job_names.items():
            jid = listed.get(job_name)
            for v in jobs.job_detail(settings, jid)["vertices"] if jid else []:
                if "lifecycle" in v["name"]:
                    marks = requests.get(f"{settings.flink_rest}/jobs/{jid}/vertices/{v['id']}/watermarks",
                                         timeout=10).json()
                    out[name] = [m["value"] for m in marks]
    except requests.RequestException as exc:
        out["error"] = repr(exc)
    return out


def run_jobs(settings: Settings, scn: Scenario, variants: list[Variant], run: str
             ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Run each variant's job on the scenario's readings, phase by phase; per variant, per device, its alerts."""
    readings_topic = f"mw.test-{run}.readings"
    alerts = {v.name: f"mw.test-{run}.alerts-{v.name}" for v in variants}
    job_names = {v.name: f"mw-prefilter-{run}-{v.name}" for v in variants}
    create_topics(settings.model_copy(update={"kafka_partitions": 1}), [readings_topic, *alerts.values()])
    wait_for_free_slots(settings, len(variants))
    got: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    consumers: dict[str, KafkaConsumer] = {}

    def submit(v: Variant) -> str:
        return jobs.submit(v.settings, v.job, [
            *v.args, "--readings-topic", readings_topic, "--alerts-topic", alerts[v.name],
            "--group-id", f"g-{run}-{v.name}", "--job-name", job_names[v.name],
        ])

    def poll() -> None:
        for name, consumer in consumers.items():
            for records in consumer.poll(timeout_ms=200).values():
                got[name] += [json.loads(m.value) for m in records]

    def await_clock(pub: Publisher, k: int, seconds: float) -> None:
        want = (scn.clock, "silent", scn.clock_silent[k])
        deadline, checked, beats = time.monotonic() + seconds, time.monotonic(), 0
        while True:
            # Keep the source busy while waiting, at the phase's latest event time (the watermark stays). The
            # job's Python key_by operator holds a watermark back while a bundle is in flight but passes an
            # idle status on at once; if the source goes idle first (table.exec.source.idle-timeout), the held
            # watermark is emitted into an idle output, which drops it, and the lifecycle's timers wait for the
            # next phase's data (seen on a loaded machine: the lifecycle stuck at t0 + 0.6 s for minutes).
            beats += 1
            pub.send(Reading(source=SOURCE, device_id=f"{scn.clock}-beat", metric="heartbeat", value=0.0, unit="",
                             ts=scn.last_ts[k], event_id=make_event_id(SOURCE, run, k, beats)))
            pub.flush()
            poll()
            missing = [n for n, rs in got.items()
                       if not any((r["device_id"], r["state"], r["ts"]) == want for r in rs)]
            if not missing:
                return
            if time.monotonic() - checked > 15:
                checked = time.monotonic()
                trouble = job_trouble(settings, job_names)
                if trouble:
                    pytest.fail(trouble)
            if time.monotonic() > deadline:
                pytest.fail(f"phase {k}: no silence of the clock at {want[2]} from {missing} within {seconds:.0f}s "
                            f"({ {n: len(rs) for n, rs in got.items()} } alerts so far; lifecycle input watermarks "
                            f"{lifecycle_watermarks(settings, job_names)}, want >= {want[2]})")

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(len(variants)) as pool:
            list(pool.map(submit, variants))
        submitted = time.monotonic()
        consumers = {name: KafkaConsumer(topic, **settings.kafka_client_config(), auto_offset_reset="earliest",
                                         group_id=f"read-{run}-{name}") for name, topic in alerts.items()}
        with Publisher(settings, topic=readings_topic) as pub:
            for k, phase in enumerate(scn.phases):
                pub.send_many(phase)
                pub.flush()
                # the first phase also waits for the jobs to start
                await_clock(pub, k, 300 if k == 0 else 120)
        end = time.monotonic() + 3  # anything after the last timer would be a duplicate or an extra
        while time.monotonic() < end:
            poll()
        print(f"{', '.join(job_names.values())}: submitted in {submitted - started:.0f}s, "  # shown with -s
              f"{len(scn.phases)} phases read in {end - 3 - submitted:.0f}s")
    finally:
        for consumer in consumers.values():
            consumer.close()
        for name in job_names.values():
            for job in jobs.running(settings, name):
                jobs.cancel(settings, job["jid"])
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, records in got.items():
        per_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            per_device[r["device_id"]].append(r)
        out[name] = dict(per_device)
    return out


def new_scenario(settings: Settings, rule_set: str, run: str) -> Scenario:
    return scenario(job_settings(settings, rule_set), SEEDS[rule_set], f"pf{run}{rule_set}", int(time.time()))


@pytest.mark.parametrize("rule_set", sorted(RULE_SETS))
def test_the_random_input_covers_what_the_prefilter_must_keep(settings: Settings, rule_set: str) -> None:
    """The input itself (no stack): pacing-free, every kind of transition, and able to catch a wrong prefilter."""
    scn = new_scenario(settings, rule_set, "x")
    problems: list[str] = []
    want = reference(scn, problems)
    assert not problems, "silences whose outcome would depend on arrival pacing:\n" + "\n".join(problems[:20])
    states = [t["state"] for ts in want.values() for t in ts]
    assert {"pending", "cancelled", "opened", "escalated", "resolved", "silent"} <= set(states)
    resumed = [d for d, ts in want.items() for a, b in itertools.pairwise(ts)
               if a["state"] == "silent" and b["alert_id"] == a["alert_id"]]
    assert resumed, "some alert should go on after a silence"
    assert any(ts[-1]["state"] == "silent" for d, ts in want.items() if d != scn.clock), "and some device stop for good"
    # The Python model of the SQL: the same as overheat_logic.relevant_buckets, exact here too, and dropping much.
    exact = sql_prefilter(scn)
    buckets = scn.buckets()
    for bs in buckets.values():
        model = relevant_buckets([(bk.start, bk.end, bk.vmin, bk.vmax) for bk in bs], scn.rules, scn.bucket_ms)
        assert exact(bs) == [bk for bk, k in zip(bs, model, strict=True) if k]
    assert reference(scn, keep=exact) == want
    kept, total = sum(len(exact(bs)) for bs in buckets.values()), sum(len(bs) for bs in buckets.values())
    assert kept < 0.8 * total, f"the prefilter should drop a good share of buckets, keeps {kept} of {total}"
    # Mutants of the SQL keep window change the transitions of this input. keep_window_ms has two buckets of
    # slack (an episode resolves at most clear + 2 x max gap after its last marker), so the shortest keep
    # window that must lose something is 1 s shorter than that: 3 s less with 1 s buckets.
    short = keep_window_ms(scn.rules, scn.bucket_ms) - 2 * scn.bucket_ms - 1000
    for name, mutant in {f"keep {short} ms": sql_prefilter(scn, short),
                         "no gap rule": sql_prefilter(scn, gap_rule=False)}.items():
        assert differences(scn, want, reference(scn, keep=mutant)), f"the input cannot catch the mutant '{name}'"


@pytest.mark.parametrize("rule_set", sorted(RULE_SETS))
def test_sql_prefilter_in_flink_gives_the_reference_transitions(stack: Stack, settings: Settings,
                                                                 rule_set: str) -> None:
    run = uuid.uuid4().hex[:8]
    scn = new_scenario(settings, rule_set, run)
    problems: list[str] = []
    want = reference(scn, problems)
    assert not problems, problems[:20]
    got = run_jobs(settings, scn, [Variant("on", job_settings(settings, rule_set, overheat_prefilter=True)),
                                   Variant("off", job_settings(settings, rule_set, overheat_prefilter=False))], run)
    report = {name: differences(scn, want, got[name]) for name in ("on", "off")}
    n = sum(len(ts) for ts in want.values())
    assert report == {"on": [], "off": []}, (
        f"rule set {rule_set} ({scn.rules}), {n} reference transitions on {len(want)} devices, t0={scn.t0}:\n"
        + "\n".join(f"prefilter {name}: {line}" for name, lines in report.items() for line in lines[:15]))


def test_a_mutated_sql_keep_window_is_caught(stack: Stack, settings: Settings, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The same comparison against jobs built from broken copies of overheat_prefilter.sql must fail."""
    original = (sustained_overheat.SQL_DIR / "overheat_prefilter.sql").read_text()
    mutants = {
        "keep3s": original.replace("<= {keep_ms}", "<= {keep_ms} - 3000"),  # keep window 3 s too short
        "nogap": original.replace(" OR end_ms - last_gap_end <= {keep_ms}", ""),  # buckets after a gap not kept
    }
    variants = []
    for name, text in mutants.items():
        assert text != original, f"mutation {name} no longer applies to overheat_prefilter.sql: update this test"
        sql_dir = tmp_path / name
        sql_dir.mkdir()
        (sql_dir / "overheat_prefilter.sql").write_text(text)
        shutil.copy(sustained_overheat.SQL_DIR / "overheat_buckets.sql", sql_dir)
        variants.append(Variant(name, job_settings(settings, "a"), "sustained-overheat-mutant",
                                ["--sql-dir", str(sql_dir)]))
    monkeypatch.setitem(jobs.JOBS, "sustained-overheat-mutant", MUTANT_JOB)
    run = uuid.uuid4().hex[:8]
    scn = new_scenario(settings, "a", run)
    want = reference(scn)
    got = run_jobs(settings, scn, variants, run)
    for name in mutants:
        found = differences(scn, want, got[name])
        assert found, f"the job with the mutated prefilter '{name}' gave the reference's transitions"
        print(f"mutant {name}: {len(found)} devices differ, e.g. {found[0]}")  # shown with -s

