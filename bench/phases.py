"""The benchmark's phases: each measures one thing on the private stack and adds its rows to the report.

``PHASES`` is their order and their ``--skip`` names; a phase that fails is reported as FAILED with its
traceback in the raw numbers, and the next one runs.
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.baselines import bench_raw_consume, bench_spark, bench_spark_overheat, spark_overheat_job
from bench.capacity import influx_capacity, job_capacity
from bench.compare import Comparison, compare, percentiles, transition_key, tumbling_windows, window_key, window_value
from bench.flink_runs import PASSTHROUGH, no_rules, run_job_on_backlog, run_pipeline_on_backlog
from bench.io_benchmarks import bench_dashboard, bench_influx_writes, bench_ingest
from bench.kafka_data import preload, read_alerts
from bench.latency import bench_latency
from bench.measure import RssSampler, cpu_note, gib, pct
from bench.report import Report
from machinewatch.config import Settings
from machinewatch.rollups import ROLLUP_1M, flux_duration


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
    # Output topics of our jobs' backlog runs, by phase: the PySpark phases compare their outputs with these.
    outputs: dict[str, list[str]] = field(default_factory=dict)
    hover_topic: str | None = None  # the "hover" backlog, once loaded (hover_backlog())


HOVER_FRACTION = 0.3


def hover_backlog(run: Run) -> str:
    """The same size of backlog with 30 % of the devices hovering around the overheat threshold (loaded once)."""
    if run.hover_topic is None:
        topic = f"{run.topic}.hover"
        stats: dict[str, Any] = {}
        preload(run.settings, topic, run.events, run.args.devices, hover_fraction=HOVER_FRACTION, stats=stats)
        run.report.raw["preload_hover"] = {"events": run.events, "devices": run.args.devices, **stats}
        run.hover_topic = topic
    return run.hover_topic


def ratio_note(run: Run, key: str) -> str:
    p = run.report.raw.get(key, {})
    return (f"; overheat ratio {p['overheat_ratio']:.1%} of readings ≥ {p['threshold_c']:g} °C"
            if "overheat_ratio" in p else "")


def src(r: dict[str, Any]) -> str:
    """The source-only rate; "≥" when the whole backlog was read between two 0.5 s samples (a lower bound)."""
    return f"{'≥ ' if r.get('source_rate_is_lower_bound') else ''}{r['source_events_per_s']:,.0f}"


def e2e_note(r: dict[str, Any]) -> str:
    if "e2e_s" not in r:
        return "did not finish: source-only rate"
    # How long output kept coming after the source had read everything (windows firing, the Python stage
    # draining; also anything emitted only once the source went idle, MW_SOURCE_IDLE_TIMEOUT_MS).
    drain = f"; last output {r['e2e_s'] - r['submit_to_done_s']:.1f} s after the source read all" \
        if "submit_to_done_s" in r else ""
    return f"submission to last output record in Kafka {r['e2e_s']:.1f} s ({r['output_records']:,} records out){drain}"


def checked(run: Run, c: Comparison) -> bool:
    """Record a comparison of the engines' outputs; a row whose outputs differ reports that, not a figure."""
    run.report.raw.setdefault("output_checks", {})[c.what] = c.as_dict()
    run.report.add("0 same work", c.what, "same" if c.equal else "DIFFER", c.summary())
    return c.equal


def compare_outputs(run: Run, what: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: Any,
                    value: Any = None) -> bool:
    """Our output against PySpark's; with --perturb-pyspark also a self-check row, the same comparison with one
    PySpark record dropped, which must come out DIFFER (the check can fail)."""
    if getattr(run.args, "perturb_pyspark", False):
        c = compare(f"{what} (self-check: one PySpark record dropped)", ("flink", ours), ("pyspark", theirs[1:]),
                    key, value)
        checked(run, c)
        run.report.raw.setdefault("self_checks_caught", []).append(not c.equal)
    return checked(run, compare(what, ("flink", ours), ("pyspark", theirs), key, value))


def raw(run: Run) -> None:
    report = run.report
    runs = bench_raw_consume(run.settings, run.topic, run.events, 1 if run.args.quick else 2)
    report.raw["raw_consume"] = runs
    best = max(r["msg_per_s"] for r in runs)
    report.add("1 throughput", "raw JVM consume (ConsumerPerformance), events/s", f"{best:,.0f}",
               "best of runs; fetch-only: " + ", ".join(f"{r['fetch_msg_per_s']:,.0f}" for r in runs))
    # The limit row: Flink SQL's own ceiling on this topic (same source and JSON decode, blackhole sink).
    r = run_job_on_backlog(run.settings, PASSTHROUGH, run.topic, run.events, "pass", run.sampler)
    report.raw["flink_passthrough"] = r
    report.add("1 throughput", "limit: Flink SQL pass-through of the same topic (Kafka source, JSON decode of every "
               "column -> blackhole, p=1), events/s (source, first to last record)",
               f"{src(r)}",
               f"{r['events_per_s_incl_startup']:,.0f} incl. job start" + cpu_note(r))


def window(run: Run) -> None:
    report = run.report
    # The first job on a fresh TaskManager JVM runs cold (class loading, JIT): timed and reported,
    # then the same job again, warm; the warm run is the one compared (PySpark's is warm as well).
    cold = run_job_on_backlog(run.settings, "window-aggregates", run.topic, run.events, "win0", run.sampler)
    report.raw["window_job_cold"] = cold
    report.add("1 throughput", "our window-aggregates job, first run on a cold TaskManager, events/s (submission to "
               "last output)", f"{cold['events_per_s']:,.0f}",
               f"source only: {src(cold)}; " + e2e_note(cold))
    r = run_job_on_backlog(run.settings, "window-aggregates", run.topic, run.events, "win1", run.sampler)
    report.raw["window_job"] = r
    run.outputs["window"] = r["output_topics"]
    report.add("1 throughput", "our window-aggregates job (PyFlink SQL, p=1: 10 s tumbling + 30 s/10 s "
               "sliding windows + 1 min/1 h roll-ups + late-event check + threshold rules, one statement set), "
               "events/s (submission to "
               "last output)", f"{r['events_per_s']:,.0f}", e2e_note(r) + cpu_note(r))
    report.add("1 throughput", "… same run, source only (first to last record read), events/s",
               f"{src(r)}", "secondary: no job start-up, no downstream drain")
    # Like for like with the PySpark twin (10 s tumbling windows only): the same job with the sliding windows and
    # the roll-ups off (MW_HOP_SIZE_S=0, MW_ROLLUPS=false) and no threshold rules; its late-event check stays
    # (work PySpark's twin does not do).
    tumbling = run.settings.model_copy(update={"hop_size_s": 0, "rollups": False})
    r = run_job_on_backlog(tumbling, "window-aggregates", run.topic, run.events, "win2", run.sampler,
                           extra_args=no_rules(run.tmp))
    report.raw["window_job_tumbling_only"] = r
    report.add("1 throughput", "our window job doing what the PySpark twin does: 10 s tumbling windows only "
               "(MW_HOP_SIZE_S=0, MW_ROLLUPS=false, no rules; the late-event check stays), events/s (submission to "
               "last output)",
               f"{r['events_per_s']:,.0f}", e2e_note(r) + f"; source only {src(r)}/s"
               + cpu_note(r))


def overheat(run: Run) -> None:
    report = run.report
    r = run_job_on_backlog(run.settings, "sustained-overheat", run.topic, run.events, "oh1", run.sampler,
                           max_read_s=60 if run.args.quick else 120)
    report.raw["overheat_job"] = r
    run.outputs["overheat"] = r["output_topics"]
    part = "" if r["complete"] else f"; stopped after reading {r['events']:,} of {run.events:,}"
    report.add("1 throughput", "our sustained-overheat job (SQL buckets + prefilter + Python lifecycle), "
               "events/s (submission to last output)", f"{r['events_per_s']:,.0f}",
               e2e_note(r) + part + ratio_note(run, "preload") + cpu_note(r))
    report.add("1 throughput", "… same run, source only (first to last record read), events/s",
               f"{src(r)}", "secondary: no job start-up, no downstream drain")
    # The prefilter's typical case: many devices near the threshold, so many buckets reach Python.
    r = run_job_on_backlog(run.settings, "sustained-overheat", hover_backlog(run), run.events, "ohh", run.sampler,
                           max_read_s=60 if run.args.quick else 120)
    report.raw["overheat_job_hover"] = r
    run.outputs["overheat_hover"] = r["output_topics"]
    part = "" if r["complete"] else f"; stopped after reading {r['events']:,} of {run.events:,}"
    report.add("1 throughput", f"same job on the hover backlog ({HOVER_FRACTION:.0%} of devices crossing the "
               "threshold every 2 min), events/s (submission to last output)", f"{r['events_per_s']:,.0f}",
               e2e_note(r) + part + ratio_note(run, "preload_hover") + cpu_note(r))
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
               "backlog (one slot each), events/s (submission to last output)", f"{r['events_per_s']:,.0f}",
               e2e_note(r) + f"; source only (until both read all): {src(r)}/s; per job: "
               + ", ".join(f"{k} {v:.0f} s" for k, v in r["per_job_s"].items()) + cpu_note(r))


def spark(run: Run) -> None:
    report = run.report
    r = bench_spark(run.settings, run.topic, "thr", run.sampler, run.tmp)
    report.raw["pyspark"] = r
    cold = r["runs"][0]["rows_in"] / r["runs"][0]["wall_s"]
    # Like for like: Spark's 10 s tumbling windows against our job's 10 s tumbling windows of the same backlog.
    equal = None
    if "window" in run.outputs:
        size = run.settings.window_size_s * 1000
        aggregates = next(t for t in run.outputs["window"] if ".aggregates." in t)
        ours = tumbling_windows(read_alerts(run.settings, aggregates), size)
        theirs = read_alerts(run.settings, r["out_topic"], since_ms=r["out_since_ms"])
        equal = compare_outputs(run, f"{run.settings.window_size_s} s tumbling windows: our window job vs PySpark",
                                ours, theirs, window_key, window_value)
    spark_row(run, r, equal, "window",
              f"PySpark {r['spark']} Structured Streaming, 10 s tumbling windows only, events/s (start() to last "
              "output)",
              f"2nd run in the same session (1st, cold: {cold:,.0f}/s, start() to end); availableNow, "
              f"{r['batches']} micro-batches, session start {r['session_s']:.0f} s excluded; start() to end of the "
              f"query: {r['start_to_end_events_per_s']:,.0f}/s; peak RSS {gib(r['peak_rss'])}")


def spark_row(run: Run, r: dict[str, Any], equal: bool | None, ours: str, what: str, notes: str) -> None:
    """A PySpark throughput row: its figure only when its outputs were checked equal to ours (or not checked
    because our phase ``ours`` was skipped); outputs that differ give no figure."""
    r["outputs_equal"] = equal
    if equal is False:
        run.report.add("1 throughput", what, "outputs differ", "not a figure: see the check above")
        return
    run.report.add("1 throughput", what, f"{r['events_per_s']:,.0f}",
                   f"{'outputs checked equal' if equal else f'outputs NOT checked ({ours} phase skipped)'}; {notes}")


def spark_overheat(run: Run) -> None:
    for backlog, ours_key, raw_key, tag, label in (
            (run.topic, "overheat", "pyspark_overheat", "thr", ""),
            (hover_backlog(run), "overheat_hover", "pyspark_overheat_hover", "hov", ", hover backlog")):
        spark_overheat_on(run, backlog, ours_key, raw_key, tag, label)


def spark_overheat_on(run: Run, backlog: str, ours_key: str, raw_key: str, tag: str, label: str) -> None:
    report = run.report
    r = bench_spark_overheat(run.settings, backlog, tag, run.sampler, run.tmp)
    report.raw[raw_key] = r
    cold = r["runs"][0]["rows_in"] / r["runs"][0]["wall_s"]
    equal = None
    if ours_key in run.outputs:
        ours = [d for t in run.outputs[ours_key] for d in read_alerts(run.settings, t)]
        theirs = read_alerts(run.settings, r["out_topic"], since_ms=r["out_since_ms"])
        equal = compare_outputs(run, f"sustained-overheat alert transitions{label}: our job vs PySpark", ours,
                                theirs, transition_key)
    spark_row(run, r, equal, "overheat",
              f"PySpark {r['spark']} sustained-overheat twin{label} (1 s buckets in Spark SQL + "
              "transformWithStateInPandas running the same overheat_logic), events/s (start() to last output)",
              f"2nd run (1st, cold: {cold:,.0f}/s, start() to end); {r['batches']} micro-batches; "
              f"{len(r['alerts']['opened_devices'])} devices opened; peak RSS {gib(r['peak_rss'])}")


def hot_devices(run: Run) -> int:
    """Devices that overheat in a latency run, one alert each: 200 (enough for a p99), 20 with --small."""
    return 20 if getattr(run.args, "small", False) else 200


P3 = "p50 / p95 / p99 ms (n)"


def latency(run: Run) -> None:
    report = run.report
    r = bench_latency(run.settings, run.args.rate, run.args.latency_devices, run.latency_seconds, hot_devices(run),
                      run.sampler, with_influx=True)
    report.raw["latency"] = r
    k, i = r["kafka_ms"], r["influx_ms"]
    note = (f"target {r['rate_target']:,}/s, achieved {r['rate_achieved']:,.0f}/s, {r['devices']:,} "
            f"devices, sustained duration {r['duration_s']} s, {r['alerts']}/{r['hot']} alerts opened")
    report.add("2 latency", f"completing event -> alert in Kafka, {P3}", percentiles(k).text(), note)
    report.add("2 latency", f"alert ts (duration complete) -> alert in Kafka, {P3}",
               percentiles(r["kafka_from_alert_ts_ms"]).text(), "")
    report.add("2 latency", f"completing event -> alert queryable in InfluxDB, {P3}", percentiles(i).text(),
               "polled every 100 ms")


def latency_small_watermark(run: Run) -> None:
    report = run.report
    # Same run with a 200 ms out-of-orderness bound: how much of the latency is that bound.
    fast = run.settings.model_copy(update={"watermark_delay_ms": 200})
    r = bench_latency(fast, run.args.rate, run.args.latency_devices, run.latency_seconds, hot_devices(run),
                      run.sampler, with_influx=False)
    report.raw["latency_watermark_200ms"] = r
    report.add("2 latency", f"same, MW_WATERMARK_DELAY_MS=200: completing event -> alert in Kafka, {P3}",
               percentiles(r["kafka_ms"]).text(),
               f"achieved {r['rate_achieved']:,.0f}/s, {r['alerts']}/{r['hot']} alerts opened")


# (watermark delay ms, allowed lateness s, disorders s): the default, the 200 ms bound the latency rows also
# try, and that bound with the remedy (allowed lateness) at the largest disorder.
DISORDER_RUNS: tuple[tuple[int, int, tuple[float, ...]], ...] = (
    (2000, 0, (0.5, 1.0, 2.0)), (200, 0, (0.5, 1.0, 2.0)), (200, 2, (2.0,)))


def disorder(run: Run) -> None:
    """Issue 18: what the watermark delay costs for disordered input (late readings at 0.5 / 1 / 2 s)."""
    from bench.disorder import bench_disorder

    report = run.report
    seconds = 15 if run.args.quick else 30
    results = []
    for delay_ms, lateness_s, disorders in DISORDER_RUNS:
        settings = run.settings.model_copy(update={"watermark_delay_ms": delay_ms, "allowed_lateness_s": lateness_s})
        for d in disorders:
            run.sampler.phase = f"disorder {d} s, delay {delay_ms} ms, lateness {lateness_s} s"
            r = bench_disorder(settings, d, seconds=seconds)
            results.append(r)
            check = ("" if lateness_s else "every reading counted by its window or late: "
                     + ("yes" if r["conserved"] else f"NO ({r['counted']:,} counted + {r['late_in_checked']:,} late "
                                                      f"of {r['checked_readings']:,})"))
            report.add("2 disorder", f"late readings at {d:g} s of disorder, watermark delay {delay_ms:,} ms"
                       + (f", allowed lateness {lateness_s} s" if lateness_s else ""),
                       f"{r['late']:,} of {r['readings']:,} ({r['late_share']:.2%})",
                       f"{r['rate']:,}/s for {r['seconds']} s; {check}".rstrip("; "))
    report.raw["disorder"] = results


def latency_spark(run: Run) -> None:
    report = run.report
    r = bench_latency(run.settings, run.args.rate, run.args.latency_devices, run.latency_seconds, hot_devices(run),
                      run.sampler, with_influx=False, job=spark_overheat_job, drain_s=60)
    report.raw["latency_pyspark"] = r
    batch = r["job"].get("batch_ms") or []
    report.add("2 latency", f"PySpark twin: completing event -> alert in Kafka, {P3}",
               percentiles(r["kafka_ms"]).text(),
               f"achieved {r['rate_achieved']:,.0f}/s, {r['alerts']}/{r['hot']} alerts opened (60 s "
               f"drain); micro-batch median {pct(batch, 0.5):,.0f} ms")


def ingest(run: Run) -> None:
    report = run.report
    size = 20_000 if getattr(run.args, "small", False) else 50_000 if run.args.quick else 200_000
    r = bench_ingest(run.settings, size)
    report.raw["ingest"] = r
    labels = {"kafka-python": "kafka-python publisher",
              "Publisher on librdkafka": "the same Publisher on librdkafka (MW_KAFKA_CLIENT=confluent-kafka)",
              "confluent-kafka": "confluent-kafka publisher alone (no Publisher guards)"}
    for name, v in r.items():
        report.add("3 ingest", f"{labels.get(name, name)}, readings built + published /s (per CPU-s)",
                   f"{v['events_per_s']:,.0f} ({v['events_per_cpu_s']:,.0f})", "bench/publisher.py")


def influx(run: Run) -> None:
    report = run.report
    r = bench_influx_writes(run.settings, 50_000 if run.args.quick else 200_000, run.tmp)
    report.raw["influx_writes"] = r
    report.add("4 influx", "our writer end to end (Kafka -> poll + parse + convert + write -> InfluxDB), points/s",
               f"{r['writer_e2e_pps']:,.0f}", f"{r['points']:,} window points from a pre-loaded topic; from the "
               "writer's start (group join included) until all are written")
    if "writer_e2e_librdkafka_pps" in r:
        report.add("4 influx", "… the same writer on librdkafka (MW_KAFKA_CLIENT=confluent-kafka), points/s",
                   f"{r['writer_e2e_librdkafka_pps']:,.0f}", "the same topic, a new group, from the writer's start")
    report.add("4 influx", "… its write path alone (converter + InfluxWriter.write on pre-built results), points/s",
               f"{r['writer_pps']:,.0f}", "secondary")
    report.add("4 influx", f"baseline: {r['baseline']}, points/s", f"{r['cli_pps']:,.0f}",
               f"`influx` CLI unavailable: {r['cli_unavailable']}" if "cli_unavailable" in r else "")


def dashboard(run: Run) -> None:
    """Panel queries and first renders at the sizes of issue 19's goals (quick: the small ones only)."""
    from bench import dashboard_render

    report = run.report
    query_sizes = [(100, 6)] if run.args.quick else [(100, 6), (1000, 24)]
    for devices, hours in query_sizes:
        r = bench_dashboard(run.settings, run.tmp, devices, hours)
        report.raw[f"dashboard_{devices}x{hours}h"] = r
        if (devices, hours) == (100, 6):
            report.raw["dashboard"] = r  # the key earlier reports used
        report.add("5 dashboard", f"panel queries, median / worst p95 ms ({devices:,} devices x {hours} h of 10 s "
                   "windows and their roll-ups)", f"{r['median_p95_ms']:,.0f} / {r['worst_p95_ms']:,.0f}",
                   "bench/dashboard_queries.py" + (f"; floor (one last() of every device's series, no panel) p95 "
                                                   f"{r['floor_p95_ms']:,.0f} ms" if r.get("floor_p95_ms") else ""))
    render_sizes = [(100, 1)] if run.args.quick else [(100, 1), (100, 6), (1000, 24)]
    for devices, hours in render_sizes:
        d = dashboard_render.measure(run.settings, devices=devices, hours=hours, runs=3)
        report.raw[f"dashboard_render_{devices}x{hours}h"] = d
        for kind in ("cold", "warm"):
            v = d[kind]
            report.add("5 dashboard", f"Streamlit first render in headless Chromium, {kind} (new profile"
                       f"{'' if kind == 'cold' else ', then reload'}), median / p95 ms ({devices:,} devices x "
                       f"{hours} h of 10 s windows)", f"{v['median_ms']:,.0f} / {v['p95_ms']:,.0f}",
                       f"every chart drawn; script run started / done at "
                       f"{d[kind + '_script_started']['median_ms']:,.0f} / {d[kind + '_script_done']['median_ms']:,.0f}"
                       " ms (median); bench/dashboard_render.py"
                       + (f"; {v['errors']} loads showed an error: {v['error']}" if v.get("errors") else ""))
    # The floor: the page's layout with no queries, served and timed the same way; no render can beat it here.
    floor = dashboard_render.measure_floor(runs=3)
    report.raw["dashboard_render_floor"] = floor
    for kind in ("cold", "warm"):
        v = floor[kind]
        report.add("5 dashboard", f"floor: the page's layout, no queries, {dashboard_render.FLOOR_POINTS} points per "
                   f"chart, {kind} (new profile{'' if kind == 'cold' else ', then reload'}), median / p95 ms",
                   f"{v['median_ms']:,.0f} / {v['p95_ms']:,.0f}",
                   f"script run started / done at {floor[kind + '_script_started']['median_ms']:,.0f} / "
                   f"{floor[kind + '_script_done']['median_ms']:,.0f} ms (median); bench/render_floor_app.py")


# Seconds of event time per device in the rollups phase's backlog: two whole minutes at least, wherever it starts.
ROLLUP_SECONDS = 150


def rollups(run: Run) -> None:
    """Issue 19, item 1: the 1-minute roll-up made by the InfluxDB task or by Flink, side by side, outputs compared
    (bench/rollup_cost.py). Runs after the capacity phase, whose writer figure it borrows."""
    from bench import rollup_cost

    report = run.report
    # Its own backlog: ROLLUP_SECONDS readings per device, so every device has whole minutes to compare (the main
    # backlog holds 100 s per device, the quick ones 20 s); quick: 1,000 devices.
    devices = 1_000 if run.args.quick else run.args.devices
    events = devices * ROLLUP_SECONDS
    topic = f"mw.bench.rollups.{devices}"
    preload(run.settings, topic, events, devices)
    r, checks = rollup_cost.measure(run.settings, topic, events, devices, run.sampler, run.tmp,
                                    repeats=1 if run.args.quick else 3, perturb=run.args.perturb_pyspark)
    for c in checks[1:]:
        checked(run, c)
        report.raw.setdefault("self_checks_caught", []).append(not c.equal)
    equal = checked(run, checks[0])
    per = r["per_fleet_minute"]
    writer_pps = report.raw.get("capacity_influxdb", {}).get("points_per_writer_cpu_s")
    writer = devices / writer_pps if writer_pps else None
    # Past Flink, the minute rows travel like any window result: Kafka (in the Flink runs' CPU), writer, influxd.
    downstream = per["flink_influxd_write_cpu_s"] + (writer or 0.0)
    flink, flink_max, task = per["flink_cpu_s"] + downstream, per["flink_cpu_s_max"] + downstream, per["task_cpu_s"]
    report.raw["rollup_cost"] = {**r, "writer_cpu_s_per_fleet_minute": writer, "flink_total_cpu_s": flink,
                                 "flink_total_cpu_s_max": flink_max}
    runs = ", ".join(f"{name}: " + " / ".join(f"{v:.1f}" for v in vals)
                     for name, vals in r["flink_cpu_s_per_million"].items())
    where = f"{devices:,} devices, one reading each per second, {events:,} readings"
    report.add("5 dashboard", f"roll-ups made by Flink (the window job with its 1 min/1 h roll-ups against "
               f"MW_ROLLUPS=false), CPU-s per fleet-minute ({where}), median difference (largest)",
               f"{flink:.2f} ({flink_max:.2f})" if equal else "DIFFER",
               f"Flink {per['flink_cpu_s']:.2f} ({per['flink_cpu_s_max']:.2f}) from CPU-s per million readings of "
               f"alternated runs ({runs}; below zero counts as nothing) + influxd writing its rows "
               f"{per['flink_influxd_write_cpu_s']:.2f} + writer "
               + (f"{writer:.2f} (capacity phase)" if writer is not None else "not counted (capacity phase skipped)"))
    steady = r["task_steady"]
    lookback = flux_duration(ROLLUP_1M.lookback)
    report.add("5 dashboard", f"1-minute roll-up made by an InfluxDB task (machinewatch.rollups.task_flux, the way it "
               f"was made before), CPU-s of influxd "
               f"per fleet-minute ({where})", f"{task:.2f}" if equal else "DIFFER",
               f"one run per minute over its {lookback} lookback: {steady['ms_per_run']:,.0f} ms per run (median of "
               f"{len(steady['runs'])} on {steady['windows']:,} synthetic 10 s windows); task / Flink "
               + (f"≥ {task / flink_max:,.1f}× (Flink at its largest difference)" if flink_max > 0 else "–"))


# Seconds of event time (readings per device) the scale phase's backlogs hold at least.
MIN_EVENT_TIME_S = 30


def scale(run: Run) -> None:
    report = run.report
    sizes = [1_000, 100_000] if not run.args.quick else [1_000]
    per = run.events if run.args.quick else max(run.events // 2, 200_000)
    for n in sizes:
        t = f"mw.bench.backlog.{n}"
        # One reading per device-second: each device needs event time past its first windows' ends plus the
        # watermark delay, or no window closes and there is no output to time (500,000 readings of 100,000
        # devices are 5 s each). 30 s closes the first two 10 s windows and the first sliding ones.
        events = max(per, n * MIN_EVENT_TIME_S)
        preload(run.settings, t, events, n, hot_devices=min(20, n))
        r = run_job_on_backlog(run.settings, "window-aggregates", t, events, f"dev{n}", run.sampler)
        report.raw[f"scale_devices_{n}"] = r
        report.add("7 scale", f"window job, {n:,} devices ({events:,} events), events/s",
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
        r = bench_latency(s, run.args.rate, n, run.latency_seconds, hot_devices(run), run.sampler, with_influx=False)
        report.raw[f"scale_latency_{n}_p{s.flink_parallelism}"] = r
        report.add("7 scale", f"overheat alert latency, {n:,} devices, parallelism "
                   f"{s.flink_parallelism}: completing event -> Kafka, {P3}", percentiles(r["kafka_ms"]).text(),
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
    ("latency-spark", latency_spark), ("disorder", disorder), ("ingest", ingest), ("influx", influx),
    ("dashboard", dashboard), ("scale", scale), ("capacity", capacity), ("rollups", rollups),
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
