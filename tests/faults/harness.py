"""Common harness of the fault scenarios: the production pipeline fed with a ledger of what left the
source, and the exact comparison of everything it produced with pandas / the Python reference.

Each scenario gets its own topics, job instances, consumer groups and device ids, and runs what
production runs: both Flink jobs (window aggregates + threshold rules, sustained overheat), the
``machinewatch sink influxdb`` writer and the ``machinewatch notify`` notifier as processes of their own
(webhook to a receiver in the test). Checks are made where each promise can be seen:

- Kafka result topics: at least once. Every window, threshold alert and overheat transition that must
  exist is there; nothing else is; a duplicate (allowed: the sinks are at-least-once) is identical.
- InfluxDB: exactly one point per window / alert / transition, equal to the expectation (a repeated
  write overwrites; extra or missing points are seen).
- Notifications: each notified transition delivered exactly once, counted at the receiver.

The readings topic has ONE partition and readings are at most 1 s out of order (< the 2 s watermark
delay), so no reading is ever late, before or after a failover. (With several partitions, one
partition's burst after an outage can push the watermark past another's backlog; that is a real limit,
stated in the README's Guarantees, not something this harness hides.)
"""

from __future__ import annotations

import logging
import math
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from flink_jobs.overheat_logic import DeviceState, Transition, on_bucket, on_timer
from flink_jobs.sustained_overheat import rules_from
from machinewatch import jobs, names, query
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import Reading, make_event_id
from machinewatch.stack.procs import ManagedProcess
from tests.integration.pipeline_support import hop_windows
from tests.integration.test_course_dataset import expected_alerts
from tests.stack_support import WebhookReceiver, read_messages, read_topic
from tests.waiting import wait_for

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]

# The course project's metrics, so the default threshold rules (flink_jobs/rules/servers.toml) fire.
METRICS = {"cpu_pct": (84.0, 6.0), "mem_pct": (79.0, 6.0), "net_in": (4100.0, 300.0), "disk_io": (1900.0, 150.0)}
# servers.toml's equipment-temperature group, written out here so the oracle does not share the code.
TEMP_GROUP_S, TEMP_LIMIT, TEMP_LABEL = 60, 75.0, "Average temperature above 75 °C"
# Sustained-overheat rules of the scenarios: short enough that minutes of feeding open, escalate,
# resolve, cancel and silence alerts (the defaults need an hour of event time for the same).
OVERHEAT = {"overheat_threshold_c": 80.0, "overheat_duration_s": 20, "overheat_hysteresis_c": 5.0,
            "overheat_clear_s": 10, "overheat_escalate_factor": 2.0, "overheat_max_gap_s": 10,
            "overheat_silence_s": 30}


def temperature(device: int, n: int, rng: random.Random) -> float | None:
    """Device temperatures by event second: overheat episodes, runs too short to open, hysteresis band,
    and (device 0) a silence in the middle of an open alert. None = the device sends nothing that second."""
    if device == 0 and 140 <= n % 300 < 180:
        return None  # open since ~135 s; quiet for 40 s > silence (30 s): silent, then resumes cool
    if device == 3:  # 12 s hot every 40 s: pending, then cancelled
        return 90.0 + rng.uniform(-2, 2) if 25 <= n % 40 < 37 else 60.0 + rng.uniform(-1, 1)
    p = (n + 17 * device) % 90
    if p < 25 or p >= 75:
        return 60.0 + rng.uniform(-1, 1)
    if p < 70:
        return 90.0 + rng.uniform(-2, 2)  # 45 s hot: pending, opened at 20 s, escalated at 40 s
    return 78.0 + rng.uniform(-0.5, 0.5)  # neither hot nor cool: the open alert goes on, then resolves


class Feeder:
    """A collector stand-in: streams readings with stable ids at a steady pace and keeps a ledger.

    One tick = one event-time second for every device (four server metrics and a temperature), every
    ``tick_s`` of wall time.
    """

    def __init__(self, settings: Settings, topic: str, prefix: str, devices: int = 4, tick_s: float = 0.5,
                 seed: int = 7) -> None:
        self.s, self.topic, self.prefix, self.devices, self.tick_s = settings, topic, prefix, devices, tick_s
        self.rng = random.Random(seed)
        # Event time starts a day ago on a minute boundary: the windows do not depend on wall time.
        start = (datetime.now(tz=UTC) - timedelta(days=1)).replace(second=0, microsecond=0)
        self.base_ms = int(start.timestamp() * 1000)
        self.level = {(d, m): mean for d in range(devices) for m, (mean, _) in METRICS.items()}
        self.sent: list[tuple[Reading, Any]] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.ticks = 0
        self.thread = threading.Thread(target=self._run, name=f"feeder-{prefix}", daemon=True)

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def _reading(self, device: str, metric: str, value: float, unit: str, ts: int) -> Reading:
        return Reading(source="fault-harness", device_id=device, metric=metric, value=round(value, 3), unit=unit,
                       ts=ts, region="test", site="faults", event_id=make_event_id("fault-harness", device, metric, ts))

    def _tick(self, n: int) -> list[Reading]:
        out = []
        for d in range(self.devices):
            device = f"{self.prefix}{d}"
            temp = temperature(d, n, self.rng)
            if temp is None:
                continue
            for metric, (mean, step) in METRICS.items():
                # A mean-reverting walk around the thresholds, so windows cross them both ways.
                level = self.level[(d, metric)]
                level += self.rng.gauss(0, step) + 0.2 * (mean - level)
                self.level[(d, metric)] = level
                ts = self.base_ms + n * 1000 + self.rng.randrange(0, 900)
                out.append(self._reading(device, metric, level, "%" if metric.endswith("_pct") else "", ts))
            out.append(self._reading(device, "temperature", temp, "°C",
                                     self.base_ms + n * 1000 + self.rng.randrange(0, 900)))
        self.rng.shuffle(out)
        return out

    def _run(self) -> None:
        try:
            with Publisher(self.s, topic=self.topic) as pub:
                while not self.stop_event.is_set():
                    for reading in self._tick(self.ticks):
                        self.sent.append((reading, pub.send(reading)))
                    self.ticks += 1
                    self.stop_event.wait(self.tick_s)
                # Every queued reading must be acknowledged (the producer retries through outages).
                pub.flush(timeout=240)
        except BaseException as exc:
            self.error = exc
            raise

    def stop(self) -> pd.DataFrame:
        """Stop feeding, wait for the acks, and return the ledger of what left the source."""
        self.stop_event.set()
        self.thread.join(timeout=300)
        assert not self.thread.is_alive(), "the feeder did not finish flushing"
        assert self.error is None, f"the feeder failed: {self.error!r}"
        acked = [r.to_dict() for r, fut in self.sent if fut.is_done and fut.succeeded()]
        assert len(acked) == len(self.sent), f"{len(self.sent) - len(acked)} readings were not acknowledged"
        assert acked, "the feeder sent nothing"
        ledger = pd.DataFrame(acked)
        assert ledger.event_id.is_unique
        return ledger


@dataclass
class Pipeline:
    """One isolated instance of the production pipeline on the given stack."""

    settings: Settings
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    job_ids: dict[str, str] = field(default_factory=dict)
    webhook: WebhookReceiver = field(default_factory=WebhookReceiver)

    def __post_init__(self) -> None:
        run_dir = self.settings.state_dir / "run"
        # Processes of their own, as 'machinewatch demo' runs them; they die with the test run.
        self.writer = ManagedProcess(f"writer-{self.run}", run_dir, "sink influxdb", tied=True)
        self.notifier = ManagedProcess(f"notifier-{self.run}", run_dir, " notify ", tied=True)
        self.job_settings = self.settings.model_copy(update=OVERHEAT)

    @property
    def topics(self) -> dict[str, str]:
        return {k: f"mw.fault-{self.run}.{k}" for k in ("readings", "aggregates", "late", "alerts")}

    @property
    def prefix(self) -> str:
        return f"f{self.run}-"

    def job_name(self, job: str) -> str:
        return f"mw-fault-{self.run}-{job}"

    @property
    def writer_group(self) -> str:
        return f"w-{self.run}"

    def create_topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_servers)
        try:
            # Replicated as the stack's own topics are (on a cluster, losing a broker must lose nothing).
            replicas = self.settings.kafka_replication_factor
            configs = {"min.insync.replicas": "2"} if replicas >= 3 else {}
            admin.create_topics([NewTopic(t, 1, replicas, topic_configs=configs) for t in self.topics.values()])
        finally:
            admin.close()

    def submit(self, job: str, settings: Settings | None = None, from_savepoint: str | None = None) -> str:
        t = self.topics
        args = ["--readings-topic", t["readings"], "--alerts-topic", t["alerts"], "--group-id", f"g-{self.run}-{job}",
                "--job-name", self.job_name(job)]
        if job == "window-aggregates":
            args += ["--aggregates-topic", t["aggregates"], "--late-topic", t["late"]]
        job_id = jobs.submit(settings or self.job_settings, job, args, from_savepoint=from_savepoint)
        self.job_ids[job] = job_id
        wait_for(lambda: job_running(self.settings, job_id), 180, f"{job} job {job_id} RUNNING")
        return job_id

    def submit_all(self) -> None:
        for job in ("window-aggregates", "sustained-overheat"):
            self.submit(job)

    def _env(self) -> dict[str, str]:
        return {**self.settings.to_env(), "PYTHONPATH": str(REPO)}

    def start_writer(self) -> int:
        t = self.topics
        return self.writer.start([
            sys.executable, "-m", "machinewatch", "sink", "influxdb", "--aggregates-topic", t["aggregates"],
            "--late-topic", t["late"], "--alerts-topic", t["alerts"], "--group-id", self.writer_group,
        ], env=self._env())

    def start_notifier(self) -> int:
        return self.notifier.start([
            sys.executable, "-m", "machinewatch", "notify", "--alerts-topic", self.topics["alerts"],
            "--group-id", f"n-{self.run}", "--ledger", str(self.settings.state_dir / f"ledger-{self.run}.sqlite"),
        ], env={**self._env(), "MW_WEBHOOK_URL": self.webhook.url})

    def start(self) -> Pipeline:
        self.create_topics()
        self.submit_all()
        self.start_writer()
        self.start_notifier()
        return self

    def writer_committed(self) -> int:
        """Messages of the result topics the writer has committed (= acknowledged by InfluxDB)."""
        # A consumer of the writer's group that never joins it: committed() only asks the coordinator.
        consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_servers, group_id=self.writer_group,
                                 enable_auto_commit=False)
        try:
            topics = (self.topics["aggregates"], self.topics["late"], self.topics["alerts"])
            parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
            return sum(consumer.committed(tp) or 0 for tp in parts)
        finally:
            consumer.close()

    def processes_alive(self) -> None:
        assert self.writer.pid() is not None, f"the writer died:\n{self.writer.tail()}"
        assert self.notifier.pid() is not None, f"the notifier died:\n{self.notifier.tail()}"

    def close(self) -> None:
        for proc in (self.writer, self.notifier):
            proc.stop()
        for job in ("window-aggregates", "sustained-overheat"):
            try:
                for found in jobs.running(self.settings, self.job_name(job)):
                    # Stopped as an operator would: with a savepoint, operators finishing their bundles
                    # (a plain cancel can take the TaskManager down: see jobs.savepoint).
                    try:
                        jobs.savepoint(self.settings, found["jid"], cancel=True, timeout=60)
                    except jobs.JobError as exc:
                        log.warning("stop of %s failed (%s); cancelling", found["jid"], exc)
                        jobs.cancel(self.settings, found["jid"])
            except requests.RequestException as exc:
                log.warning("could not stop the %s job of %s: %s", job, self.run, exc)
        self.webhook.close()


# --- Flink REST -------------------------------------------------------------------------------


def job_running(settings: Settings, job_id: str) -> bool:
    """RUNNING with every task running (a job can be RUNNING while its tasks are still deploying)."""
    detail = jobs.job_detail(settings, job_id)
    return detail.get("state") == "RUNNING" and all(v.get("status") == "RUNNING" for v in detail["vertices"])


def checkpoint_counts(settings: Settings, job_id: str) -> dict[str, int]:
    resp = requests.get(f"{settings.flink_rest}/jobs/{job_id}/checkpoints", timeout=30)
    resp.raise_for_status()
    return {k: int(v) for k, v in resp.json()["counts"].items()}


def wait_checkpoints(settings: Settings, job_id: str, more: int, timeout: float = 120) -> int:
    """Wait until ``more`` checkpoints completed after now; returns the completed count."""
    target = checkpoint_counts(settings, job_id)["completed"] + more
    wait_for(lambda: checkpoint_counts(settings, job_id)["completed"] >= target, timeout,
             f"{more} more completed checkpoints of {job_id}")
    return checkpoint_counts(settings, job_id)["completed"]


# --- what must come out ------------------------------------------------------------------------


def tumble_oracle(df: pd.DataFrame, size_ms: int) -> pd.DataFrame:
    out = df.assign(window_end_ms=(df.ts // size_ms + 1) * size_ms)
    return out.groupby(["device_id", "metric", "window_end_ms"])["value"].agg(
        avg="mean", min="min", max="max", count="count"
    ).reset_index()


def threshold_oracle(ledger: pd.DataFrame, settings: Settings) -> set[tuple[str, int, str]]:
    """(device, window end, label) of every threshold alert the rules give on the ledger."""
    hop = hop_windows(ledger, settings.hop_size_s * 1000, settings.hop_slide_s * 1000)
    alerts = expected_alerts(hop[hop.metric != "temperature"])
    out = set(zip(alerts.device_id, alerts.window_end_ms.astype(int), alerts.label, strict=True))
    temp = tumble_oracle(ledger[ledger.metric == "temperature"], TEMP_GROUP_S * 1000)
    hot = temp[temp["avg"] > TEMP_LIMIT]
    return out | {(d, int(t), TEMP_LABEL) for d, t in zip(hot.device_id, hot.window_end_ms, strict=True)}


TRANSITION_FIELDS = ("device_id", "ts", "started_ms", "duration_ms", "severity", "fires_at_ms", "avg", "peak")


def overheat_oracle(ledger: pd.DataFrame, settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """(alert id, state) -> transition, from the reference state machine on ALL one-second buckets.

    What an uninterrupted run must give: the job's SQL (buckets, prefilter), checkpoints and restores
    must not change a single transition.
    """
    rules = rules_from(settings)
    temps = ledger[ledger.metric == "temperature"]
    bucket_ms = settings.overheat_bucket_ms
    buckets = temps.assign(start=temps.ts // bucket_ms * bucket_ms).groupby(["device_id", "start"])["value"].agg(
        vmin="min", vmax="max", vsum="sum", n="count").reset_index().sort_values(["device_id", "start"])
    # The highest watermark the job can reach: every reading (any metric) moves it, up to the last
    # event time less the delay. A device that went quiet earlier than that is reported silent by the
    # job's timer even though no later bucket of its own ever shows the reference the silence.
    last_watermark = int(ledger.ts.max()) - settings.watermark_delay_ms
    out: dict[tuple[str, str], dict[str, Any]] = {}

    def add(transitions: list[Transition]) -> None:
        for t in transitions:
            key = (t.alert_id, t.state)
            assert key not in out, f"the reference emits {key} twice"
            out[key] = t.to_dict()

    for device, rows in buckets.groupby("device_id"):
        st = DeviceState(region="test", site="faults")
        for row in rows.itertuples():
            add(on_bucket(st, rules, str(device), int(row.start), int(row.start) + bucket_ms, float(row.vmin),
                          float(row.vmax), float(row.vsum), int(row.n)))
        if st.last_end is not None and st.last_end + rules.silence_ms <= last_watermark:
            # Allowed, and required once it is below the horizon (Expected.closed_transitions).
            add(on_timer(st, rules, str(device), st.last_end + rules.silence_ms))
    # Silence at the very end (every device stops with the feeder) never fires: event time stands still.
    return out


def repeat_transitions(settings: Settings, pipeline: Pipeline) -> int:
    """Send every overheat transition in the alerts topic once more, byte for byte, as an at-least-once
    sink replaying after a failover does: the notifier and the writer must not count them twice."""
    again = [(m.key, m.value) for m in read_messages(settings, pipeline.topics["alerts"])
             if m.value and b'"sustained_overheat"' in m.value]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all")
    try:
        for key, value in again:
            producer.send(pipeline.topics["alerts"], key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()
    return len(again)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, int | float) and not isinstance(b, bool):
        return math.isclose(a, float(b), rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(float(b)))
    return bool(a == b)


@dataclass
class Expected:
    """Everything the ledger implies, and the event time up to which all of it must have come out."""

    windows: dict[str, pd.DataFrame]
    horizon_ms: int
    thresholds: set[tuple[str, int, str]]
    transitions: dict[tuple[str, str], dict[str, Any]]

    @classmethod
    def of(cls, settings: Settings, ledger: pd.DataFrame, job_settings: Settings) -> Expected:
        windows = {
            f"{settings.window_size_s}s": tumble_oracle(ledger, settings.window_size_s * 1000),
            f"{settings.hop_size_s}s@{settings.hop_slide_s}s": hop_windows(
                ledger, settings.hop_size_s * 1000, settings.hop_slide_s * 1000),
        }
        # Closed for sure: the watermark (last event time - delay) passed it by a bucket and a second.
        horizon = int(ledger.ts.max()) - settings.watermark_delay_ms - 2000
        return cls(windows, horizon, threshold_oracle(ledger, settings), overheat_oracle(ledger, job_settings))

    def closed_windows(self, shape: str) -> set[tuple[str, str, int]]:
        want = self.windows[shape]
        want = want[want.window_end_ms <= self.horizon_ms]
        return set(zip(want.device_id, want.metric, want.window_end_ms.astype(int), strict=True))

    def closed_thresholds(self) -> set[tuple[str, int, str]]:
        return {a for a in self.thresholds if a[1] <= self.horizon_ms}

    def closed_transitions(self) -> set[tuple[str, str]]:
        return {k for k, t in self.transitions.items() if t["ts"] <= self.horizon_ms}


def _shape(doc: dict[str, Any]) -> str:
    size, slide = int(doc["window_ms"]) // 1000, int(doc.get("slide_ms") or doc["window_ms"]) // 1000
    return f"{size}s" if size == slide else f"{size}s@{slide}s"


@dataclass
class KafkaResults:
    """The result topics of one pipeline, read from the beginning: keys, duplicates and mismatches."""

    windows: dict[str, dict[tuple[str, str, int], list[dict[str, Any]]]]
    thresholds: dict[tuple[str, int, str], int]
    transitions: dict[tuple[str, str], list[dict[str, Any]]]
    late: list[dict[str, Any]]

    @classmethod
    def read(cls, settings: Settings, pipeline: Pipeline) -> KafkaResults:
        windows: dict[str, dict[tuple[str, str, int], list[dict[str, Any]]]] = {}
        for doc in read_topic(settings, pipeline.topics["aggregates"]):
            if "devices" in doc:
                continue  # a fleet roll-up (all devices of a site), not a device's window
            key = (doc["device_id"], doc["metric"], int(doc["window_end_ms"]))
            windows.setdefault(_shape(doc), {}).setdefault(key, []).append(doc)
        thresholds: Counter[tuple[str, int, str]] = Counter()
        transitions: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for doc in read_topic(settings, pipeline.topics["alerts"]):
            if doc.get("rule_group"):
                thresholds[(doc["device_id"], int(doc["window_end_ms"]), doc["label"])] += 1
            else:
                assert doc.get("kind") == "sustained_overheat", f"an alert of no known kind: {doc}"
                transitions.setdefault((doc["alert_id"], doc["state"]), []).append(doc)
        return cls(windows, dict(thresholds), transitions, read_topic(settings, pipeline.topics["late"]))

    def complete(self, exp: Expected) -> bool:
        return (all(exp.closed_windows(w) <= set(self.windows.get(w, {})) for w in exp.windows)
                and exp.closed_thresholds() <= set(self.thresholds)
                and exp.closed_transitions() <= set(self.transitions))

    def duplicates(self) -> int:
        return (sum(len(v) - 1 for shape in self.windows.values() for v in shape.values())
                + sum(n - 1 for n in self.thresholds.values()) + sum(len(v) - 1 for v in self.transitions.values()))

    def check(self, exp: Expected) -> None:
        """At least once, nothing else, and a duplicate is the same record."""
        for shape, want in exp.windows.items():
            got = self.windows.get(shape, {})
            missing = exp.closed_windows(shape) - set(got)
            assert not missing, f"{shape}: {len(missing)} closed windows not in Kafka, e.g. {sorted(missing)[:3]}"
            oracle = want.set_index(["device_id", "metric", "window_end_ms"])
            for key, docs in got.items():
                assert key in oracle.index, f"{shape}: a window no reading makes: {docs[0]}"
                row = oracle.loc[key]
                for doc in docs:
                    assert int(doc["count"]) == int(row["count"]), f"{shape} {key}: {doc} vs {row.to_dict()}"
                    for col in ("avg", "min", "max"):
                        assert abs(float(doc[f"{col}_value"]) - float(row[col])) <= 1e-9, f"{shape} {key}: {col}"
        missing_alerts = exp.closed_thresholds() - set(self.thresholds)
        assert not missing_alerts, f"threshold alerts never in Kafka: {sorted(missing_alerts)[:3]}"
        extra_alerts = set(self.thresholds) - exp.thresholds
        assert not extra_alerts, f"threshold alerts the rules do not give: {sorted(extra_alerts)[:3]}"
        missing_tr = exp.closed_transitions() - set(self.transitions)
        assert not missing_tr, f"overheat transitions never in Kafka: {sorted(missing_tr)[:5]}"
        for key, docs in self.transitions.items():
            assert key in exp.transitions, f"an overheat transition the reference does not give: {docs[0]}"
            want = exp.transitions[key]
            for doc in docs:
                wrong = [f for f in TRANSITION_FIELDS if not _same(want[f], doc.get(f))]
                assert not wrong, f"{key}: {[(f, doc.get(f), want[f]) for f in wrong]}"
        assert self.late == [], f"{len(self.late)} readings were counted late; the stream has none: {self.late[:2]}"


# --- InfluxDB and the notifications --------------------------------------------------------------


def _influx_windows(settings: Settings, prefix: str, window: str, since: datetime) -> pd.DataFrame:
    got = query.window_aggregates(settings, since, datetime.now(tz=UTC) + timedelta(hours=1),
                                  device_prefix=prefix, window=window)
    if got.empty:
        return pd.DataFrame(columns=["device_id", "metric", "window_end_ms", "avg", "min", "max", "count"])
    got["window_end_ms"] = got["_time"].map(lambda t: int(t.timestamp() * 1000))
    return got


def _influx_rows(settings: Settings, measurement: str, field_name: str, prefix: str,
                 since: datetime) -> pd.DataFrame:
    flux = f'''
from(bucket: "{names.BUCKET_ALERTS}")
  |> range(start: {since.isoformat()}, stop: {(datetime.now(tz=UTC) + timedelta(hours=1)).isoformat()})
  |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field_name}")
  |> filter(fn: (r) => r.device_id =~ /^{prefix}/)
  |> group()'''
    return query.run_flux(settings, flux)


@dataclass
class InfluxResults:
    windows: dict[str, pd.DataFrame]
    thresholds: list[tuple[str, int, str]]
    transitions: list[tuple[str, str, int]]

    @classmethod
    def read(cls, settings: Settings, pipeline: Pipeline, exp: Expected, since: datetime) -> InfluxResults:
        windows = {w: _influx_windows(settings, pipeline.prefix, w, since) for w in exp.windows}
        frame = _influx_rows(settings, names.MEASUREMENT_THRESHOLD_ALERT, "label", pipeline.prefix, since)
        thresholds = [] if frame.empty else [
            (d, int(t.timestamp() * 1000), lbl) for d, t, lbl in zip(frame.device_id, frame._time, frame._value,
                                                                      strict=True)]
        frame = _influx_rows(settings, "device_alert", "alert_id", pipeline.prefix, since)
        transitions = [] if frame.empty else [
            (a, s, int(t.timestamp() * 1000)) for a, s, t in zip(frame._value, frame.state, frame._time, strict=True)]
        return cls(windows, thresholds, transitions)

    def complete(self, exp: Expected, kafka: KafkaResults) -> bool:
        for w in exp.windows:
            have = self.windows[w]
            if not exp.closed_windows(w) <= set(zip(have.device_id, have.metric, have.window_end_ms, strict=True)):
                return False
        return (set(kafka.thresholds) <= set(self.thresholds)
                and {k for k in kafka.transitions} <= {(a, s) for a, s, _ in self.transitions})

    def check(self, exp: Expected, kafka: KafkaResults) -> None:
        """Exactly one point per window / alert / transition, equal to the expectation."""
        for w, want in exp.windows.items():
            have = self.windows[w]
            assert not have.duplicated(["device_id", "metric", "window_end_ms"]).any(), f"{w}: duplicate windows"
            merged = have.merge(want, on=["device_id", "metric", "window_end_ms"], how="left", suffixes=("", "_exp"),
                                indicator=True)
            extra = merged[merged["_merge"] != "both"]
            assert extra.empty, f"{w}: {len(extra)} windows in InfluxDB that no reading makes: {extra.head(3)}"
            wrong = merged[merged["count"] != merged["count_exp"]]
            assert wrong.empty, f"{w}: {len(wrong)} windows with wrong counts, e.g. {wrong.head(3).to_dict('records')}"
            for col in ("avg", "min", "max"):
                diff = (merged[col] - merged[f"{col}_exp"]).abs().max()
                assert diff <= 1e-9, f"{w}: {col} differs by {diff}"
        assert len(self.thresholds) == len(set(self.thresholds)), "a threshold alert is stored more than once"
        assert set(self.thresholds) == set(kafka.thresholds), "InfluxDB's threshold alerts differ from Kafka's"
        assert len(self.transitions) == len(set(self.transitions)), "an overheat transition is stored twice"
        stored = {(a, s): ts for a, s, ts in self.transitions}
        assert len(stored) == len(self.transitions), "one transition stored at two times"
        due = {k: exp.transitions[k]["ts"] for k in kafka.transitions}
        assert stored == due, f"InfluxDB's overheat transitions differ: {set(stored.items()) ^ set(due.items())}"


def notified(settings: Settings, kafka: KafkaResults) -> set[str]:
    """Idempotency keys the notifier must deliver: the overheat transitions in the notified states."""
    return {f"{a}:{s}" for a, s in kafka.transitions if s in settings.notify_states}


def check_notifications(settings: Settings, pipeline: Pipeline, kafka: KafkaResults) -> int:
    counts = Counter(d["key"] for d in pipeline.webhook.deliveries)
    want = notified(settings, kafka)
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"notified more than once: {twice}"
    assert set(counts) == want, f"notifications differ: missing {want - set(counts)}, extra {set(counts) - want}"
    return len(counts)


def assert_nothing_lost(settings: Settings, pipeline: Pipeline, ledger: pd.DataFrame,
                        timeout: float = 240) -> dict[str, int]:
    """Kafka, InfluxDB and the notifications hold exactly what the ledger implies (see the module doc)."""
    exp = Expected.of(settings, ledger, pipeline.job_settings)
    assert exp.closed_thresholds(), "the stream should raise threshold alerts; an empty expectation proves nothing"
    states = {s for _, s in exp.closed_transitions()}
    assert {"pending", "cancelled", "opened", "escalated", "resolved"} <= states, (
        f"the stream should exercise the overheat lifecycle; it gave only {sorted(states)}")
    since = datetime.fromtimestamp(int(ledger.ts.min()) / 1000, tz=UTC) - timedelta(minutes=5)
    box: dict[str, Any] = {}

    def kafka_complete() -> bool:
        box["kafka"] = KafkaResults.read(settings, pipeline)
        return bool(box["kafka"].complete(exp))

    try:
        wait_for(kafka_complete, timeout, "Kafka to hold every closed window, alert and transition", every=3)
    except AssertionError:
        if "kafka" in box:
            box["kafka"].check(exp)  # says what is missing or wrong, if it can
        raise
    kafka: KafkaResults = box["kafka"]
    kafka.check(exp)

    def influx_complete() -> bool:
        box["influx"] = InfluxResults.read(settings, pipeline, exp, since)
        return bool(box["influx"].complete(exp, kafka))

    try:
        wait_for(influx_complete, timeout, "InfluxDB to hold every closed window, alert and transition", every=3)
    except AssertionError:
        if "influx" in box:
            box["influx"].check(exp, kafka)
        raise
    # A last read after the writer went quiet, so nothing is checked half-written.
    influx = InfluxResults.read(settings, pipeline, exp, since)
    influx.check(exp, kafka)

    want = notified(settings, kafka)
    wait_for(lambda: {d["key"] for d in pipeline.webhook.deliveries} >= want, timeout,
             f"the notifier to deliver {len(want)} notifications", every=2)
    time.sleep(2)  # a duplicate would come right behind
    return {
        "readings": len(ledger), "threshold alerts": len(kafka.thresholds),
        "overheat transitions": len(kafka.transitions), "kafka duplicates": kafka.duplicates(),
        "notifications": check_notifications(settings, pipeline, kafka),
        **{f"windows {w}": len(influx.windows[w]) for w in exp.windows},
    }
