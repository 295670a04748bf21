"""The benchmark's phases: each measures one thing on the private stack and adds its rows to the report.

``PHASES`` is their order and their ``--skip`` names; a phase that fails is reported as FAILED with its
traceback in the raw numbers, and the next one runs.
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.baselines import bench_raw_consume, bench_spark, bench_spark_overheat, spark_overheat_job
from bench.capacity import influx_capacity, job_capacity
from bench.flink_runs import run_job_on_backlog, run_pipeline_on_backlog
from bench.io_benchmarks import bench_dashboard, bench_influx_writes, bench_ingest
from bench.kafka_data import preload
from bench.latency import bench_latency
from bench.measure import RssSampler, cpu_note, gib, pct
from bench.report import Report
from machinewatch.config import Settings


@dataclass
class Run:
    """What every phase works with: the private stack's settings, the pre-loaded backlog, the options."""

    settings: Settings
    topic: str  # the backlog: ``events`` readings of ``args.devices`` devices
    events: int
    args: argparse.Namespace
    latency_seconds: int
    sampler: RssSampler
    tmp: Path
    report: Report


def raw(run: Run) -> None:
    report = run.report
    runs = bench_raw_consume(run.settings, run.topic, run.events, 1 if run.args.quick else 2)
    report.raw["raw_consume"] = runs
    best = max(r["msg_per_s"] for r in runs)
    report.add("1 throughput", "raw JVM consume (ConsumerPerformance), events/s", f"{best:,.0f}",
               "best of runs; fetch-only: " + ", ".join(f"{r['fetch_msg_per_s']:,.0f}" for r in runs))


def window(run: Run) -> None:
    report = run.report
    # The first job on a fresh TaskManager JVM runs cold (class loading, JIT): timed and reported,
    # then the same job again, warm; the warm run is the one compared (PySpark's is warm as well).
    cold = run_job_on_backlog(run.settings, "window-aggregates", run.topic, run.events, "win0", run.sampler)
    report.raw["window_job_cold"] = cold
    report.add("1 throughput", "our window-aggregates job, first run on a cold TaskManager, events/s",
               f"{cold['events_per_s']:,.0f}", f"{cold['events_per_s_incl_startup']:,.0f} incl. job start")
    r = run_job_on_backlog(run.settings, "window-aggregates", run.topic, run.events, "win1", run.sampler)
    report.raw["window_job"] = r
    report.add("1 throughput", "our window-aggregates job (PyFlink SQL, p=1: 10 s tumbling + 30 s/10 s "
               "sliding windows + late-event check + threshold rules, one statement set), events/s",
               f"{r['events_per_s']:,.0f}",
               f"{r['events_per_s_incl_startup']:,.0f} incl. job start ({r['submit_to_done_s']:.0f} s)"
               + cpu_note(r))


def overheat(run: Run) -> None:
    report = run.report
    r = run_job_on_backlog(run.settings, "sustained-overheat", run.topic, run.events, "oh1", run.sampler,
                           max_read_s=60 if run.args.quick else 120)
    report.raw["overheat_job"] = r
    part = "" if r["complete"] else f"; stopped after reading {r['events']:,} of {run.events:,}"
    report.add("1 throughput", "our sustained-overheat job (SQL buckets + prefilter + Python lifecycle), "
               "events/s", f"{r['events_per_s']:,.0f}",
               f"{r['events_per_s_incl_startup']:,.0f} incl. job start{part}" + cpu_note(r))
    # The same job with its SQL prefilter off (every device-bucket through Python): what it buys.
    off = run.settings.model_copy(update={"overheat_prefilter": False})
    r = run_job_on_backlog(off, "sustained-overheat", run.topic, run.events, "oh0", run.sampler,
                           max_read_s=30 if run.args.quick else 60)
    report.raw["overheat_job_no_prefilter"] = r
    part = "" if r["complete"] else f"; stopped after reading {r['events']:,} of {run.events:,}"
    report.add("1 throughput", "same job, MW_OVERHEAT_PREFILTER=false (Python runs per device-second), "
               "events/s", f"{r['events_per_s']:,.0f}", f"for comparison{part}" + cpu_note(r))


def pipeline(run: Run) -> None:
    report = run.report
    r = run_pipeline_on_backlog(run.settings, run.topic, run.events, run.sampler)
    report.raw["pipeline"] = r
    report.add("1 throughput", "the pipeline: window-aggregates + sustained-overheat jobs together on the "
               "backlog (one slot each), events/s", f"{r['events_per_s']:,.0f}",
               "until both read all; per job: " + ", ".join(f"{k} {v:.0f} s"
                                                           for k, v in r["per_job_s"].items())
               + cpu_note(r))


def spark(run: Run) -> None:
    report = run.report
    r = bench_spark(run.settings, run.topic, "thr", run.sampler, run.tmp)
    report.raw["pyspark"] = r
    cold = r["runs"][0]["rows_in"] / r["runs"][0]["wall_s"]
    report.add("1 throughput",
               f"PySpark {r['spark']} Structured Streaming, 10 s tumbling windows only, events/s",
               f"{r['events_per_s']:,.0f}",
               f"2nd run in the same session (1st, cold: {cold:,.0f}"
               f"/s); availableNow, {r['batches']} micro-batches, session start {r['session_s']:.0f} s "
               f"excluded; peak RSS {gib(r['peak_rss'])}")


def spark_overheat(run: Run) -> None:
    report = run.report
    r = bench_spark_overheat(run.settings, run.topic, "thr", run.sampler, run.tmp)
    report.raw["pyspark_overheat"] = r
    cold = r["runs"][0]["rows_in"] / r["runs"][0]["wall_s"]
    report.add("1 throughput", f"PySpark {r['spark']} sustained-overheat twin (1 s buckets in Spark SQL + "
               "transformWithStateInPandas running the same overheat_logic), events/s",
               f"{r['events_per_s']:,.0f}",
               f"2nd run (1st, cold: {cold:,.0f}/s); {r['batches']} micro-batches; "
               f"{len(r['alerts']['opened_devices'])} devices opened; peak RSS {gib(r['peak_rss'])}")


def latency(run: Run) -> None:
    report = run.report
    r = bench_latency(run.settings, run.args.rate, run.args.latency_devices, run.latency_seconds, 10, run.sampler,
                      with_influx=True)
    report.raw["latency"] = r
    k, i = r["kafka_ms"], r["influx_ms"]
    note = (f"target {r['rate_target']:,}/s, achieved {r['rate_achieved']:,.0f}/s, {r['devices']:,} "
            f"devices, sustained duration {r['duration_s']} s, {r['alerts']}/{r['hot']} alerts opened")
    report.add("2 latency", "completing event -> alert in Kafka, p50 / p99 ms",
               f"{pct(k, 0.5):,.0f} / {pct(k, 0.99):,.0f}", note)
    report.add("2 latency", "alert ts (duration complete) -> alert in Kafka, p50 / p99 ms",
               f"{pct(r['kafka_from_alert_ts_ms'], 0.5):,.0f} / "
               f"{pct(r['kafka_from_alert_ts_ms'], 0.99):,.0f}", "")
    report.add("2 latency", "completing event -> alert queryable in InfluxDB, p50 / p99 ms",
               f"{pct(i, 0.5):,.0f} / {pct(i, 0.99):,.0f}", f"{len(i)} alerts; polled every 100 ms")


def latency_small_watermark(run: Run) -> None:
    report = run.report
    # Same run with a 200 ms out-of-orderness bound: how much of the latency is that bound.
    fast = run.settings.model_copy(update={"watermark_delay_ms": 200})
    r = bench_latency(fast, run.args.rate, run.args.latency_devices, run.latency_seconds, 10, run.sampler,
                      with_influx=False)
    report.raw["latency_watermark_200ms"] = r
    report.add("2 latency", "same, MW_WATERMARK_DELAY_MS=200: completing event -> alert in Kafka, "
               "p50 / p99 ms", f"{pct(r['kafka_ms'], 0.5):,.0f} / {pct(r['kafka_ms'], 0.99):,.0f}",
               f"achieved {r['rate_achieved']:,.0f}/s, {r['alerts']}/{r['hot']} alerts opened")


def latency_spark(run: Run) -> None:
    report = run.report
    r = bench_latency(run.settings, run.args.rate, run.args.latency_devices, run.latency_seconds, 10, run.sampler,
                      with_influx=False, job=spark_overheat_job, drain_s=60)
    report.raw["latency_pyspark"] = r
    batch = r["job"].get("batch_ms") or []
    report.add("2 latency", "PySpark twin: completing event -> alert in Kafka, p50 / p99 ms",
               f"{pct(r['kafka_ms'], 0.5):,.0f} / {pct(r['kafka_ms'], 0.99):,.0f}",
               f"achieved {r['rate_achieved']:,.0f}/s, {r['alerts']}/{r['hot']} alerts opened (60 s "
               f"drain); micro-batch median {pct(batch, 0.5):,.0f} ms")


def ingest(run: Run) -> None:
    report = run.report
    r = bench_ingest(run.settings, 50_000 if run.args.quick else 200_000)
    report.raw["ingest"] = r
    for name, v in r.items():
        report.add("3 ingest", f"{name} publisher, events/s (per CPU-s)",
                   f"{v['events_per_s']:,.0f} ({v['events_per_cpu_s']:,.0f})", "bench/publisher.py")


def influx(run: Run) -> None:
    report = run.report
    r = bench_influx_writes(run.settings, 50_000 if run.args.quick else 200_000, run.tmp)
    report.raw["influx_writes"] = r
    report.add("4 influx", "our writer (InfluxWriter.write), points/s", f"{r['writer_pps']:,.0f}",
               f"{r['points']:,} window points")
    report.add("4 influx", f"baseline: {r['baseline']}, points/s", f"{r['cli_pps']:,.0f}",
               f"`influx` CLI unavailable: {r['cli_unavailable']}" if "cli_unavailable" in r else "")


def dashboard(run: Run) -> None:
    report = run.report
    r = bench_dashboard(run.settings, run.tmp)
    report.raw["dashboard"] = r
    report.add("5 dashboard", "panel queries, median / worst p95 ms (100 devices x 6 h)",
               f"{r['median_p95_ms']:,.0f} / {r['worst_p95_ms']:,.0f}", "bench/dashboard_queries.py")
    from bench import dashboard_render

    hours = 1 if run.args.quick else 6
    d = dashboard_render.measure(run.settings, devices=100, hours=hours, runs=3)
    report.raw["dashboard_render"] = d
    for kind in ("cold", "warm"):
        v = d[kind]
        report.add("5 dashboard", f"Streamlit first render in headless Chromium, {kind} (new profile"
                   f"{'' if kind == 'cold' else ', then reload'}), median / p95 ms (100 devices x "
                   f"{hours} h of 10 s windows)", f"{v['median_ms']:,.0f} / {v['p95_ms']:,.0f}",
                   "every chart drawn; bench/dashboard_render.py"
                   + (f"; {v['errors']} loads showed an error: {v['error']}" if v.get("errors") else ""))


def scale(run: Run) -> None:
    report = run.report
    sizes = [1_000, 100_000] if not run.args.quick else [1_000]
    per = run.events if run.args.quick else max(run.events // 2, 200_000)
    for n in sizes:
        t = f"mw.bench.backlog.{n}"
        preload(run.settings, t, per, n, hot_devices=min(20, n))
        r = run_job_on_backlog(run.settings, "window-aggregates", t, per, f"dev{n}", run.sampler)
        report.raw[f"scale_devices_{n}"] = r
        report.add("7 scale", f"window job, {n:,} devices ({per:,} events), events/s",
                   f"{r['events_per_s']:,.0f}", "")
    par = run.settings.model_copy(update={"flink_parallelism": 2})
    r = run_job_on_backlog(par, "window-aggregates", run.topic, run.events, "p2", run.sampler)
    report.raw["scale_parallelism_2"] = r
    report.add("7 scale", f"window job, 2 task slots (parallelism 2), {run.args.devices:,} devices, events/s",
               f"{r['events_per_s']:,.0f}", cpu_note(r).lstrip("; "))
    # Alert latency at the other device counts and at parallelism 2 (the 1,000-device, p=1 point is
    # in section 2), same rate and watermark delay.
    points = [(n, run.settings) for n in ((10_000,) if run.args.quick else (10_000, 100_000))]
    points.append((run.args.latency_devices, par))
    for n, s in points:
        r = bench_latency(s, run.args.rate, n, run.latency_seconds, 10, run.sampler, with_influx=False)
        report.raw[f"scale_latency_{n}_p{s.flink_parallelism}"] = r
        report.add("7 scale", f"overheat alert latency, {n:,} devices, parallelism "
                   f"{s.flink_parallelism}: completing event -> Kafka, p50 / p99 ms",
                   f"{pct(r['kafka_ms'], 0.5):,.0f} / {pct(r['kafka_ms'], 0.99):,.0f}",
                   f"achieved {r['rate_achieved']:,.0f}/s, {r['alerts']}/{r['hot']} alerts opened")


def capacity(run: Run) -> None:
    """The per-unit figures docs/CAPACITY.md scales from: CPU-seconds, state and checkpoints, InfluxDB points."""
    report = run.report
    for job in ("window-aggregates", "sustained-overheat"):
        r = job_capacity(run.settings, job, run.topic, run.events, run.args.devices, f"cap-{job}", run.sampler)
        report.raw[f"capacity_{job}"] = r
        report.add("8 capacity", f"{job}: CPU-s per million readings, whole stack (TaskManager incl. Python / "
                   "Kafka)", f"{r['cpu_s_per_million']:,.0f}",
                   f"{r['cpu_s_per_million_taskmanager']:,.0f} / {r['cpu_s_per_million_kafka']:,.0f}")
        report.add("8 capacity", f"{job}: checkpoint after the backlog, state bytes per device "
                   f"({run.args.devices:,} devices)", f"{r['state_bytes_per_device']:,.0f}",
                   f"{r['checkpoint_state_bytes']:,} B in {r['checkpoint_ms']:,} ms")
    r = influx_capacity(run.settings, 50_000 if run.args.quick else 200_000, run.args.devices, run.sampler)
    report.raw["capacity_influxdb"] = r
    report.add("8 capacity", "InfluxDB: window points per CPU-second of influxd (of our writer)",
               f"{r['points_per_influxd_cpu_s']:,}", f"writer {r['points_per_writer_cpu_s']:,}; {r['points']:,} points "
               f"of {r['series']:,} series")


PHASES: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("raw", raw), ("window", window), ("overheat", overheat), ("pipeline", pipeline), ("spark", spark),
    ("spark-overheat", spark_overheat), ("latency", latency), ("latency-wm", latency_small_watermark),
    ("latency-spark", latency_spark), ("ingest", ingest), ("influx", influx), ("dashboard", dashboard),
    ("scale", scale), ("capacity", capacity),
)


def run_phases(run: Run, skip: set[str]) -> None:
    """Every phase in order, but those in ``skip``; one failed phase must not lose the others."""
    report = run.report
    for name, fn in PHASES:
        if name in skip:
            report.notes.append(f"`{name}` skipped on request (--skip).")
            continue
        try:
            fn(run)
        except Exception as exc:  # noqa: BLE001 - one failed phase must not lose the others
            traceback.print_exc()
            report.add(name, "FAILED", "–", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            report.raw.setdefault("errors", {})[name] = traceback.format_exc()[-3000:]


def memory(run: Run) -> None:
    """The stack's peak RSS over all phases (sampled all along), per process tree and per phase."""
    sampler, report = run.sampler, run.report
    sampler.sample()
    report.raw["rss_peak_by_process_tree"] = {k: gib(v) for k, v in sampler.peak_by.items()}
    report.raw["rss_peak_by_phase"] = {k: gib(v) for k, v in sampler.phase_peak.items()}
    report.add("6 memory", "peak RSS of the whole stack (Kafka + Flink JM + TM incl. Python workers + "
               "InfluxDB), summed per sample", gib(sampler.peak_total),
               "per tree (each its own peak): "
               + ", ".join(f"{k} {gib(v)}" for k, v in sampler.peak_by.items()))
