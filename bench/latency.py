"""Alert latency: a steady, wall-clock-stamped load with devices overheating at staggered times, and the time
from the completing reading to the alert in Kafka (and queryable in InfluxDB)."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.flink_runs import flink_overheat_job
from bench.kafka_data import create_topic, produce, producer, reading_json
from bench.measure import RssSampler
from machinewatch import names
from machinewatch.config import Settings

# A job under test for bench_latency(): started on (readings topic, alerts topic, tag), running and consuming
# when the context is entered, stopped when it exits; it may put notes (engine, peak RSS...) in the dict it yields.
JobUnderTest = Callable[[Settings, str, str, str], contextlib.AbstractContextManager[dict[str, Any]]]


def bench_latency(
    settings: Settings, rate: int, devices: int, seconds: int, hot: int, sampler: RssSampler, with_influx: bool,
    job: JobUnderTest = flink_overheat_job, drain_s: float = 15,
) -> dict[str, Any]:
    """Steady ``rate`` readings/s stamped with the wall clock; ``hot`` devices overheat at staggered times.

    Latency of each 'opened' alert = arrival in Kafka (and in InfluxDB) minus the publish time of the
    device's last reading before the alert's ``ts`` (the event that completed the sustained condition);
    also from the alert's ``ts`` itself (the instant the sustained duration was complete in event time).
    ``job`` is the job under test: ours (default) or spark_overheat_job; after the load, alerts still
    missing are waited for up to ``drain_s``.
    """
    from confluent_kafka import Consumer

    tag = f"lat{time.time_ns() % 10**8}"
    readings, alerts = f"mw.bench.readings.{tag}", f"mw.bench.alerts.{tag}"
    create_topic(settings, readings, settings.kafka_partitions)
    create_topic(settings, alerts, 1)
    sampler.phase = f"latency {rate}/s"
    arrivals: dict[str, tuple[float, dict[str, Any]]] = {}
    opens: dict[str, int] = {}
    influx_seen: dict[str, float] = {}
    stop = threading.Event()

    def consume() -> None:
        consumer = Consumer({"bootstrap.servers": settings.kafka_servers, "group.id": f"bench-{tag}-reader",
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
        consumer.subscribe([alerts])
        try:
            while not stop.is_set():
                msg = consumer.poll(0.05)
                if msg is None or msg.error():
                    continue
                now = time.time()
                doc = json.loads(msg.value() or b"{}")
                if doc.get("state") == "opened":
                    opens[doc["device_id"]] = opens.get(doc["device_id"], 0) + 1
                    arrivals.setdefault(doc["device_id"], (now, doc))
        finally:
            consumer.close()

    threads = [threading.Thread(target=consume, daemon=True)]
    writer = None
    if with_influx:
        from sinks.influxdb_writer import InfluxWriter, alert_line

        writer = InfluxWriter(settings, group_id=f"bench-{tag}-writer",
                              routes={alerts: (alert_line, names.BUCKET_ALERTS)})
        threads.append(threading.Thread(target=writer.run, daemon=True))
        threads.append(threading.Thread(target=poll_influx, args=(settings, stop, influx_seen), daemon=True))
    for t in threads:
        t.start()
    published: dict[str, list[tuple[int, float]]] = {f"dev-{i:06d}": [] for i in range(hot)}
    try:
        with job(settings, readings, alerts, tag) as job_info:
            prod = producer(settings, linger_ms=5)
            rng = random.Random(3)
            temps = [55 + rng.uniform(-5, 5) for _ in range(devices)]
            t_start = time.time()
            warmup = 10.0
            # Hot devices start one after another over the run (200 of them: a few per second), so each alert
            # is measured on its own and there are enough of them for a p99.
            spread = max(0.02, (seconds - warmup - settings.overheat_duration_s - 8) / max(hot, 1))
            hot_from = {i: t_start + warmup + i * spread for i in range(hot)}
            sent, i = 0, 0
            end = t_start + seconds
            while (now := time.time()) < end:
                due = int((now - t_start) * rate)
                while sent < due:
                    idx = i % devices
                    i += 1
                    temps[idx] += rng.gauss(0, 0.5) + (55 - temps[idx]) * 0.05
                    device = f"dev-{idx:06d}"
                    hot_now = idx < hot and now >= hot_from[idx]
                    ts = int(time.time() * 1000)
                    produce(prod, readings, device.encode(),
                            reading_json(device, round(temps[idx] + 40 * hot_now, 3), ts))
                    if hot_now:
                        published[device].append((ts, time.time()))
                    sent += 1
                prod.poll(0)
                time.sleep(0.002)
            prod.flush(30)
            achieved = sent / (time.time() - t_start)
            # Let the last alerts (and their InfluxDB writes) arrive.
            wait_until = time.monotonic() + drain_s
            while time.monotonic() < wait_until and (len(arrivals) < hot or (with_influx and len(influx_seen) < hot)):
                time.sleep(0.2)
    finally:
        stop.set()
        if writer is not None:
            writer.stop_event.set()
        for t in threads:
            t.join(10)
    kafka_lat, kafka_from_ts, influx_lat = [], [], []
    for device, (arrived, doc) in arrivals.items():
        before = [(ts, wall) for ts, wall in published.get(device, []) if ts < doc["ts"]]
        if not before:
            continue
        completing_wall = before[-1][1]
        kafka_lat.append(arrived - completing_wall)
        kafka_from_ts.append(arrived - doc["ts"] / 1000)
        if device in influx_seen:
            influx_lat.append(influx_seen[device] - completing_wall)
    return {"rate_target": rate, "rate_achieved": achieved, "devices": devices, "hot": hot,
            "duration_s": settings.overheat_duration_s, "seconds": seconds, "alerts": len(arrivals),
            "kafka_ms": [round(x * 1000) for x in sorted(kafka_lat)],
            "kafka_from_alert_ts_ms": [round(x * 1000) for x in sorted(kafka_from_ts)],
            "influx_ms": [round(x * 1000) for x in sorted(influx_lat)], "expected_opened": hot,
            "duration_ms": settings.overheat_duration_s * 1000, "job": job_info,
            # what decides when a bucket closes (the goal counts only with the defaults)
            "watermark_delay_ms": settings.watermark_delay_ms, "bucket_ms": settings.overheat_bucket_ms,
            # Every hot device should open exactly once and no other device at all.
            "opened_not_hot": sorted(d for d in opens if d not in published),
            "opened_more_than_once": sorted(d for d, n in opens.items() if n > 1)}


def poll_influx(settings: Settings, stop: threading.Event, seen: dict[str, float]) -> None:
    """First time each device's 'opened' alert is queryable in InfluxDB (polled every 100 ms)."""
    from influxdb_client import InfluxDBClient

    query = (f'from(bucket: "{names.BUCKET_ALERTS}") |> range(start: -30m) '
             '|> filter(fn: (r) => r._measurement == "device_alert" and r.state == "opened" '
             'and r._field == "started_ms") |> keep(columns: ["device_id"]) '
             '|> distinct(column: "device_id")')
    with InfluxDBClient(url=settings.influx, token=settings.operator_token(), org=settings.influx_org) as client:
        api = client.query_api()
        while not stop.is_set():
            with contextlib.suppress(Exception):
                for table in api.query(query):
                    for rec in table.records:
                        seen.setdefault(str(rec.get_value()), time.time())
            stop.wait(0.1)
