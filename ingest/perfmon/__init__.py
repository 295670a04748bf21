"""PerfMon collector plugin: a folder of Windows PerfMon PDH-CSV files into readings, each row exactly once.

Registered as ``perfmon`` under the ``machinewatch.collectors`` entry points; the watcher is
``ingest.perfmon.watcher.PerfmonSource``, its settings ``ingest.perfmon.config``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ingest.perfmon.config import PerfmonConfig
from machinewatch.config import Settings
from machinewatch.plugins import Collector, CollectorSettings, PluginConfigError
from machinewatch.runtime import Counters, Source


def _load(path: Path | None, overrides: Mapping[str, Any], environ: Mapping[str, str] | None) -> CollectorSettings:
    from ingest.perfmon.config import load_config

    if path is None:
        msg = "--config FILE with a [perfmon] table is required (see ingest/perfmon/sample.conf)"
        raise PluginConfigError(msg)
    # Relative folders are relative to the file; the file is re-read when it changes (flags applied again).
    return load_config(path, overrides, environ)


def _make_source(config: Any, settings: Settings) -> Source:
    from ingest.perfmon.watcher import PerfmonSource

    return PerfmonSource(config, settings, config_path=config.source_file, overrides=config.flags)


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--once", action="store_true",
                   help="process the files that are finished now, then exit (default: keep watching)")
    p.add_argument("--settle-s", type=float, help="override settle_s: seconds a file must be unchanged")


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"settle_s": args.settle_s, "once": args.once or None}


def _exit_code(source: Any, _counters: Counters) -> int:
    return 1 if any(o.status == "retry" for o in source.outcomes) else 0


plugin = Collector(
    name="perfmon",
    summary="watch a folder for Windows PerfMon PDH-CSV files and publish them",
    description="Watches the folder a PerfMon data collector set writes to. A .csv file is taken once it has "
    "not changed for settle_s seconds; its rows are published to Kafka (one reading per counter and sample, "
    "blank samples skipped), bad rows go to the dead-letter topic, and the file moves to done/ once the "
    "broker acknowledged every row, or to error/ with a .reason.txt if it is not PDH-CSV 4.0. A file whose "
    "header gives no time zone waits in error/ until the config's timezone setting gives one (the config file "
    "is re-read when it changes). Progress is kept in an atomically written state file, so a restart neither "
    "loses nor repeats rows. Kafka comes from the MW_* settings; everything else from the TOML file (--config, "
    "required; see ingest/perfmon/sample.conf) and MW_PERFMON_<KEY>.",
    settings_model=PerfmonConfig,
    make_source=_make_source,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
    add_arguments=_add_arguments,
    flag_overrides=_flag_overrides,
    exit_code=_exit_code,
    settings_loader=_load,
)
