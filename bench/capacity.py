"""Capacity figures (docs/CAPACITY.md): per-device state, checkpoint size and time, CPU-seconds per million
readings of each job, InfluxDB points per CPU-second of influxd.

CPU is counted from /proc per process tree, not taken from wall-clock rates: the machine is shared, and
CPU-seconds per unit of work move far less with other people's load than events per second do.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import requests
from pydantic import SecretStr

from bench.common import scratch_buckets
from bench.flink_runs import source_count, wait_slots_free
from bench.kafka_data import create_topic
from bench.measure import RssSampler
from machinewatch import jobs
from machinewatch.config import Settings


def _latest_checkpoint(settings: Settings, job_id: str) -> dict[str, Any] | None:
    resp = requests.get(f"{settings.flink_rest}/jobs/{job_id}/checkpoints", timeout=10)
    resp.raise_for_status()
    completed = (resp.json().get("latest") or {}).get("completed")
    return dict(completed) if completed else None


def job_capacity(settings: Settings, job: str, topic: str, events: int, devices: int, tag: str,
                 sampler: RssSampler, timeout: float = 900) -> dict[str, Any]:
    """Run ``job`` over the backlog; CPU-seconds of the whole stack per million readings while it reads, then
    the first checkpoint completed after the backlog was read: its state size per device and its duration."""
    sampler.phase = f"capacity {job}"
    args = ["--readings-topic", topic, "--alerts-topic", f"mw.bench.cap-alerts.{tag}",
            "--group-id", f"bench-cap-{tag}-{time.time_ns()}", "--job-name", f"bench-cap-{job}-{tag}"]
    if job == "window-aggregates":
        args += ["--aggregates-topic", f"mw.bench.cap-aggregates.{tag}", "--late-topic", f"mw.bench.cap-late.{tag}"]
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag.endswith("-topic") and value != topic:
            create_topic(settings, value, settings.kafka_partitions)
    job_id = jobs.submit(settings, job, args)
    try:
        deadline = time.monotonic() + timeout
        cpu0: dict[str, float] | None = None
        first = count = 0
        while count < events:
            if time.monotonic() > deadline:
                msg = f"{job} read only {count} of {events} in {timeout:.0f}s"
                raise RuntimeError(msg)
            with contextlib.suppress(requests.RequestException, KeyError, ValueError):
                count = source_count(settings, job_id)
            if count and cpu0 is None:
                cpu0, first = sampler.cpu_seconds(), count
            time.sleep(0.5)
        assert cpu0 is not None
        cpu1 = sampler.cpu_seconds()
        read_at_ms = time.time() * 1000
        used = {k: cpu1.get(k, 0.0) - v for k, v in cpu0.items()}
        checkpoint = None
        while time.monotonic() < deadline:
            checkpoint = _latest_checkpoint(settings, job_id)
            if checkpoint and checkpoint.get("trigger_timestamp", 0) > read_at_ms:
                break
            time.sleep(1)
        if not checkpoint or checkpoint.get("trigger_timestamp", 0) <= read_at_ms:
            msg = f"{job}: no checkpoint completed after the backlog was read"
            raise RuntimeError(msg)
        million = (count - first) / 1e6
        state = int(checkpoint.get("state_size") or 0)
        return {
            "job_id": job_id, "events": count - first, "devices": devices,
            "cpu_s": {k: round(v, 1) for k, v in used.items()},
            "cpu_s_per_million": round(sum(used.values()) / million, 1),
            "cpu_s_per_million_taskmanager": round(used.get("flink-taskmanager", 0.0) / million, 1),
            "cpu_s_per_million_kafka": round(used.get("kafka", 0.0) / million, 1),
            "checkpoint_state_bytes": state,
            "checkpointed_bytes": int(checkpoint.get("checkpointed_size") or 0),
            "checkpoint_ms": int(checkpoint.get("end_to_end_duration") or 0),
            "state_bytes_per_device": round(state / devices, 1),
        }
    finally:
        with contextlib.suppress(Exception):
            jobs.cancel(settings, job_id)
        wait_slots_free(settings)


def influx_capacity(settings: Settings, points: int, devices: int, sampler: RssSampler) -> dict[str, Any]:
    """Window points written by our writer into a fresh bucket: points per CPU-second of influxd (its whole
    tree) and of the writer (this process)."""
    from influxdb_client import InfluxDBClient

    from sinks.influxdb_writer import InfluxWriter, window_line

    sampler.phase = "capacity influxdb"
    lines = [window_line({
        "device_id": f"dev-{i % devices:06d}", "metric": "temperature", "source": "bench", "region": "r1",
        "site": "line-a", "unit": "°C", "window_ms": 10000, "slide_ms": 10000,
        "window_end_ms": 1_700_000_000_000 + (i // devices) * 10000, "avg_value": 50.0 + i % 7,
        "min_value": 45.0, "max_value": 55.5, "count": 10}) for i in range(points)]
    with (InfluxDBClient(url=settings.influx, token=settings.operator_token(), org=settings.influx_org) as admin,
          scratch_buckets(admin, settings.influx_org, [f"bench-capacity-{time.time_ns() % 10**6}"]) as (bucket,)):
        operator = settings.model_copy(update={"influx_write_token": SecretStr(settings.operator_token())})
        writer = InfluxWriter(operator, group_id="bench-unused", routes={})
        cpu0, own0 = sampler.cpu_seconds(), time.process_time()
        for k in range(0, points, 5000):
            writer.write(bucket, lines[k:k + 5000])
        cpu1, own1 = sampler.cpu_seconds(), time.process_time()
        writer.close()
    influxd = cpu1.get("influxdb", 0.0) - cpu0.get("influxdb", 0.0)
    return {"points": points, "series": devices, "influxd_cpu_s": round(influxd, 2),
            "writer_cpu_s": round(own1 - own0, 2),
            "points_per_influxd_cpu_s": round(points / max(influxd, 1e-6)),
            "points_per_writer_cpu_s": round(points / max(own1 - own0, 1e-6))}
