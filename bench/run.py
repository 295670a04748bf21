"""Issue 8 benchmarks in one command, each beside a baseline run on the same machine in the same run.

    python -m bench.run [--quick | --small] [--events 1000000] [--devices 10000] [--rate 20000]
                        [--skip spark,... | --only window,...]

``--small`` is a smoke test of the phases (20,000 readings of 1,000 devices, short latency runs): it proves
they work and that their output checks pass, on a busy machine; its figures are not results.

Starts a PRIVATE stack (free ports, temporary state dir; never the dev stack), then measures
throughput on a pre-loaded backlog (JVM ConsumerPerformance ceiling, our Flink jobs, PySpark Structured
Streaming), sustained-overheat alert latency at a steady rate (to Kafka and to InfluxDB), ingest
(bench.publisher), InfluxDB writes (our writer vs the ``influx`` CLI or, if it cannot be built, a raw
HTTP baseline), dashboard queries (bench.dashboard_queries), peak RSS of the stack, and scale points.
Everything goes to bench/RESULTS.md with the machine, the date, the exact command and raw numbers.
Baselines are provisioned into ``$MW_CACHE_DIR/bench`` (Maven Central, PyPI); nothing lands in the repo.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

# The parts of the run, re-exported: bench.run named them all before it was split.
from bench.baselines import (  # noqa: F401
    INFLUX_CLI,
    KAFKA_VERSION,
    POM,
    SPARK_VERSION,
    bench_raw_consume,
    bench_spark,
    bench_spark_overheat,
    bench_venv,
    influx_cli,
    mvn_jars,
    run_spark_backlog,
    spark_env,
    spark_kafka_jars,
    spark_overheat_cmd,
    spark_overheat_job,
)
from bench.common import REPO, say
from bench.flink_runs import (  # noqa: F401
    fail_if_restarting,
    flink_overheat_job,
    run_job_on_backlog,
    run_pipeline_on_backlog,
    source_count,
    wait_slots_free,
)
from bench.io_benchmarks import bench_dashboard, bench_influx_writes, bench_ingest  # noqa: F401
from bench.kafka_data import (  # noqa: F401
    create_topic,
    end_offsets,
    opened_summary,
    preload,
    produce,
    producer,
    read_alerts,
    reading_json,
)
from bench.latency import JobUnderTest, bench_latency, poll_influx  # noqa: F401
from bench.measure import CLK_TCK, PAGE, RssSampler, cpu_note, cpu_use, gib, pct, tree_rss  # noqa: F401
from bench.phases import PHASES, Run, memory, run_phases
from bench.report import Report, machine, ratio, write_results  # noqa: F401
from machinewatch.config import Settings
from machinewatch.stack import Stack
from machinewatch.stack.private import private_settings

RESULTS = REPO / "bench" / "RESULTS.md"


@contextlib.contextmanager
def private_stack(state: Path, slots: int, **extra: object) -> Iterator[tuple[Settings, Stack]]:
    settings = private_settings(state, flink_taskmanager_slots=slots, **extra)
    stack = Stack(settings)
    write_config = stack.flink.write_config

    def write_config_fast_metrics() -> None:
        # The REST metric fetcher caches for 10 s by default: too coarse to time a 30 s backlog run.
        write_config()
        with (stack.flink.conf_dir() / "config.yaml").open("a") as fh:
            fh.write("metrics.fetcher.update-interval: 500\n")

    stack.flink.write_config = write_config_fast_metrics  # type: ignore[method-assign]
    try:
        stack.up(timeout=300)
        yield settings, stack
    finally:
        say("stopping the private stack")
        stack.down()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--small", action="store_true",
                        help="smoke-test sizes (implies --quick): 20,000 readings of 1,000 devices, 40 s latency runs "
                             "with 20 alerts; proves the phases and their output checks work, figures are not results")
    parser.add_argument("--events", type=int, help="backlog size (default 1,000,000; quick 200,000; small 20,000)")
    parser.add_argument("--devices", type=int, help="devices in the backlog (default 10,000; small 1,000)")
    parser.add_argument("--rate", type=int, default=20_000, help="steady events/s for alert latency")
    parser.add_argument("--latency-devices", type=int, default=1_000,
                        help="devices in the latency run (the overheat job's Python stage runs once per device "
                             "per 1 s bucket, so its cost grows with devices, not events; default 1000)")
    parser.add_argument("--latency-seconds", type=int, help="length of the latency run (default 90; quick 45)")
    parser.add_argument("--skip", default="", help="comma list of: " + ",".join(name for name, _ in PHASES))
    parser.add_argument("--only", default="", help="comma list of the phases to run (the others are skipped)")
    parser.add_argument("--perturb-pyspark", action="store_true",
                        help="self-check: each output comparison is also made with one PySpark record dropped, "
                             "in a row of its own that must say DIFFER (the check can fail)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    argv_used = argv if argv is not None else sys.argv[1:]
    args.quick = args.quick or args.small
    args.devices = args.devices or (1_000 if args.small else 10_000)
    events = args.events or (20_000 if args.small else 200_000 if args.quick else 1_000_000)
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    known = {name for name, _ in PHASES}
    if (skip | only) - known:
        parser.error(f"unknown phases: {', '.join(sorted((skip | only) - known))}")
    if only:
        skip |= known - only
    lat_seconds = args.latency_seconds or (40 if args.small else 45 if args.quick else 90)

    # A SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the private stack below is stopped, not left running.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    report = Report()
    report.raw["machine_before"] = machine()
    started = datetime.now(tz=UTC)
    tmp = Path(tempfile.mkdtemp(prefix="mw-bench-"))
    say(f"private stack state in {tmp}")
    sampler: RssSampler | None = None
    try:
        with private_stack(tmp / "state", slots=2, overheat_duration_s=10) as (settings, stack):
            report.raw["kafka_partitions"] = settings.kafka_partitions
            def roots() -> dict[str, int | None]:
                return {"kafka": stack.kafka.proc.pid(), "influxdb": stack.influxdb.proc.pid(),
                        "flink-jobmanager": stack.flink.proc.pid(), "flink-taskmanager": stack.flink.taskmanager.pid()}

            sampler = RssSampler(roots)
            sampler.start()
            topic = f"mw.bench.backlog.{args.devices}"
            say(f"pre-loading {events:,} readings of {args.devices:,} devices into {topic}")
            stats: dict[str, object] = {}
            load_s = preload(settings, topic, events, args.devices, stats=stats)
            assert end_offsets(settings, topic) == events
            report.raw["preload"] = {"events": events, "devices": args.devices, "seconds": load_s, **stats}
            run = Run(settings, topic, events, args, lat_seconds, sampler, tmp, report)
            run_phases(run, skip)
            memory(run)
    finally:
        if sampler is not None:
            sampler.stop()
        finished = datetime.now(tz=UTC)
        write_results(args.output, report, started, finished, argv_used, events, args)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
