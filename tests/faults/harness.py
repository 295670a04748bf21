"""Common harness of the fault scenarios: a fed pipeline, a ledger of what left the source, and the
"nothing lost" comparison of InfluxDB with a pandas recomputation.

Each scenario gets its own topics, job instance, writer and device ids. The readings topic has ONE
partition and readings are at most 1 s out of order (< the 2 s watermark delay), so no reading is ever
late, before or after a failover: every reading must end up in exactly its windows. (With several
partitions, one partition's burst after an outage can push the watermark past another's backlog; that
is a real limit, stated in the README's Guarantees, not something this harness hides.)
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import requests
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from machinewatch import jobs, names, query
from machinewatch.config import Settings
from machinewatch.kafka_io import Publisher
from machinewatch.record import Reading, make_event_id
from sinks.influxdb_writer import InfluxWriter, alert_point, late_point, to_point
from tests.integration.test_course_dataset import expected_alerts, hop_oracle

log = logging.getLogger(__name__)

# The course project's metrics, so the default threshold rules (flink_jobs/rules/servers.toml) fire.
METRICS = {"cpu_pct": (84.0, 6.0), "mem_pct": (79.0, 6.0), "net_in": (4100.0, 300.0), "disk_io": (1900.0, 150.0)}


def wait_for(pred: Callable[[], bool], seconds: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as exc:  # noqa: BLE001 - a server that is down answers with errors: keep polling
            log.debug("waiting for %s: %s", what, exc)
        time.sleep(every)
    msg = f"timed out after {seconds:.0f}s waiting for {what}"
    raise AssertionError(msg)


class Feeder:
    """A collector stand-in: streams readings with stable ids at a steady pace and keeps a ledger.

    One tick = one event-time second for every device and metric, every ``tick_s`` of wall time.
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

    def _tick(self, n: int) -> list[Reading]:
        out = []
        for d in range(self.devices):
            for metric, (mean, step) in METRICS.items():
                # A mean-reverting walk around the thresholds, so windows cross them both ways.
                level = self.level[(d, metric)]
                level += self.rng.gauss(0, step) + 0.2 * (mean - level)
                self.level[(d, metric)] = level
                ts = self.base_ms + n * 1000 + self.rng.randrange(0, 900)
                device = f"{self.prefix}{d}"
                out.append(Reading(
                    source="fault-harness", device_id=device, metric=metric, value=round(level, 3),
                    unit="%" if metric.endswith("_pct") else "", ts=ts, region="test", site="faults",
                    event_id=make_event_id("fault-harness", device, metric, ts),
                ))
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
        ledger = pd.DataFrame(acked)
        assert ledger.event_id.is_unique
        return ledger


@dataclass
class Pipeline:
    """One isolated instance of the window job + writer on the given stack."""

    settings: Settings
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    job_id: str = ""
    writer: InfluxWriter | None = None
    writer_thread: threading.Thread | None = None
    writer_error: BaseException | None = None

    @property
    def topics(self) -> dict[str, str]:
        return {k: f"mw.fault-{self.run}.{k}" for k in ("readings", "aggregates", "late", "alerts")}

    @property
    def prefix(self) -> str:
        return f"f{self.run}-"

    @property
    def job_name(self) -> str:
        return f"mw-fault-{self.run}"

    def create_topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_servers)
        try:
            admin.create_topics([NewTopic(t, 1, 1) for t in self.topics.values()])
        finally:
            admin.close()

    def submit(self, settings: Settings | None = None, from_savepoint: str | None = None) -> str:
        t = self.topics
        self.job_id = jobs.submit(settings or self.settings, "window-aggregates", [
            "--readings-topic", t["readings"], "--aggregates-topic", t["aggregates"],
            "--late-topic", t["late"], "--alerts-topic", t["alerts"],
            "--group-id", f"g-{self.run}", "--job-name", self.job_name,
        ], from_savepoint=from_savepoint)
        wait_for(lambda: job_running(self.settings, self.job_id), 180, f"job {self.job_id} RUNNING")
        return self.job_id

    def start_writer(self) -> None:
        t = self.topics
        self.writer = InfluxWriter(self.settings, group_id=f"w-{self.run}", routes={
            t["aggregates"]: (to_point, names.BUCKET_AGGREGATES),
            t["late"]: (late_point, names.BUCKET_AGGREGATES),
            t["alerts"]: (alert_point, names.BUCKET_ALERTS),
        })

        def run() -> None:
            assert self.writer is not None
            try:
                self.writer.run()
            except BaseException as exc:
                self.writer_error = exc
                raise

        self.writer_thread = threading.Thread(target=run, name=f"writer-{self.run}", daemon=True)
        self.writer_thread.start()

    def writer_alive(self) -> bool:
        return self.writer_thread is not None and self.writer_thread.is_alive()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.stop_event.set()
        if self.writer_thread is not None:
            self.writer_thread.join(timeout=60)
        try:
            for job in jobs.running(self.settings, self.job_name):
                jobs.cancel(self.settings, job["jid"])
        except requests.RequestException as exc:
            log.warning("could not cancel %s: %s", self.job_name, exc)


# --- Flink REST -------------------------------------------------------------------------------


def job_detail(settings: Settings, job_id: str) -> dict[str, Any]:
    resp = requests.get(f"{settings.flink_rest}/jobs/{job_id}", timeout=10)
    resp.raise_for_status()
    return dict(resp.json())


def job_running(settings: Settings, job_id: str) -> bool:
    """RUNNING with every task running (a job can be RUNNING while its tasks are still deploying)."""
    detail = job_detail(settings, job_id)
    return detail.get("state") == "RUNNING" and all(v.get("status") == "RUNNING" for v in detail["vertices"])


def checkpoint_counts(settings: Settings, job_id: str) -> dict[str, int]:
    resp = requests.get(f"{settings.flink_rest}/jobs/{job_id}/checkpoints", timeout=10)
    resp.raise_for_status()
    return {k: int(v) for k, v in resp.json()["counts"].items()}


def wait_checkpoints(settings: Settings, job_id: str, more: int, timeout: float = 120) -> int:
    """Wait until ``more`` checkpoints completed after now; returns the completed count."""
    target = checkpoint_counts(settings, job_id)["completed"] + more
    wait_for(lambda: checkpoint_counts(settings, job_id)["completed"] >= target, timeout,
             f"{more} more completed checkpoints of {job_id}")
    return checkpoint_counts(settings, job_id)["completed"]


# --- the "nothing lost" comparison -------------------------------------------------------------


def tumble_oracle(df: pd.DataFrame, size_ms: int) -> pd.DataFrame:
    out = df.assign(window_end_ms=(df.ts // size_ms + 1) * size_ms)
    return out.groupby(["device_id", "metric", "window_end_ms"])["value"].agg(
        avg="mean", min="min", max="max", count="count"
    ).reset_index()


def _influx_windows(settings: Settings, prefix: str, window: str, since: datetime) -> pd.DataFrame:
    got = query.window_aggregates(settings, since, datetime.now(tz=UTC) + timedelta(hours=1),
                                  device_prefix=prefix, window=window)
    if got.empty:
        return pd.DataFrame(columns=["device_id", "metric", "window_end_ms", "avg", "min", "max", "count"])
    got["window_end_ms"] = got["_time"].map(lambda t: int(t.timestamp() * 1000))
    return got


def _influx_alerts(settings: Settings, prefix: str, since: datetime) -> pd.DataFrame:
    flux = f'''
from(bucket: "{names.BUCKET_ALERTS}")
  |> range(start: {since.isoformat()}, stop: {(datetime.now(tz=UTC) + timedelta(hours=1)).isoformat()})
  |> filter(fn: (r) => r._measurement == "{names.MEASUREMENT_THRESHOLD_ALERT}" and r._field == "label")
  |> filter(fn: (r) => r.device_id =~ /^{prefix}/)
  |> group()'''
    return query.run_flux(settings, flux)


def _late_messages(settings: Settings, topic: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


def assert_nothing_lost(settings: Settings, pipeline: Pipeline, ledger: pd.DataFrame,
                        timeout: float = 240) -> dict[str, int]:
    """InfluxDB holds exactly the windows and alerts pandas computes from the ledger.

    Windows that must have closed (end <= last event time - watermark delay) must all be there; every
    window InfluxDB holds must be one pandas computes, with equal count and floats within 1e-9; the
    alerts of the closed sliding windows must all be there and no other alert may be.
    """
    since = datetime.fromtimestamp(int(ledger.ts.min()) / 1000, tz=UTC) - timedelta(minutes=5)
    horizon = int(ledger.ts.max()) - settings.watermark_delay_ms
    size_ms = settings.window_size_s * 1000
    shapes = {
        f"{settings.window_size_s}s": tumble_oracle(ledger, size_ms),
        f"{settings.hop_size_s}s@{settings.hop_slide_s}s": hop_oracle(
            ledger, settings.hop_size_s * 1000, settings.hop_slide_s * 1000),
    }
    hop_all = shapes[f"{settings.hop_size_s}s@{settings.hop_slide_s}s"]
    alerts_all = expected_alerts(hop_all)
    alerts_all_set = set(zip(alerts_all.device_id, alerts_all.window_end_ms, alerts_all.label, strict=True))
    alerts_closed = {a for a in alerts_all_set if a[1] <= horizon}
    assert alerts_closed, "the generated stream should raise alerts; an empty expectation proves nothing"

    def current() -> tuple[dict[str, pd.DataFrame], set[tuple[str, int, str]], int]:
        got = {w: _influx_windows(settings, pipeline.prefix, w, since) for w in shapes}
        frame = _influx_alerts(settings, pipeline.prefix, since)
        rows = 0 if frame.empty else len(frame)
        alerts = set() if frame.empty else {
            (d, int(t.timestamp() * 1000), lbl) for d, t, lbl in zip(frame.device_id, frame._time, frame._value,
                                                                      strict=True)}
        return got, alerts, rows

    def complete() -> bool:
        got, alerts, _ = current()
        for w, want in shapes.items():
            closed = want[want.window_end_ms <= horizon]
            keys = set(zip(got[w].device_id, got[w].metric, got[w].window_end_ms, strict=True))
            if not set(zip(closed.device_id, closed.metric, closed.window_end_ms, strict=True)) <= keys:
                return False
        return alerts_closed <= alerts

    wait_for(complete, timeout, "InfluxDB to hold every closed window and alert", every=3)
    got, alerts, alert_rows = current()
    summary = {"readings": len(ledger), "alerts": len(alerts)}
    for w, want in shapes.items():
        have = got[w]
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
        closed = want[want.window_end_ms <= horizon]
        assert len(closed) <= len(have)
        summary[f"windows {w}"] = len(have)
    assert alerts <= alerts_all_set, f"unexpected alerts: {sorted(alerts - alerts_all_set)[:3]}"
    assert alert_rows == len(alerts), "an alert is stored more than once"
    late = _late_messages(settings, pipeline.topics["late"])
    assert late == [], f"{len(late)} readings were counted late; the stream has none: {late[:2]}"
    return summary
