"""The pipeline's ends: publishing readings (bench/publisher.py), InfluxDB writes (our writer against `influx
write` or raw HTTP) and dashboard queries (bench/dashboard_queries.py)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from pydantic import SecretStr

from bench.baselines import influx_cli
from bench.common import REPO, scratch_buckets
from bench.dashboard_queries import BASELINE
from machinewatch.config import Settings


def bench_ingest(settings: Settings, events: int) -> dict[str, Any]:
    """bench/publisher.py's clients on the private broker (same data, interleaved): readings built (and
    validated) and published per CPU-second of this process."""
    from bench import publisher

    publisher.ensure_topic(settings)
    readings = publisher.make_fields(events)
    out: dict[str, Any] = {}
    for name, fn in (("kafka-python", publisher.run_kafka_python),
                     ("Publisher on librdkafka", publisher.run_publisher_librdkafka),
                     ("confluent-kafka", publisher.run_confluent)):
        wall, cpu = fn(settings, readings)
        out[name] = {"events_per_s": events / wall, "events_per_cpu_s": events / cpu, "wall_s": wall, "cpu_s": cpu}
    return out


def bench_influx_writes(settings: Settings, points: int, tmp: Path) -> dict[str, Any]:
    """Our writer end to end (``InfluxWriter.run``: Kafka poll + parse + convert + write, from a pre-loaded topic of
    the window results; on kafka-python and on the librdkafka backend) and its write path alone (converter +
    ``InfluxWriter.write`` per <= 5,000 records) vs `influx write` (or raw HTTP) on the same line protocol (the
    converter's lines equal influxdb-client's Point lines: unit-tested)."""
    import json
    import threading

    from influxdb_client import InfluxDBClient

    from bench.kafka_data import create_topic, produce, producer
    from sinks.influxdb_writer import InfluxWriter, window_line

    docs = [{"device_id": f"dev-{i % 10000:06d}", "metric": "temperature", "source": "bench", "region": "r1",
             "site": "line-a", "unit": "°C", "window_ms": 10000, "slide_ms": 10000,
             "window_end_ms": 1_700_000_000_000 + (i // 10000) * 10000, "avg_value": 50.0 + i % 7,
             "min_value": 45.0, "max_value": 55.5, "count": 10} for i in range(points)]
    lines = [window_line(d) for d in docs]
    lp = tmp / "points.lp"
    lp.write_text("\n".join(lines) + "\n")
    out: dict[str, Any] = {"points": points}
    with InfluxDBClient(url=settings.influx, token=settings.operator_token(), org=settings.influx_org) as admin:
        kinds = ("writer", "e2e", "e2e-librdkafka", "cli")
        stamp = time.time_ns() % 10**6
        with scratch_buckets(admin, settings.influx_org, [f"bench-{kind}-{stamp}" for kind in kinds]) as names:
            made = dict(zip(kinds, names, strict=True))
            # The pipeline's write token may write only to its own buckets: these fresh ones need the operator's.
            operator = settings.model_copy(update={"influx_write_token": SecretStr(settings.operator_token())})
            writer = InfluxWriter(operator, group_id="bench-unused", routes={})
            t0 = time.perf_counter()
            for k in range(0, points, 5000):  # the writer's batch is whatever one poll returned (<= 5000)
                writer.write(made["writer"], [window_line(d) for d in docs[k:k + 5000]])
            out["writer_s"] = time.perf_counter() - t0
            writer.close()
            # End to end: the same results as JSON on a topic (loaded before the clock), consumed by the writer as
            # deployed, from its start (consumer group join included) until every point is written.
            topic = f"mw.bench.influx.{time.time_ns() % 10**8}"
            create_topic(settings, topic, settings.kafka_partitions)
            prod = producer(settings)
            for d in docs:
                produce(prod, topic, str(d["device_id"]).encode(), json.dumps(d, separators=(",", ":")).encode())
            prod.flush(120)
            # On each Kafka client (MW_KAFKA_CLIENT): kafka-python, the default, and the librdkafka backend.
            for name, client in (("e2e", "kafka-python"), ("e2e-librdkafka", "confluent-kafka")):
                e2e = InfluxWriter(operator.model_copy(update={"kafka_client": client}),
                                   group_id=f"bench-{name}-{time.time_ns()}",
                                   routes={topic: (window_line, made[name])})
                t0 = time.perf_counter()
                thread = threading.Thread(target=e2e.run, daemon=True)
                thread.start()
                deadline = time.monotonic() + 600
                while e2e.written + e2e.rejected < points and time.monotonic() < deadline and thread.is_alive():
                    time.sleep(0.05)
                out[f"writer_{name.replace('-', '_')}_s"] = time.perf_counter() - t0
                e2e.stop_event.set()
                thread.join(30)
                e2e.close()
                if e2e.written != points:
                    msg = (f"the writer ({client}) wrote {e2e.written:,} of {points:,} points from Kafka "
                           f"({e2e.rejected:,} rejected)")
                    raise RuntimeError(msg)
            exe, why = influx_cli(settings)
            # Token, host and org by environment (not argv, where `ps` shows them); a private configs path so a
            # user's ~/.influxdbv2 active config cannot change the target.
            env = {**os.environ, "INFLUX_HOST": settings.influx, "INFLUX_TOKEN": settings.operator_token(),
                   "INFLUX_ORG": settings.influx_org, "INFLUX_CONFIGS_PATH": str(tmp / "influx-configs")}
            if exe is not None:
                version = subprocess.run([str(exe), "version"], capture_output=True, text=True, timeout=20,  # noqa: S603
                                         stdin=subprocess.DEVNULL, check=False).stdout.strip()
                # The same file and precision as the writer. `influx write` always gzips its request bodies and
                # sends them one at a time in 500 kB batches (neither is a flag; --compression is about the
                # input file, --rate-limit only throttles and is off by default).
                t0 = time.perf_counter()
                res = subprocess.run([str(exe), "write", "--bucket", made["cli"], "--precision", "ms",  # noqa: S603
                                      "--format", "lp", "--file", str(lp)], env=env, capture_output=True, text=True,
                                     check=False)
                out["cli_s"] = time.perf_counter() - t0
                out["cli_version"] = version
                out["baseline"] = f"`influx write` ({version.split(' (')[0]}; gzip, 500 kB batches)"
                if res.returncode != 0:
                    # Report it and still give a baseline: the raw HTTP writes below.
                    why = f"`influx write` failed (exit {res.returncode}): {' '.join(res.stderr.split())[-300:]}"
                    exe = None
            if exe is None:
                out["cli_unavailable"] = why
                # What `influx write` does (see above): POST /api/v2/write, gzip, ~500 kB batches, precision ms.
                import gzip

                session = requests.Session()
                headers = {"Authorization": f"Token {settings.operator_token()}", "Content-Encoding": "gzip"}
                t0 = time.perf_counter()
                batch: list[str] = []
                size = 0
                for i, line in enumerate(lines):
                    batch.append(line)
                    size += len(line.encode()) + 1
                    if size < 500_000 and i < len(lines) - 1:
                        continue
                    resp = session.post(f"{settings.influx}/api/v2/write", headers=headers, timeout=120,
                                        data=gzip.compress("\n".join(batch).encode()),
                                        params={"org": settings.influx_org, "bucket": made["cli"],
                                                "precision": "ms"})
                    resp.raise_for_status()
                    batch, size = [], 0
                out["cli_s"] = time.perf_counter() - t0
                out["baseline"] = "raw HTTP POST of the same line protocol (gzip, 500 kB batches)"
            # Both sides must have stored every point, or the rates compare different work.
            for name, bucket in made.items():
                flux = (f'from(bucket: "{bucket}") |> range(start: 0) |> filter(fn: (r) => r._field == "avg")'
                        " |> group() |> count()")
                stored = sum(int(r.get_value()) for t in admin.query_api().query(flux) for r in t.records)
                out[f"{name}_points_stored"] = stored
                if stored != points:
                    msg = f"{name}: InfluxDB holds {stored:,} of the {points:,} points written"
                    raise RuntimeError(msg)
    out["writer_pps"] = points / out["writer_s"]
    out["writer_e2e_pps"] = points / out["writer_e2e_s"]
    out["writer_e2e_librdkafka_pps"] = points / out["writer_e2e_librdkafka_s"]
    out["cli_pps"] = points / out["cli_s"]
    return out


def bench_dashboard(settings: Settings, tmp: Path, devices: int = 100, hours: int = 6) -> dict[str, Any]:
    """bench/dashboard_queries.py (10 s windows and their roll-ups) against the private InfluxDB."""
    out_md = tmp / f"dashboard-{devices}x{hours}h.md"
    env = {**os.environ, **settings.to_env(), "MW_INFLUX_TOKEN": settings.operator_token()}
    res = subprocess.run([sys.executable, "-m", "bench.dashboard_queries", "--devices", str(devices),  # noqa: S603
                          "--hours", str(hours), "--step-s", "10", "--repeat", "10", "--out", str(out_md)],
                         env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=3600)
    if res.returncode != 0:
        msg = f"dashboard_queries failed: {res.stderr[-1500:]}"
        raise RuntimeError(msg)
    return panel_table(out_md.read_text().splitlines(), devices, hours)


def panel_table(lines: list[str], devices: int, hours: int) -> dict[str, Any]:
    """The panel rows of dashboard_queries' Markdown table, their worst and median p95, and the floor's p95 (the
    baseline row, which no goal counts)."""
    rows = [ln for ln in lines if ln.startswith("| ") and "panel query" not in ln]
    panels = [r for r in rows if r.split("|")[4].strip() != BASELINE]
    floor = [float(r.split("|")[3]) for r in rows if r not in panels]
    p95s = [float(r.split("|")[3]) for r in panels]
    return {"devices": devices, "hours": hours, "table": rows, "worst_p95_ms": max(p95s),
            "median_p95_ms": statistics.median(p95s), "floor_p95_ms": floor[0] if floor else None}
