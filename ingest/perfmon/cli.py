"""``machinewatch ingest perfmon``: arguments and the command."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from machinewatch.config import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perfmon", help="watch a folder for Windows PerfMon PDH-CSV files and publish them",
        description="Watches the folder a PerfMon data collector set writes to. A .csv file is taken once it has "
        "not changed for settle_s seconds; its rows are published to Kafka (one reading per counter and sample, "
        "blank samples skipped), bad rows go to the dead-letter topic, and the file moves to done/ once the "
        "broker acknowledged every row, or to error/ with a .reason.txt if it is not PDH-CSV 4.0. A file whose "
        "header gives no time zone waits in error/ until the config's timezone setting gives one (the config file "
        "is re-read when it changes). Progress is "
        "kept in an atomically written state file, so a restart neither loses nor repeats rows. Kafka comes "
        "from the MW_* settings; everything else from the TOML file (see ingest/perfmon/sample.conf).",
    )
    p.add_argument("--config", type=Path, required=True, help="TOML file with a [perfmon] table")
    p.add_argument("--once", action="store_true",
                   help="process the files that are finished now, then exit (default: keep watching)")
    p.add_argument("--settle-s", type=float, help="override settle_s: seconds a file must be unchanged")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.perfmon.config import ConfigError, load_config
    from ingest.perfmon.watcher import PerfmonWatcher

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise RuntimeError(str(exc)) from exc
    overrides = {} if args.settle_s is None else {"settle_s": args.settle_s}
    config = config.model_copy(update=overrides)
    # The config file is re-read when it changes (e.g. a timezone added for parked files).
    watcher = PerfmonWatcher(config, settings, config_path=args.config, overrides=overrides)
    try:
        if args.once:
            watcher.setup()
            outcomes = watcher.run_once()
            return 1 if any(o.status == "retry" for o in outcomes) else 0
        stop = threading.Event()
        # SIGTERM (service stop) ends the loop between files; a file in progress resumes on restart.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        watcher.run(stop)
        return 0
    finally:
        watcher.stop()
