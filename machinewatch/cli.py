"""The ``machinewatch`` command: run the local stack, simulators, jobs, the sink and queries."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from machinewatch import names, plugins
from machinewatch.config import Settings, load_settings
from machinewatch.plugins import duration_arg

# A command-line duration (30s, 15m, 2h, 1d); the plugins' flags use the same one.
_duration = duration_arg


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


def streamlit_command(app: Path, host: str, port: int) -> list[str]:
    """Streamlit serving ``app`` as the dashboard is served: headless, no telemetry, no file watcher (the
    first-render benchmark serves its no-query floor app with the same command)."""
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--global.developmentMode", "false"]


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """Streamlit in this process's place: headless, no telemetry; the app reads the read-only token itself."""
    import os

    settings.read_token()  # no token yet: fail here with the settings' message, not in the browser
    app = Path(__file__).resolve().parent.parent / "dashboards" / "streamlit" / "app.py"
    cmd = streamlit_command(app, args.host, args.port)
    logging.getLogger("machinewatch.dashboard").info("dashboard on http://%s:%d", args.host, args.port)
    # exec, so that stopping this command (a signal to its pid) stops Streamlit too
    os.execve(sys.executable, cmd, {**os.environ, **settings.to_env()})
    return 0  # not reached


class _ChoicesFormatter(argparse.HelpFormatter):
    """Aligns sub-command summaries past the longest sub-command name (argparse measures the names without
    their indent, so ``mtconnect`` would get a line of its own)."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS and isinstance(action, argparse._SubParsersAction) and action.choices:
            longest = max(len(name) for name in action.choices) + self._current_indent + self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def _plugin_verb(sub: Any, verb: str, registered: dict[str, Any], dest: str, summary: str, description: str,
                 listed: str, metavar: str | None = None) -> None:
    """A verb with one subcommand per registered plugin, each with only its own flags; --help lists them."""
    p = sub.add_parser(verb, help=summary, description=description,
                       epilog=f"{listed} and their flags:\n" + plugins.flag_summary(registered),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    choices = p.add_subparsers(dest=dest, required=True, metavar=metavar or dest)
    plugins.add_command_parsers(choices, registered)


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
                   help="up: partitions of the topics it creates (MW_KAFKA_PARTITIONS; default 1)")
    p.set_defaults(func=cmd_stack)

    # simulate, sink: one subcommand per registered plugin, each with only its own flags.
    _plugin_verb(sub, "simulate", plugins.simulators(), "kind",
                 "fake devices: Kafka readings, source formats, PerfMon files, MTConnect",
                 "Simulated devices; each kind is a plugin (entry points 'machinewatch.simulators') with its own "
                 "flags: 'machinewatch simulate KIND --help'.", "kinds")

    if "ingest" not in sub.choices:
        p = sub.add_parser("ingest", help="run a collector: read a source, publish canonical readings to Kafka",
                           formatter_class=_ChoicesFormatter)
        p.add_subparsers(dest="collector", required=True, metavar="collector")
    ingest_sub = next(a for a in sub.choices["ingest"]._actions if isinstance(a, argparse._SubParsersAction))
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

    sinks = plugins.sinks()
    _plugin_verb(sub, "sink", sinks, "target",
                 "run a Kafka consumer: results into InfluxDB, readings into Parquet, notifications",
                 "Kafka consumers; each is a plugin (entry points 'machinewatch.sinks') with its own flags: "
                 "'machinewatch sink NAME --help'.", "sinks", metavar="sink")
    for sink in sinks.values():  # older command lines: 'machinewatch notify' is 'machinewatch sink notify'
        for alias in sink.aliases:
            if alias not in sub.choices:
                plugins.add_command_arguments(
                    sub.add_parser(alias, help=f"{sink.summary} (= 'sink {sink.name}')", description=sink.description),
                    sink)

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
