"""The ``machinewatch`` command: run the local stack, simulators, jobs, the sink and queries."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from datetime import UTC, datetime, timedelta

from machinewatch.config import Settings, load_settings


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        msg = f"'{text}' is not a duration like 30s, 15m, 2h or 1d"
        raise argparse.ArgumentTypeError(msg)
    return timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]])


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch.stack import Stack

    stack = Stack(settings)
    if args.action == "up":
        stack.up(timeout=args.timeout)
        return 0
    if args.action == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    if args.action == "status":
        rows = stack.status()
        print(f"{'server':<18} {'address':<24} {'pid':>7}  {'ready':<5} {'version':<10} detail")
        for st in rows:
            print(f"{st.name:<18} {st.address:<24} {st.pid or '-':>7}  {'yes' if st.ready else 'no':<5} "
                  f"{st.version or '-':<10} {st.detail}")
        return 0 if all(st.ready for st in rows) else 1
    if args.action == "logs":
        print(stack.logs(args.service, args.lines))
        return 0
    return 2


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch.kafka_io import Publisher
    from simulators.temperature import TemperatureSimulator

    sim = TemperatureSimulator(
        devices=args.devices, interval_ms=args.interval_ms, seed=args.seed, region=args.region,
        site=args.site, max_disorder_ms=args.disorder_ms,
    )
    log = logging.getLogger("machinewatch.simulate")
    with Publisher(settings) as pub:
        if args.count:
            start = datetime.now(tz=UTC) - timedelta(milliseconds=args.count * args.interval_ms)
            n = pub.send_many(sim.readings(start, args.count))
            pub.flush()
            log.info("published %d readings of %d devices", n, args.devices)
            return 0
        deadline = time.monotonic() + args.duration.total_seconds() if args.duration else None
        last_report = time.monotonic()
        for reading in sim.live(speed=args.speed):
            pub.send(reading)
            if time.monotonic() - last_report >= 5:
                pub.flush()
                log.info("published %d readings (%d acknowledged)", pub.sent, pub.acked)
                last_report = time.monotonic()
            if deadline is not None and time.monotonic() >= deadline:
                break
    return 0


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch import jobs

    if args.action == "submit":
        existing = jobs.running(settings, "machinewatch-" + args.job)
        if existing and not args.force:
            print(f"{args.job} already running as {existing[0]['jid']} (use --force to submit another)")
            return 0
        print(jobs.submit(settings, args.job))
        return 0
    if args.action == "list":
        for job in jobs.list_jobs(settings):
            print(f"{job['jid']}  {job['state']:<10} {job['name']}")
        return 0
    if args.action == "cancel":
        jobs.cancel(settings, args.job_id)
        print(f"cancel requested for {args.job_id}")
        return 0
    return 2


def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    from sinks import influxdb_writer

    influxdb_writer.main(settings, idle_exit_s=args.idle_exit)
    return 0


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch import query

    start = datetime.now(tz=UTC) - args.last
    frame = query.window_aggregates(settings, start, device_prefix=args.device or "", site=args.site or "")
    if frame.empty:
        print("no window aggregates in that range")
        return 1
    print(frame.tail(args.limit).to_string(index=False))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch import demo

    return demo.run(settings, duration=args.duration.total_seconds(), devices=args.devices)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="machinewatch",
        description="Real-time machine monitoring: Kafka -> PyFlink -> InfluxDB. "
        "Settings come from MW_* environment variables or a .env file (see README).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="provision and run the local Kafka, Flink and InfluxDB")
    p.add_argument("action", choices=["up", "down", "status", "logs"],
                   help="up: provision (once, cached) and start all three; down: stop what 'up' started; "
                   "status: server, address, pid, readiness, version; logs: tail the server logs")
    p.add_argument("service", nargs="?", help="for logs: kafka, influxdb, flink (default: all)")
    p.add_argument("-n", "--lines", type=int, default=40, help="for logs: lines per server (default 40)")
    p.add_argument("--timeout", type=float, default=240, help="seconds to wait for each server (default 240)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("simulate", help="publish simulated device readings to Kafka")
    p.add_argument("kind", choices=["temperature"], help="kind of device")
    p.add_argument("--devices", type=int, default=10, help="number of devices (default 10)")
    p.add_argument("--interval-ms", type=int, default=1000, help="event-time step per device (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="random seed: same seed, same readings (default 1)")
    p.add_argument("--region", default="plant-1")
    p.add_argument("--site", default="line-a")
    p.add_argument("--disorder-ms", type=int, default=0, help="max out-of-order delay of a reading")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed for live mode (default 1.0)")
    p.add_argument("--duration", type=_duration, help="stop live mode after this long, e.g. 2m")
    p.add_argument("--count", type=int, default=0,
                   help="publish this many readings per device ending now, then exit (backfill mode)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("jobs", help="operate Flink jobs on the configured cluster")
    p.add_argument("action", choices=["submit", "list", "cancel"])
    p.add_argument("job", nargs="?", default="window-aggregates", help="job name to submit (default window-aggregates)")
    p.add_argument("--job-id", help="for cancel: the Flink job id")
    p.add_argument("--force", action="store_true", help="submit even if the job already runs")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("sink", help="write Flink results from Kafka into InfluxDB")
    p.add_argument("target", choices=["influxdb"])
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without results")
    p.set_defaults(func=cmd_sink)

    p = sub.add_parser("query", help="print window aggregates from InfluxDB (read-only token)")
    p.add_argument("--last", type=_duration, default=timedelta(hours=1), help="time range, e.g. 15m (default 1h)")
    p.add_argument("--device", help="device id prefix")
    p.add_argument("--site")
    p.add_argument("--limit", type=int, default=30, help="rows to print (default 30)")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("demo", help="stack up, submit the job, simulate, and show the results")
    p.add_argument("--duration", type=_duration, default=timedelta(seconds=60), help="simulation time (default 60s)")
    p.add_argument("--devices", type=int, default=10)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python logs every connection at INFO; only its warnings matter to a user.
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.command == "jobs" and args.action == "cancel" and not args.job_id:
        print("jobs cancel needs --job-id", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, load_settings()))
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, OSError) as exc:
        print(f"machinewatch: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
