"""The run's output: progress lines, the results table with its raw numbers, and bench/RESULTS.md (machine,
date, exact command, goals met or not, how each figure was measured)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.baselines import KAFKA_VERSION, SPARK_VERSION
from bench.common import say
from bench.compare import percentile, percentiles
from machinewatch.config import Settings

MIN_ALERTS = 200  # alerts a latency p99 needs before it counts for a goal
# The settings' own defaults (no environment, no config file): what "with the default settings" means.
DEFAULTS = Settings.model_construct()

# The phase of the memory goal's load (bench/flink_runs.py names it).
PIPELINE_PHASE = "pipeline backlog"


@dataclass
class Report:
    """Rows of the results table plus raw numbers and notes, rendered to Markdown at the end."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # section, what, value, note
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, what: str, value: str, note: str = "") -> None:
        self.rows.append((section, what, value, note))
        say(f"{section} | {what}: {value} {note}")


def machine() -> dict[str, str]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()
    return {
        "cpu": f"{model}, {os.cpu_count()} logical CPUs (nproc)",
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "java": java[0] if java else "?",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:  # None, 0 or NaN (a percentile of no samples)
        return "n/a"
    return f"{a / b:.2f}×"


def compact_json(value: Any, width: int = 110, depth: int = 0) -> str:
    """JSON of the raw numbers, whole: any list or object that fits in ``width`` characters on one line.

    Indented one value per line, the throughput samples alone ran to thousands of lines, and the cut that kept
    the file readable dropped every phase after them (the dashboard's per-panel table among them).
    """
    flat = json.dumps(value, default=str)
    if len(flat) + depth <= width or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (depth + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(str(k))}: {compact_json(v, width, depth + 1).lstrip()}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    flats = [json.dumps(v, default=str) for v in value]
    if max(map(len, flats)) <= 40:  # samples, pairs: as many to a line as fit
        rows, row = [], pad
        for item in flats:
            if row != pad and len(row) + len(item) + 2 > width:
                rows.append(row.rstrip())
                row = pad
            row += item + ", "
        rows.append(row.rstrip().rstrip(","))
        return "[\n" + "\n".join(rows) + "\n" + " " * depth + "]"
    items = [pad + compact_json(v, width, depth + 1).lstrip() for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"


def write_results(path: Path, report: Report, started: datetime, finished: datetime, argv: list[str],
                  events: int, args: argparse.Namespace) -> None:
    m = report.raw["machine_before"]
    raw = report.raw
    partitions = raw.get("kafka_partitions", 3)  # runs before it was recorded had 3, the default then
    raw_best = max((r["msg_per_s"] for r in raw.get("raw_consume", [])), default=None)
    win = raw.get("window_job", {}).get("events_per_s")
    win_src = raw.get("window_job", {}).get("source_events_per_s")
    win_like = raw.get("window_job_tumbling_only", {}).get("events_per_s") or win
    same_work = " (both 10 s tumbling windows only)" if "window_job_tumbling_only" in raw else ""
    passthrough = raw.get("flink_passthrough", {}).get("source_events_per_s")
    oh = raw.get("overheat_job", {}).get("events_per_s")
    pipe = raw.get("pipeline", {}).get("events_per_s")
    # A PySpark figure whose outputs differed from ours is not compared with anything.
    spark = raw.get("pyspark", {}).get("events_per_s") if raw.get("pyspark", {}).get("outputs_equal") is not False \
        else None
    spark_oh = (raw.get("pyspark_overheat", {}).get("events_per_s")
                if raw.get("pyspark_overheat", {}).get("outputs_equal") is not False else None)

    def at_least(a: float | None, b: float | None, k: float) -> bool:
        return bool(a and b and a / b >= k)

    # The overheat job on both backlogs (the usual one and the hover one): the goal rows use the worse.
    oh_hover = raw.get("overheat_job_hover", {}).get("events_per_s")
    hover_spark = raw.get("pyspark_overheat_hover", {})
    spark_oh_hover = hover_spark.get("events_per_s") if hover_spark.get("outputs_equal") is not False else None
    oh_worst = min((x for x in (oh, oh_hover) if x), default=None)
    oh_pairs = [(a, b) for a, b in ((oh, spark_oh), (oh_hover, spark_oh_hover)) if a and b]
    if "pyspark_overheat_hover" in raw and spark_oh_hover is None:
        oh_pairs = []  # a backlog whose outputs differed: no ratio at all rather than the kinder one
    oh_a, oh_b = min(oh_pairs, key=lambda ab: ab[0] / ab[1], default=(None, None))
    worse = " (the worse of the usual and the hover backlog)" if oh_hover else ""
    goals = [
        ("throughput ≥ 0.5 × raw consume: both jobs together", ratio(pipe, raw_best), at_least(pipe, raw_best, 0.5)),
        ("… window job alone", ratio(win, raw_best), at_least(win, raw_best, 0.5)),
        # Issue 18's limit: the window job against Flink's own pass-through of the topic (both from the source's
        # first to last record: the pass-through has no output to time end to end).
        ("window job ≥ 0.5 × the Flink SQL pass-through (source rates)", ratio(win_src, passthrough),
         at_least(win_src, passthrough, 0.5)),
        (f"… sustained-overheat job alone{worse}", ratio(oh_worst, raw_best), at_least(oh_worst, raw_best, 0.5)),
        # Same work on both sides: our job with tumbling windows only when that run exists (older raw numbers: the
        # full job, which does more than the twin).
        (f"throughput ≥ 3 × PySpark: window job vs its PySpark twin{same_work}", ratio(win_like, spark),
         at_least(win_like, spark, 3)),
        (f"… sustained-overheat job vs its PySpark twin{worse}", ratio(oh_a, oh_b), at_least(oh_a, oh_b, 3)),
    ]
    lat = raw.get("latency")
    if lat:
        # A p99 counts only from enough alerts (of 10 it is their maximum): fewer than 200 and the goal is not met.
        q = percentiles(lat["kafka_ms"])
        p99 = q.p99
        # The goal is for the default settings; older raw numbers did not record them (they were the defaults).
        delay = lat.get("watermark_delay_ms", DEFAULTS.watermark_delay_ms)
        bucket = lat.get("bucket_ms", DEFAULTS.overheat_bucket_ms)
        defaults = (delay, bucket) == (DEFAULTS.watermark_delay_ms, DEFAULTS.overheat_bucket_ms)
        goals.append((f"alert latency p99 ≤ 500 ms beyond the sustained duration (at {lat['rate_achieved']:,.0f}/s, "
                      f"watermark delay {delay:,} ms, buckets of {bucket:,} ms"
                      f"{'' if defaults else ': NOT the defaults, so not the goal'}; from ≥ 200 alerts)",
                      f"{p99:,.0f} ms (n={q.count:,})", p99 <= 500 and q.enough(MIN_ALERTS) and defaults))
        fast = raw.get("latency_watermark_200ms")
        if fast:
            qf = percentiles(fast["kafka_ms"])
            goals.append(("… with a 200 ms watermark delay", f"{qf.p99:,.0f} ms (n={qf.count:,})",
                          qf.p99 <= 500 and qf.enough(MIN_ALERTS)))
        lat_spark = raw.get("latency_pyspark")
        if lat_spark:
            p99s = percentile(lat_spark["kafka_ms"], 0.99)
            # Alerts PySpark never delivered would only raise its p99: with some missing, the ratio is an upper bound.
            goals.append((f"alert latency p99 ≤ 0.1 × PySpark's (same rate and delay; PySpark delivered "
                          f"{lat_spark['alerts']}/{lat_spark['hot']} alerts)", ratio(p99, p99s),
                          bool(p99s == p99s and p99 / p99s <= 0.1)))
    ing = raw.get("ingest", {}).get("kafka-python")
    if ing:
        goals.append(("kafka-python publisher ≥ 50,000 readings built + published per CPU-s",
                      f"{ing['events_per_cpu_s']:,.0f}/CPU-s",
                      ing["events_per_cpu_s"] >= 50_000))
    ing_c = raw.get("ingest", {}).get("Publisher on librdkafka")
    if ing_c:  # the remedy when kafka-python cannot get there: the optional backend, reported beside it
        goals.append(("… the same Publisher on its librdkafka backend (MW_KAFKA_CLIENT=confluent-kafka)",
                      f"{ing_c['events_per_cpu_s']:,.0f}/CPU-s", ing_c["events_per_cpu_s"] >= 50_000))
    inf = raw.get("influx_writes")
    if inf:
        label = "InfluxDB writer end to end (Kafka -> InfluxDB) ≥ 1.0 × `influx write` of the same points"
        if "cli_unavailable" in inf:
            label += " (measured against raw HTTP writes: the CLI could not be built)"
        # Older raw numbers have only the write path (pre-built results): then that, and the label says so.
        pps = inf.get("writer_e2e_pps")
        if pps is None:
            pps, label = inf["writer_pps"], label + " (write path only: no end-to-end figure in this run)"
        goals.append((label, ratio(pps, inf["cli_pps"]), pps / inf["cli_pps"] >= 1.0))
        pps_c = inf.get("writer_e2e_librdkafka_pps")
        if pps_c:  # as for the publisher: the optional librdkafka backend, reported beside the default
            goals.append(("… the same writer on its librdkafka backend (MW_KAFKA_CLIENT=confluent-kafka)",
                          ratio(pps_c, inf["cli_pps"]), pps_c / inf["cli_pps"] >= 1.0))
    # Issue 19's dashboard goals: cold first render (every chart drawn) and each panel query's p95.
    # The render floor (the page's layout with no queries, bench/render_floor_app.py) is quoted beside each goal.
    render_floor = raw.get("dashboard_render_floor")
    floor_note = (f" (floor, the page's layout with no queries: {render_floor['cold']['median_ms']:,.0f} ms)"
                  if render_floor else "")
    for (devices, hours), limit_ms in (((100, 1), 2000), ((100, 6), 2000), ((1000, 24), 3000)):
        render = raw.get(f"dashboard_render_{devices}x{hours}h")
        if render:
            cold = render["cold"]["median_ms"]
            goals.append((f"dashboard cold first render ≤ {limit_ms / 1000:.0f} s ({devices:,} devices x {hours} h), "
                          f"median{floor_note}", f"{cold:,.0f} ms", cold <= limit_ms))
    queries = raw.get("dashboard_1000x24h")
    if queries:
        floor = queries.get("floor_p95_ms")
        goals.append(("every dashboard panel query p95 ≤ 100 ms (1,000 devices x 24 h), worst panel"
                      + (f" (InfluxDB's floor, one last() of every device's series: p95 {floor:,.0f} ms)"
                         if floor is not None else ""),
                      f"{queries['worst_p95_ms']:,.0f} ms", queries["worst_p95_ms"] <= 100))
    if "rss_peak_by_phase" in raw:
        by_phase = {k: float(v.split()[0]) for k, v in raw["rss_peak_by_phase"].items()}
        # The goal's load is both jobs on the backlog (the pipeline phase). The whole run's peak is reported beside
        # it, goal and verdict alike: by then one TaskManager has run some 25 jobs in turn and its heap, once
        # grown, stays grown.
        if PIPELINE_PHASE in by_phase:
            at_load = by_phase[PIPELINE_PHASE]
            goals.append(("whole stack ≤ 3 GiB peak RSS at that load (both jobs on the backlog)", f"{at_load:.2f} GiB",
                          at_load <= 3))
        peak = max(by_phase.values())
        goals.append(("… peak RSS over the whole run, every phase", f"{peak:.2f} GiB", peak <= 3))
    lines = [
        "# Benchmark results", "",
        "Produced by `bench/run.py` (one command; see its docstring). Every figure below comes from the single run",
        "described here, with the baselines run on the same machine in the same run. **The machine is shared** (2",
        "cores, other CI work running at the time), so absolute numbers drift between runs; the ratios are the point.",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} – {finished:%H:%M} UTC",
        f"- command: `{' '.join(['python -m bench.run', shlex.join(argv)]).strip()}`",
        f"- machine: {m['cpu']}, {m['ram']} RAM, {m['os']}; {m['java']}; Python {m['python']}",
        f"- load average at start: {m['load']}; at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- stack: private (free ports, temp state dir), Kafka {KAFKA_VERSION} single node "
        f"({partitions} partition{'s' * (partitions != 1)}), Flink 2.2.1 "
        "(1 TaskManager, 2 slots, job parallelism 1 unless stated), InfluxDB 2.9.1; PySpark "
        f"{SPARK_VERSION} local[{os.cpu_count()}] with spark-sql-kafka-0-10_2.13 {SPARK_VERSION} from Maven Central",
        f"- backlog: {events:,} canonical JSON readings of {args.devices:,} devices (one per device per second of "
        "event time, 20 devices overheating from a third of the way on), keyed by device",
        "",
        "## Goals", "", "| goal | measured | met? |", "|---|---|---|",
        *[f"| {g} | {v} | {'yes' if ok else 'no'} |" for g, v, ok in goals],
        "", "## All figures", "", "| # | what | value | notes |", "|---|---|---:|---|",
        *[f"| {s} | {w} | {v} | {n} |" for s, w, v, n in report.rows],
        "", "## What is measured, and how", "",
        "- **Throughput** (one clock for both engines): a job is submitted with a fresh consumer group on the "
        "pre-loaded topic; events/s = backlog size / time from submission (`flink run` for our jobs, the query's "
        "`start()` in a warm session for PySpark: SparkSession start excluded) to the last output record in Kafka, "
        "taken from the broker's append time (the output topics use `LogAppendTime`, so neither engine sets the "
        "clock) once the outputs have been quiet for 5 s. The secondary *source only* rows count the records our "
        "Kafka source emitted (Flink REST `numRecordsOut`, sampled every 0.5 s; the JobManager's metric cache is set "
        "to 500 ms) from the first record until all were read: no job start-up, no downstream drain. "
        "*The pipeline* row runs both jobs at once, one slot each, as they are deployed. Raw consume is Kafka's "
        f"`kafka.tools.ConsumerPerformance` (kafka-tools {KAFKA_VERSION}); its nMsg/s includes the group join, "
        "`fetch-only` excludes it. The PySpark twins read the same topic with `trigger(availableNow=True)`: "
        "`bench/spark_job.py` does the 10 s tumbling avg/min/max/count only, so its output is compared with our "
        "job's 10 s tumbling windows (like for like on the outputs; our job also computes sliding windows, the "
        "late-event check and rules in that time, so the throughput ratio still favours PySpark's work); "
        "`bench/spark_overheat.py` does the same 1 s buckets and runs the same `flink_jobs/overheat_logic.py` per "
        "device in `transformWithStateInPandas` (Spark refuses `applyInPandasWithState` after an aggregation), "
        "without our SQL prefilter. **Same work, checked**: after each PySpark backlog run its output (the last "
        "run's records) is read back and compared with our job's on the same backlog (section 0): the same windows "
        "(device, metric, size, end; avg/min/max to 9 significant digits, count exact) and the same alert "
        "transitions (device, kind, state, ts, start); a PySpark row whose outputs differ says so and gives no "
        "figure, and no goal uses it. The overheat job's prefilter drops, in SQL, the buckets that cannot change an "
        "alert; on this backlog only the 20 hot devices' buckets reach Python, so its figure is the cost of the "
        "SQL stage, and the row with the prefilter off shows the Python lifecycle's cost per device-second.",
        "- **Alert latency**: the job under test runs alone on a fresh topic; a publisher (confluent-kafka, "
        "linger 5 ms) sends readings stamped with the wall clock at a steady rate, and 200 devices (20 with "
        "`--small`) start overheating at staggered times, one alert each: p50/p95/p99 are nearest-rank percentiles "
        "of those alerts, reported with their count, and a latency goal counts only from ≥ 200 alerts. "
        "Latency = arrival of the `opened` alert (Kafka consumer; InfluxDB: our writer thread "
        "plus a Flux poll every 100 ms) minus the publish time of that device's last reading before the alert's "
        "`ts`. The sustained duration is set to 10 s for the run (it only shifts when alerts fire). A 1 s bucket "
        "closes only when the watermark (max event time − MW_WATERMARK_DELAY_MS = 2,000 ms) passes its end, so "
        "~2 s of the latency is the configured out-of-orderness bound, not processing; the run with a 200 ms bound "
        "shows the rest (the job flushes network buffers every 10 ms and emits watermarks every 50 ms). PySpark's "
        "twin runs with the default trigger (each micro-batch starts when the previous ends); its watermark moves "
        "between micro-batches, so an alert waits for two or three of them.",
        "- **Memory**: RSS of each server's process tree (Kafka, Flink JobManager, TaskManager with its Python "
        "workers, InfluxDB), summed every 0.5 s; the peak of the sum. PySpark's own peak is in its notes.",
        "- **InfluxDB writes**: the same window points into fresh buckets. End to end: the results as JSON on a "
        "topic loaded before the clock, consumed by `InfluxWriter.run` as deployed (poll of ≤ 5,000, parse, convert, "
        "gzip write), from its start (group join included) until every point is written; secondary: its write path "
        "alone on pre-built results. Every bucket is counted afterwards (all points stored, or the phase fails). "
        "The baseline is `influx write` (Influx CLI 2.x) on a file of the same "
        "line protocol. The CLI is not installable here from the Go proxy (403 for github.com/influxdata/influx-cli);"
        " set MW_BENCH_INFLUX_CLI to a binary (built from its source, outside the repo) or the run falls back to "
        "raw HTTP writes and says so.",
        "- **Dashboard**: panel queries by `bench/dashboard_queries.py`, beside a floor no panel asks (one `last()` "
        "of every device's window series, counted: what InfluxDB takes to open each series, whatever the range; a "
        "panel that reads every device's latest value cannot be faster); first render by `bench/dashboard_render.py`:"
        " the Streamlit app against the private InfluxDB, Chromium headless over the DevTools protocol; a load is "
        "complete when Streamlit's script run has ended and every chart has drawn its marks (time from navigation "
        "start, measured in the page). Beside it, a floor: `bench/render_floor_app.py`, the page's layout (sidebar "
        "widgets, KPIs, tables, the same four chart specs) with three points per chart and no queries, served by "
        "the dashboard's own Streamlit command and timed the same way; no render of the dashboard can be faster.",
        "- **Disorder**: `bench/disorder.py`: the window job on its own topics under a live load (watermarks are "
        "emitted every 200 ms of processing time, so a backlog would hide lateness), each reading stamped with its "
        "publish time minus a uniform 0..D s; late readings are the records on the job's late-events topic, and "
        "without allowed lateness each run checks that the 10 s windows' counts plus the late readings equal the "
        "readings sent (a closing reading a minute ahead makes every window fire).",
        "- **Scale**: the window job on backlogs of other device counts, and with parallelism 2 on the 2 task slots "
        "(the p=1 figure above is the 1-slot point); the overheat job's alert latency at other device counts and "
        "at parallelism 2, with the harness of section 2.",
        "",
        "- **Hover backlog**: the same size of backlog with 30 % of the devices swinging ±8 °C about the overheat "
        "threshold − 1 °C over 120 s (each at its own phase), so they cross it every two minutes and the prefilter "
        "passes many buckets to Python (its typical case, not its best); the overheat ratio (readings at or above "
        "the threshold) is given for both backlogs, and the overheat goal rows use the worse backlog.",
        "",
    ]
    if report.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    slim = {k: v for k, v in raw.items() if k != "errors"}
    lines += ["## Raw numbers", "", "```json", compact_json(slim), "```", ""]
    if raw.get("errors"):
        lines += ["## Errors", "", "```", *[f"{k}: {v}" for k, v in raw["errors"].items()], "```", ""]
    path.write_text("\n".join(lines))
    say(f"results written to {path}")
