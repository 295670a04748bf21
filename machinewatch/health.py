"""The pipeline's own health, read from the servers: consumer lag per group (Kafka), each Flink job's state,
restarts and last checkpoint age (Flink REST API), dead letters of the last hour per source and reason (the
dead-letter topic), and when data last arrived from each source (InfluxDB).

``machinewatch stack status`` prints it (``report_lines``); the dashboard's Pipeline page shows it. Each
part is read on its own: a server that does not answer becomes a line saying so, not a failure of the rest.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.quality import reason_class

DEAD_LETTER_SPAN = timedelta(hours=1)
# Letters read at most per look; a flood is reported as "at least" this many rather than read for minutes.
DEAD_LETTER_LIMIT = 100_000
# Sources silent for longer than this are not listed at all (the query looks back this far).
SOURCE_LOOKBACK = timedelta(days=1)
# Job states that are not a problem; any other (FAILING, RESTARTING, FAILED, ...) is flagged.
HEALTHY_JOB_STATES = ("RUNNING", "FINISHED", "CREATED", "INITIALIZING")


@dataclass(frozen=True)
class GroupLag:
    """A consumer group: messages on its topics after its committed offsets."""

    group: str
    state: str
    topics: tuple[str, ...]
    lag: int


@dataclass(frozen=True)
class JobHealth:
    """A Flink job: its state, restarts and how long ago its last checkpoint completed (None: none yet)."""

    jid: str
    name: str
    state: str
    restarts: int | None
    checkpoints: int | None
    checkpoint_age_s: float | None

    @property
    def healthy(self) -> bool:
        return self.state in HEALTHY_JOB_STATES


@dataclass(frozen=True)
class DeadLetters:
    """Letters of one source and reason class in the span."""

    source: str
    reason: str
    count: int
    last: datetime


@dataclass(frozen=True)
class SourceSeen:
    """When the newest window of a source's readings ended (event time), and whether that is too long ago."""

    source: str
    last: datetime
    age_s: float
    stale: bool


@dataclass
class PipelineHealth:
    groups: list[GroupLag] = field(default_factory=list)
    jobs: list[JobHealth] = field(default_factory=list)
    dead_letters: list[DeadLetters] = field(default_factory=list)
    dead_letters_capped: bool = False  # DEAD_LETTER_LIMIT letters were read: there are at least that many
    sources: list[SourceSeen] = field(default_factory=list)
    stale_after_s: float = 0.0
    problems: dict[str, str] = field(default_factory=dict)  # part -> why it could not be read


# --- Kafka ---------------------------------------------------------------------------------------------


def consumer_lag(settings: Settings) -> list[GroupLag]:
    """Every consumer group with committed offsets: the messages after them on each of its partitions."""
    from kafka import KafkaAdminClient, KafkaConsumer

    config = {**settings.kafka_client_config(), "request_timeout_ms": 15_000}
    admin = KafkaAdminClient(**config)
    try:
        listed = {str(g.get("group_id")): str(g.get("group_state") or "") for g in admin.list_groups()}
        committed = {group: admin.list_group_offsets(group).get(group, {}) for group in sorted(listed)}
    finally:
        admin.close()
    tps = sorted({tp for offsets in committed.values() for tp in offsets})
    consumer = KafkaConsumer(**config, group_id=None, enable_auto_commit=False)
    try:
        ends = consumer.end_offsets(tps) if tps else {}
    finally:
        consumer.close()
    return group_lags(listed, committed, ends)


def group_lags(states: dict[str, str], committed: dict[str, dict[Any, Any]], ends: dict[Any, int]) -> list[GroupLag]:
    """``GroupLag`` rows from the groups' states, committed offsets ({tp: OffsetAndMetadata}) and end offsets."""
    rows = []
    for group in sorted(states):
        offsets = {tp: getattr(om, "offset", om) for tp, om in committed.get(group, {}).items()}
        offsets = {tp: off for tp, off in offsets.items() if off is not None and off >= 0}
        lag = sum(max(0, ends.get(tp, off) - off) for tp, off in offsets.items())
        rows.append(GroupLag(group, states[group], tuple(sorted({tp.topic for tp in offsets})), lag))
    return rows


def dead_letters(settings: Settings, span: timedelta = DEAD_LETTER_SPAN, limit: int = DEAD_LETTER_LIMIT,
                 now: datetime | None = None) -> tuple[list[DeadLetters], bool]:
    """Letters of the dead-letter topic from the last ``span``, per source and reason class; True when ``limit``
    letters were read (there are at least that many)."""
    from kafka import KafkaConsumer, TopicPartition

    now = now or datetime.now(tz=UTC)
    since_ms = int((now - span).timestamp() * 1000)
    consumer = KafkaConsumer(**settings.kafka_client_config(), group_id=None, enable_auto_commit=False,
                             request_timeout_ms=15_000)
    docs: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(names.TOPIC_DEAD_LETTER, p)
               for p in sorted(consumer.partitions_for_topic(names.TOPIC_DEAD_LETTER) or ())]
        if not tps:
            return [], False
        starts = {tp: found.offset for tp, found in consumer.offsets_for_times(dict.fromkeys(tps, since_ms)).items()
                  if found is not None}
        ends = consumer.end_offsets(list(starts))
        todo = {tp for tp in starts if ends[tp] > starts[tp]}
        if not todo:
            return [], False
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, starts[tp])
        deadline = time.monotonic() + 60
        while todo and len(docs) < limit and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500, max_records=min(5000, limit - len(docs))).items():
                for m in messages:
                    if m.offset < ends[tp]:
                        docs.append(_letter_doc(m.value, m.timestamp))
            todo = {tp for tp in todo if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()
    return summarize_dead_letters(docs, since_ms), len(docs) >= limit


def _letter_doc(value: bytes | None, timestamp_ms: int) -> dict[str, Any]:
    try:
        doc = json.loads(value or b"")
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return {"source": "?", "reason": "not a dead-letter envelope", "received_ms": timestamp_ms}
    doc.setdefault("received_ms", timestamp_ms)
    return doc


def summarize_dead_letters(docs: Iterable[dict[str, Any]], since_ms: int) -> list[DeadLetters]:
    """Letters received at or after ``since_ms``, counted per source and reason class; most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    last: dict[tuple[str, str], int] = {}
    for doc in docs:
        received = int(doc.get("received_ms") or 0)
        if received < since_ms:
            continue
        key = (str(doc.get("source") or "?"), reason_class(str(doc.get("reason") or "")))
        counts[key] += 1
        last[key] = max(last.get(key, 0), received)
    return [DeadLetters(source, reason, n, datetime.fromtimestamp(last[(source, reason)] / 1000, tz=UTC))
            for (source, reason), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


# --- Flink ---------------------------------------------------------------------------------------------


def flink_jobs(settings: Settings, now: datetime | None = None) -> list[JobHealth]:
    """Every job the JobManager knows (running first, then the newest): state, restarts, last checkpoint age."""
    from machinewatch.flink_rest import rest

    now = now or datetime.now(tz=UTC)

    def get(path: str) -> Any:
        resp = rest(settings, "GET", path)
        resp.raise_for_status()
        return resp.json()

    jobs = sorted(get("/jobs/overview").get("jobs", []),
                  key=lambda j: (j.get("state") != "RUNNING", -int(j.get("start-time") or 0)))
    rows = []
    for job in jobs:
        jid = str(job["jid"])
        metrics = {m.get("id"): m.get("value") for m in get(f"/jobs/{jid}/metrics?get=numRestarts")}
        checkpoints = get(f"/jobs/{jid}/checkpoints") if job.get("state") == "RUNNING" else {}
        rows.append(job_health(job, metrics.get("numRestarts"), checkpoints, now))
    return rows


def job_health(job: dict[str, Any], restarts: Any, checkpoints: dict[str, Any], now: datetime) -> JobHealth:
    """A ``JobHealth`` from a /jobs/overview entry, the numRestarts metric and /jobs/<id>/checkpoints."""
    completed = ((checkpoints.get("latest") or {}).get("completed") or {})
    acked = completed.get("latest_ack_timestamp")
    age = max(0.0, now.timestamp() - int(acked) / 1000) if acked else None
    count = (checkpoints.get("counts") or {}).get("completed")
    return JobHealth(str(job.get("jid")), str(job.get("name")), str(job.get("state")),
                     int(restarts) if restarts not in (None, "") else None,
                     int(count) if count is not None else None, age)


# --- InfluxDB ------------------------------------------------------------------------------------------


def sources_seen(settings: Settings, stale_after_s: float, now: datetime | None = None,
                 lookback: timedelta = SOURCE_LOOKBACK) -> list[SourceSeen]:
    """Each source with window aggregates in the last ``lookback``: its newest window end, stale or not."""
    from machinewatch.query import FLUX_DIR, run_flux

    now = now or datetime.now(tz=UTC)
    frame = run_flux(settings, (FLUX_DIR / "source_last_seen.flux").read_text(),
                     {"bucket": names.BUCKET_AGGREGATES, "start": now - lookback})
    rows = [] if frame.empty else list(zip(frame["source"], frame["_time"], strict=True))
    return source_ages(rows, stale_after_s, now)


def source_ages(rows: Sequence[tuple[str, Any]], stale_after_s: float, now: datetime) -> list[SourceSeen]:
    """``SourceSeen`` of (source, last time) pairs: the stale ones first, then by name."""
    seen = []
    for source, last in rows:
        moment = last.to_pydatetime() if hasattr(last, "to_pydatetime") else last
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        age = max(0.0, (now - moment).total_seconds())
        seen.append(SourceSeen(str(source), moment, age, age > stale_after_s))
    return sorted(seen, key=lambda s: (not s.stale, s.source))


# --- all of it -------------------------------------------------------------------------------------------


def collect(settings: Settings, *, kafka: bool = True, flink: bool = True, influxdb: bool = True,
            now: datetime | None = None) -> PipelineHealth:
    """Every part whose server is asked for (False: it is known to be down and is not asked)."""
    now = now or datetime.now(tz=UTC)
    health = PipelineHealth(stale_after_s=settings.pipeline_stale_after_s)
    parts: list[tuple[str, bool, Any]] = [
        ("consumer lag", kafka, lambda: setattr(health, "groups", consumer_lag(settings))),
        ("dead letters", kafka, lambda: _set_letters(health, dead_letters(settings, now=now))),
        ("flink jobs", flink, lambda: setattr(health, "jobs", flink_jobs(settings, now))),
        ("sources", influxdb, lambda: setattr(health, "sources",
                                              sources_seen(settings, settings.pipeline_stale_after_s, now))),
    ]
    for part, wanted, read in parts:
        if not wanted:
            health.problems[part] = "not read: its server is not ready"
            continue
        try:
            read()
        except Exception as exc:  # noqa: BLE001 - one part failing must not hide the others
            text = str(exc).splitlines()[0][:300] if str(exc) else ""
            health.problems[part] = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return health


def _set_letters(health: PipelineHealth, found: tuple[list[DeadLetters], bool]) -> None:
    health.dead_letters, health.dead_letters_capped = found


def humanize(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"


def report_lines(health: PipelineHealth) -> list[str]:
    """The health as the plain-text sections ``stack status`` prints."""
    out = ["", f"{'consumer group':<32} {'state':<12} {'lag':>9}  topics"]
    for g in health.groups:
        out.append(f"{g.group:<32} {g.state or '-':<12} {g.lag:>9}  {','.join(g.topics) or '-'}")
    out += _empty_or_problem(health, "consumer lag", health.groups, "no consumer group has committed offsets")
    out += ["", f"{'flink job':<40} {'state':<12} {'restarts':>8}  {'checkpoints':>11}  last checkpoint"]
    for j in health.jobs:
        age = f"{humanize(j.checkpoint_age_s)} ago" if j.checkpoint_age_s is not None else "-"
        out.append(f"{j.name:<40} {j.state:<12} {_dash(j.restarts):>8}  {_dash(j.checkpoints):>11}  {age}")
    out += _empty_or_problem(health, "flink jobs", health.jobs, "no Flink jobs")
    total = sum(d.count for d in health.dead_letters)
    span = humanize(DEAD_LETTER_SPAN.total_seconds())
    out += ["", f"dead letters in the last {span}: {'at least ' if health.dead_letters_capped else ''}{total}"]
    for d in health.dead_letters:
        out.append(f"  {d.count:>7}  {d.source:<24} {d.reason}")
    out += _empty_or_problem(health, "dead letters", [True], "")
    out += ["", f"{'source':<32} {'last data':<22} {'age':>10}  (stale after {humanize(health.stale_after_s)})"]
    for s in health.sources:
        out.append(f"{s.source:<32} {s.last:%Y-%m-%d %H:%M:%S} UTC {humanize(s.age_s):>8}  "
                   f"{'STALE' if s.stale else 'ok'}")
    out += _empty_or_problem(health, "sources", health.sources, "no window aggregates in the last day")
    return out


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _empty_or_problem(health: PipelineHealth, part: str, rows: Sequence[Any], empty: str) -> list[str]:
    if part in health.problems:
        return [f"  ({part}: {health.problems[part]})"]
    return [f"  ({empty})"] if not rows and empty else []
