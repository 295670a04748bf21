"""The ``machinewatch`` command: run the local stack, simulators, jobs, the sink and queries."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from machinewatch import names
from machinewatch.config import Settings, load_settings


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        msg = f"'{text}' is not a duration like 30s, 15m, 2h or 1d"
        raise argparse.ArgumentTypeError(msg)
    return timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]])


def _flush_age(text: str) -> float:
    """--max-age: the runner's ``flush_interval_s``, checked by RunOptions itself (the one place with its range)."""
    from pydantic import ValidationError

    from machinewatch.runtime import RunOptions

    try:
        return RunOptions(flush_interval_s=float(text)).flush_interval_s
    except (ValueError, ValidationError):  # not a number, NaN or out of range
        bounds = {type(m).__name__: m for m in RunOptions.model_fields["flush_interval_s"].metadata}
        msg = f"'{text}' is not a number of seconds in ({bounds['Gt'].gt:g}, {bounds['Le'].le:g}]"
        raise argparse.ArgumentTypeError(msg) from None


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from machinewatch.stack import SERVERS, Stack

    shape = {"kafka_brokers": args.kafka_brokers, "flink_taskmanagers": args.taskmanagers,
             "kafka_partitions": args.kafka_partitions}
    given = {k: v for k, v in shape.items() if v is not None}
    if given:
        # Validated like the settings they stand for (MW_KAFKA_BROKERS, ...).
        try:
            settings = load_settings(**{**settings.model_dump(exclude_unset=True), **given})
        except ValidationError as exc:
            print(f"stack {args.action}: {'; '.join(err['msg'] for err in exc.errors())}", file=sys.stderr)
            return 2
    stack = Stack(settings)
    if args.action in ("serve", "ready", "setup") and len(args.service or ()) > 1:
        print(f"stack {args.action} takes one server", file=sys.stderr)
        return 2
    if args.action == "up":
        stack.up(timeout=args.timeout, mqtt=args.mqtt)
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
        if not getattr(args, "servers_only", False):  # the pipeline's own health: lag, jobs, dead letters, sources
            from machinewatch import health

            ready = {st.name.split("-")[0]: st.ready for st in rows}
            found = health.collect(stack.settings, kafka=ready.get("kafka", False), flink=ready.get("flink", False),
                                   influxdb=ready.get("influxdb", False))
            print("\n".join(health.report_lines(found)))
        return 0 if all(st.ready for st in rows) else 1
    if args.action == "logs":
        print(stack.logs(args.service[0] if args.service else None, args.lines))
        return 0
    if args.action == "provision":
        stack.provision(tuple(args.service or ()))
        return 0
    if not args.service:
        print(f"stack {args.action} needs a server: {', '.join(SERVERS)}", file=sys.stderr)
        return 2
    (name,) = args.service
    if args.action == "serve":
        stack.serve(name)
    if args.action == "ready":
        return 0 if stack.ready(name) else 1
    if args.action == "setup":
        stack.setup(name, timeout=args.timeout)
        return 0
    return 2


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch.kafka_io import Publisher
    from simulators.temperature import TemperatureSimulator

    if args.kind in SOURCE_FORMAT_KINDS:
        return _simulate_source_format(args, settings)
    if args.kind == "perfmon":
        from simulators import perfmon as perfmon_sim

        return perfmon_sim.run_cli(args)
    if args.kind == "mtconnect":
        return _simulate_mtconnect(args)

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
        periodic = None
        if getattr(args, "overheat_every", None):
            periodic = (args.overheat_device, 10_000, args.overheat_length * 1000, args.overheat_every * 1000,
                        args.overheat_delta)
        for reading in sim.live(speed=args.speed, periodic_overheat=periodic):
            pub.send(reading)
            if time.monotonic() - last_report >= 5:
                pub.flush()
                log.info("published %d readings (%d acknowledged)", pub.sent, pub.acked)
                last_report = time.monotonic()
            if deadline is not None and time.monotonic() >= deadline:
                break
    return 0


SOURCE_FORMAT_KINDS = ("equipment", "servers", "datacenter")


def _simulate_mtconnect(args: argparse.Namespace) -> int:
    """An MTConnect agent over HTTP (not Kafka): 'ingest mtconnect' reads it."""
    from simulators.mtconnect_agent import MTConnectAgentSimulator, parse_scenario, serve_forever

    try:
        script = [parse_scenario(text) for text in args.scenario or ()]
        sim = MTConnectAgentSimulator(devices=args.devices, seed=args.seed, buffer_size=args.buffer_size,
                                      device_prefix=args.device_prefix, step_ms=args.interval_ms)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    serve_forever(sim, args.host, args.port, args.interval_ms / 1000 / args.speed, script,
                  args.duration.total_seconds() if args.duration else None)
    return 0


def _simulate_source_format(args: argparse.Namespace, settings: Settings) -> int:
    """Simulators that write their source's own format; to Kafka they go through the collectors' mappings."""
    from itertools import chain

    from simulators import feed
    from simulators.datacenter import DatacenterSimulator, write_history
    from simulators.equipment import EquipmentSimulator
    from simulators.servers import HEADER, ServerSimulator

    try:
        anomalies = feed.Anomalies.parse(args.overheat or (), args.silence or (), args.spike_rate)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    common: dict[str, Any] = {"interval_ms": args.interval_ms, "seed": args.seed, "anomalies": anomalies}
    sim: feed.Simulator
    if args.kind == "equipment":
        sim = EquipmentSimulator(sensors=args.devices, **common)
    elif args.kind == "servers":
        sim = ServerSimulator(servers=args.devices, **common)
    else:
        sim = DatacenterSimulator(servers=args.devices, humidity_from_step=args.humidity_from_step, **common)
    duration = args.duration.total_seconds() if args.duration else None
    try:
        events = feed.backfill(sim, args.count) if args.count else feed.live(sim, args.speed, duration)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    log = logging.getLogger("machinewatch.simulate")
    if args.output:
        if args.kind == "datacenter":
            paths = write_history(args.output, events)
            log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
            return 0
        with args.output.open("w") as out:
            lines = (e.line for e in events)
            for line in chain([HEADER], lines) if args.kind == "servers" else lines:
                out.write(line + "\n")
        log.info("wrote %s", args.output)
        return 0
    if args.tcp_port:
        tcp = feed.TcpOut(args.tcp_host, args.tcp_port)
        try:
            for event in events:
                tcp.write(event)
        finally:
            tcp.close()
        log.info("sent %d lines to %s:%d", tcp.sent, args.tcp_host, args.tcp_port)
        return 0
    from ingest.formats import FeedMapper
    from machinewatch.kafka_io import Publisher

    mappers: FeedMapper | None = None
    with Publisher(settings) as pub:
        last_report = time.monotonic()
        for event in events:
            if mappers is None:  # the servers CSV has times of day only: the date is the run's first day
                day = datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC).date()
                mappers = FeedMapper({"servers": {"base_date": day}})
            result = mappers.map(event.feed, event.record, event.line)
            pub.send_many(result.readings)
            for reject in result.rejects:
                pub.dead_letter(f"sim-{args.kind}", reject.raw, reject.reason, "simulator")
            if time.monotonic() - last_report >= 5:
                pub.flush()
                log.info("published %d readings (%d acknowledged)", pub.sent, pub.acked)
                last_report = time.monotonic()
        pub.flush()
        log.info("published %d readings of %d %s devices", pub.sent, args.devices, args.kind)
    return 0


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch import jobs

    if args.action == "submit":
        existing = [] if args.batch else jobs.running(settings, "machinewatch-" + args.job)
        if existing and not args.force:
            print(f"{args.job} already running as {existing[0]['jid']} (use --force to submit another)")
            return 0
        extra = ["--batch", "--job-name", f"machinewatch-{args.job}-backfill"] if args.batch else []
        if args.history:
            if args.job != "window-aggregates" or not args.batch:
                print("--history needs 'jobs submit window-aggregates --batch': a backfill over the history topic")
                return 2
            extra += ["--readings-topic", names.TOPIC_HISTORY_READINGS,
                      "--aggregates-topic", names.TOPIC_HISTORY_AGGREGATES,
                      "--late-topic", names.TOPIC_HISTORY_LATE, "--alerts-topic", names.TOPIC_HISTORY_ALERTS,
                      "--group-id", "mw-history-window-aggregates"]
        print(jobs.submit(settings, args.job, extra, from_savepoint=args.from_savepoint))
        return 0
    if args.action == "list":
        for job in jobs.list_jobs(settings):
            print(f"{job['jid']}  {job['state']:<10} {job['name']}")
        return 0
    if args.action == "cancel":
        jobs.cancel(settings, args.job_id)
        print(f"cancel requested for {args.job_id}")
        return 0
    if args.action == "savepoint":
        print(jobs.savepoint(settings, args.job_id, cancel=args.cancel))
        return 0
    return 2


def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    if args.target == "archive":
        from sinks import archiver

        archiver.main(settings, args.root or settings.state_dir / "archive", args.max_age, idle_exit_s=args.idle_exit)
        return 0
    from sinks import influxdb_writer

    if args.history:
        topics = influxdb_writer.Topics(args.aggregates_topic or names.TOPIC_HISTORY_AGGREGATES,
                                        args.late_topic or names.TOPIC_HISTORY_LATE,
                                        args.alerts_topic or names.TOPIC_HISTORY_ALERTS, history=True)
    else:
        topics = influxdb_writer.Topics(args.aggregates_topic or names.TOPIC_AGGREGATES,
                                        args.late_topic or names.TOPIC_LATE, args.alerts_topic or names.TOPIC_ALERTS)
    group_id = args.group_id or ("mw-history-writer" if args.history else "mw-influx-writer")
    influxdb_writer.main(settings, idle_exit_s=args.idle_exit, group_id=group_id, topics=topics)
    return 0


def cmd_notify(args: argparse.Namespace, settings: Settings) -> int:
    from sinks import notifier

    notifier.main(settings, topic=args.alerts_topic, group_id=args.group_id, ledger_path=args.ledger,
                  idle_exit_s=args.idle_exit)
    return 0


def _utc_time(text: str) -> datetime:
    """An ISO date or date-time; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"{text!r} is not an ISO date or date-time (e.g. 2024-01-01 or 2024-01-01T06:00:00Z)"
        raise argparse.ArgumentTypeError(msg) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch import query

    stop = args.stop
    start = args.start or (stop or datetime.now(tz=UTC)) - args.last
    prefix, site = args.device or "", args.site or ""
    if args.alerts:
        bucket = args.bucket or names.BUCKET_ALERTS
        frames = [("threshold alerts", query.threshold_alerts(settings, start, stop, prefix, site, bucket)),
                  ("device alerts", query.device_alerts(settings, start, stop, prefix, bucket))]
    else:
        bucket = args.bucket or names.BUCKET_AGGREGATES
        frames = [("window aggregates", query.window_aggregates(settings, start, stop, prefix, site,
                                                                args.window or "", bucket))]
    found = 0
    for what, frame in frames:
        if frame.empty:
            print(f"no {what} in bucket '{bucket}' from {start:%Y-%m-%d %H:%M:%S} UTC"
                  f"{f' to {stop:%Y-%m-%d %H:%M:%S} UTC' if stop else ''}")
            continue
        found += len(frame)
        print(f"{what} ({len(frame)} rows, the last {min(args.limit, len(frame))} shown):")
        print(frame.tail(args.limit).to_string(index=False))
    return 0 if found else 1


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from machinewatch import demo

    return demo.run(settings, duration=args.duration.total_seconds(), devices=args.devices)


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """Streamlit in this process's place: headless, no telemetry; the app reads the read-only token itself."""
    import os

    settings.read_token()  # no token yet: fail here with the settings' message, not in the browser
    app = Path(__file__).resolve().parent.parent / "dashboards" / "streamlit" / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.host,
           "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--global.developmentMode", "false"]
    logging.getLogger("machinewatch.dashboard").info("dashboard on http://%s:%d", args.host, args.port)
    # exec, so that stopping this command (a signal to its pid) stops Streamlit too
    os.execve(sys.executable, cmd, {**os.environ, **settings.to_env()})
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="machinewatch",
        description="Real-time machine monitoring: Kafka -> PyFlink -> InfluxDB. "
        "Settings come from MW_* environment variables or a .env file (see README).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="provision and run the local Kafka, Flink and InfluxDB")
    p.add_argument("action", choices=["up", "down", "status", "logs", "provision", "serve", "ready", "setup"],
                   help="up: provision (once, cached) and start all three; down: stop what 'up' started; "
                   "status: server, address, pid, readiness, version; logs: tail the server logs; "
                   "provision: only fetch/build what the servers need; serve SERVER: run one in the foreground "
                   "(the compose demo's containers); ready SERVER: exit 0 when it answers as ready, wherever it "
                   "runs; setup SERVER: wait for it, then create topics (kafka) or buckets and tokens (influxdb)")
    p.add_argument("service", nargs="*",
                   help="for logs: kafka, influxdb, flink (default: all); for provision: kafka, influxdb, flink "
                   "(default: all); for serve, ready, setup: one of kafka, influxdb, flink-jobmanager, "
                   "flink-taskmanager")
    p.add_argument("-n", "--lines", type=int, default=40, help="for logs: lines per server (default 40)")
    p.add_argument("--timeout", type=float, default=240, help="seconds to wait for each server (default 240)")
    p.add_argument("--servers-only", action="store_true",
                   help="status: only the servers; without it the pipeline's health follows: consumer lag per group, "
                   "Flink jobs' state, restarts and last checkpoint, dead letters of the last hour, each source's "
                   "last data")
    p.add_argument("--mqtt", action="store_true",
                   help="up: also start the MQTT broker (mosquitto on MW_BIND_HOST:MW_MOSQUITTO_PORT), "
                   "for 'ingest mqtt'")
    p.add_argument("--kafka-brokers", type=int, metavar="N",
                   help="up: a KRaft cluster of N nodes, each broker and controller (MW_KAFKA_BROKERS; default 1); "
                   "topics get min(3, N) replicas, min.insync.replicas 2 from 3 on")
    p.add_argument("--taskmanagers", type=int, metavar="N",
                   help="up: N Flink TaskManagers (MW_FLINK_TASKMANAGERS; default 1)")
    p.add_argument("--kafka-partitions", type=int, metavar="N",
                   help="up: partitions of the topics it creates (MW_KAFKA_PARTITIONS; default 3)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("simulate", help="publish simulated device readings to Kafka")
    p.add_argument("kind", choices=["temperature", *SOURCE_FORMAT_KINDS, "mtconnect", "perfmon"],
                   help="kind of device: temperature (canonical readings), equipment (the equipment-sensor JSON "
                   "lines), servers (the course CSV format), datacenter (India CSV/°C, USA JSON/°F, Germany "
                   "Parquet/K+W), mtconnect (an HTTP MTConnect agent of CNC machines for 'ingest mtconnect'), "
                   "perfmon (Windows PerfMon PDH-CSV files into --out-dir for 'ingest perfmon')")
    p.add_argument("--devices", type=int, default=10, help="number of devices (default 10)")
    p.add_argument("--interval-ms", type=int, default=1000, help="event-time step per device (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="random seed: same seed, same readings (default 1)")
    p.add_argument("--region", default="plant-1")
    p.add_argument("--site", default="line-a")
    p.add_argument("--disorder-ms", type=int, default=0, help="max out-of-order delay of a reading")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed for live mode (default 1.0)")
    p.add_argument("--duration", type=_duration, help="stop live mode after this long, e.g. 2m")
    p.add_argument("--overheat-every", type=int, metavar="SECONDS",
                   help="temperature live mode: one device overheats every SECONDS (first time 10 s after start)")
    p.add_argument("--overheat-length", type=int, default=150, metavar="SECONDS", help="length of each episode")
    p.add_argument("--overheat-device", type=int, default=3, help="index of the device that overheats (default 3)")
    p.add_argument("--overheat-delta", type=float, default=35.0, help="°C added during an episode (default 35)")
    p.add_argument("--count", type=int, default=0,
                   help="publish this many readings per device ending now, then exit (backfill mode)")
    # Source-format kinds (equipment, servers, datacenter): anomalies and where the lines go.
    p.add_argument("--overheat", action="append", metavar="DEV:START_S:LEN_S:DELTA",
                   help="add DELTA to device DEV's value from START_S for LEN_S seconds of event time; repeatable")
    p.add_argument("--silence", action="append", metavar="DEV:START_S:LEN_S",
                   help="device DEV sends nothing; repeatable")
    p.add_argument("--spike-rate", type=float, default=0.0, help="probability of a spike per reading (default 0)")
    p.add_argument("--humidity-from-step", type=int, help="datacenter: add a humidity field from this step on")
    p.add_argument("--output", type=Path, help="write the source-format file (datacenter: a directory) "
                   "instead of publishing; use with --count")
    p.add_argument("--tcp-port", type=int, help="send JSON lines to a TCP listener ('ingest tcp', e.g. 9988)")
    p.add_argument("--tcp-host", default="127.0.0.1", help="host of the TCP listener (default 127.0.0.1)")
    # mtconnect: an HTTP agent instead of Kafka output.
    p.add_argument("--host", default="127.0.0.1", help="mtconnect: address the agent binds (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="mtconnect: agent port (default 5000; 0 = any free port)")
    p.add_argument("--buffer-size", type=int, default=4096,
                   help="mtconnect: observations the agent's ring buffer keeps (default 4096)")
    p.add_argument("--device-prefix", default="CNC", help="mtconnect: device names are PREFIX01, PREFIX02, ...")
    p.add_argument("--scenario", action="append", metavar="KIND@SECONDS[:DEVICE]",
                   help="mtconnect: play a scenario, e.g. unavailable@30:0, available@45:0, overheat@20:1, estop@60, "
                   "release-estop@70, fault@80:1, overrun@90, restart@120; repeatable")
    from simulators import perfmon as perfmon_sim

    perfmon_sim.add_arguments(p)
    p.set_defaults(func=cmd_simulate)

    if "ingest" not in sub.choices:
        p = sub.add_parser("ingest", help="run a collector: read a source, publish canonical readings to Kafka")
        p.add_subparsers(dest="collector", required=True, metavar="collector")
    ingest_sub = next(a for a in sub.choices["ingest"]._actions if isinstance(a, argparse._SubParsersAction))
    from ingest.mtconnect import cli as mtconnect_cli

    for collector in (mtconnect_cli,):
        collector.add_parser(ingest_sub)
    from machinewatch import plugins

    plugins.add_collector_parsers(ingest_sub)  # the collectors registered as plugins (entry points)

    p = sub.add_parser("jobs", help="operate Flink jobs on the configured cluster")
    p.add_argument("action", choices=["submit", "list", "cancel", "savepoint"],
                   help="submit a job, list jobs, cancel one, or take a savepoint of one (--cancel to stop it too)")
    p.add_argument("job", nargs="?", default="window-aggregates", help="job name to submit (default window-aggregates)")
    p.add_argument("--job-id", help="for cancel and savepoint: the Flink job id")
    p.add_argument("--force", action="store_true", help="submit even if the job already runs")
    p.add_argument("--from-savepoint", help="for submit: restore the job's state from this savepoint path")
    p.add_argument("--batch", action="store_true",
                   help="for submit window-aggregates: a backfill in batch mode over the readings topic as it is now")
    p.add_argument("--history", action="store_true",
                   help=f"with submit window-aggregates --batch: the backfill reads {names.TOPIC_HISTORY_READINGS} "
                   f"and writes {names.TOPIC_HISTORY_AGGREGATES} / {names.TOPIC_HISTORY_ALERTS}, never the live topics")
    p.add_argument("--cancel", action="store_true",
                   help="for savepoint: stop the job with the savepoint (Flink's stop-with-savepoint: every operator "
                        "finishes its work first; prefer it to 'cancel' for the PyFlink jobs)")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("sink", help="write Flink results from Kafka into InfluxDB")
    p.add_argument("target", choices=["influxdb", "archive"],
                   help="influxdb: results into InfluxDB; archive: raw readings into hourly Parquet files (cold path)")
    p.add_argument("--root", type=Path, help="archive: folder of the Parquet archive (default STATE_DIR/archive)")
    p.add_argument("--max-age", type=_flush_age, default=60.0,
                   help="archive: longest seconds a batch waits before it is written, at most 3600 (default 60)")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without results (or readings)")
    p.add_argument("--aggregates-topic", help=f"influxdb: window results topic (default {names.TOPIC_AGGREGATES})")
    p.add_argument("--late-topic", help=f"influxdb: late events topic (default {names.TOPIC_LATE})")
    p.add_argument("--alerts-topic", help=f"influxdb: alerts topic of both jobs (default {names.TOPIC_ALERTS})")
    p.add_argument("--group-id",
                   help="influxdb: Kafka consumer group, whose committed offsets are the writer's progress "
                   "(default mw-influx-writer; mw-history-writer with --history)")
    p.add_argument("--history", action="store_true",
                   help=f"influxdb: a backfill's results: read the {names.TOPIC_HISTORY_AGGREGATES} / "
                   f"{names.TOPIC_HISTORY_LATE} / {names.TOPIC_HISTORY_ALERTS} topics (unless given) and write "
                   f"everything into the '{names.BUCKET_HISTORY}' bucket, which keeps data of any age")
    p.set_defaults(func=cmd_sink)

    p = sub.add_parser(
        "notify", help="send alert transitions by e-mail (MW_SMTP_*) and webhook (MW_WEBHOOK_URL), once each"
    )
    p.add_argument("--alerts-topic", default=names.TOPIC_ALERTS, help="the alerts topic to notify from")
    p.add_argument("--group-id", default="mw-notifier", help="Kafka consumer group")
    p.add_argument("--ledger", type=Path,
                   help="SQLite ledger of what was delivered (default STATE_DIR/notifier/ledger.sqlite)")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds without alerts")
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser("query", help="print window aggregates from InfluxDB (read-only token)")
    p.add_argument("--last", type=_duration, default=timedelta(hours=1), help="time range, e.g. 15m (default 1h)")
    p.add_argument("--device", help="device id prefix")
    p.add_argument("--site")
    p.add_argument("--window", help="window shape: 10s (tumbling) or 30s@10s (sliding); default all")
    p.add_argument("--limit", type=int, default=30, help="rows to print (default 30)")
    p.add_argument("--start", type=_utc_time, help="range start, e.g. 2024-01-01 or 2024-01-01T06:00 (UTC); "
                   "default STOP minus --last")
    p.add_argument("--stop", type=_utc_time, help="range end (UTC); default now")
    p.add_argument("--bucket", help=f"InfluxDB bucket (default '{names.BUCKET_AGGREGATES}', or "
                   f"'{names.BUCKET_ALERTS}' with --alerts; '{names.BUCKET_HISTORY}' for backfills)")
    p.add_argument("--alerts", action="store_true", help="print alerts (threshold rules and device alerts) instead")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("demo", help="stack up, submit the jobs, start a live simulator with overheats, show results")
    p.add_argument("--duration", type=_duration, default=timedelta(seconds=100),
                   help="how long to watch before printing results (default 100s: long enough for the first alert)")
    p.add_argument("--devices", type=int, default=10)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("dashboard", help="the Streamlit dashboard on 127.0.0.1 (InfluxDB read-only token)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python logs every connection at INFO; only its warnings matter to a user.
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.command == "jobs" and args.action in ("cancel", "savepoint") and not args.job_id:
        print(f"jobs {args.action} needs --job-id", file=sys.stderr)
        return 2
    from pydantic import ValidationError
    from urllib3.exceptions import HTTPError as TransportError

    try:
        settings = load_settings()
    except ValidationError as exc:  # a bad MW_* value: name it, not a pydantic traceback
        problems = "; ".join(f"MW_{'_'.join(str(p) for p in err['loc']).upper()}={err.get('input')!r}: {err['msg']}"
                             for err in exc.errors())
        print(f"machinewatch: error: invalid setting {problems}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings))
    except KeyboardInterrupt:
        return 130
    # Our errors (QueryError, JobError, ...) and requests' are RuntimeError/OSError and say what to do;
    # urllib3's own (an HTTP client we do not wrap) are neither, yet no reason for a traceback either.
    except (RuntimeError, OSError, TransportError) as exc:
        print(f"machinewatch: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
