"""History collector plugin: historical CSV / JSON-lines / Parquet files through a mapping, resumable.

Registered as ``history`` under the ``machinewatch.collectors`` entry points; the source is
``ingest.history.loader.HistorySource``, its resume state ``ingest.history.state``, the target checks
(topic names, bucket retention) ``ingest.history.target``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from ingest.history.loader import HistoryConfig
from ingest.history.target import HISTORY_BUCKET, HISTORY_TOPIC
from machinewatch import names
from machinewatch.config import Settings, read_toml_table
from machinewatch.plugins import Collector, CollectorSettings, PluginConfigError, env_overrides, run_command
from machinewatch.runtime import Counters, Source


def _constant(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        msg = f"{text!r} is not KEY=VALUE (e.g. device=pump-7)"
        raise argparse.ArgumentTypeError(msg)
    return key.strip(), value


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("files", nargs="*", help="files or glob patterns")
    p.add_argument("--mapping", help="mapping name (equipment, servers, dc-india, dc-usa, dc-germany) or TOML path")
    p.add_argument("--state", type=Path, help="resume state file (default history-state.json in the MW state dir)")
    p.add_argument("--base-date", type=date.fromisoformat,
                   help="date (YYYY-MM-DD, UTC) for sources with a time of day only, e.g. the servers CSV")
    p.add_argument("--set", dest="constants", action="append", type=_constant, metavar="KEY=VALUE",
                   help="a constant for every row: device, site or region (repeatable), e.g. --set device=pump-7 "
                        "for a file of one device; replaces the mapping's field for it")
    p.add_argument("--topic", help=f"Kafka topic for the readings (default {names.TOPIC_READINGS}; created if "
                                   f"missing); a backfill uses its own, e.g. {HISTORY_TOPIC}")
    p.add_argument("--bucket", help=f"InfluxDB bucket the results will land in (default {names.BUCKET_AGGREGATES}, "
                                    f"{HISTORY_BUCKET} for a backfill): a file older than its retention is refused")
    p.add_argument("--chunk-rows", type=int, help="rows per acknowledged checkpoint (default 5000)")
    p.add_argument("--force", action="store_true", help="ignore the state and load every row again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"files": args.files or None, "mapping": args.mapping, "state_file": args.state,
            "base_date": args.base_date, "chunk_rows": args.chunk_rows, "topic": args.topic, "bucket": args.bucket,
            "constants": dict(args.constants) if args.constants else None, "force": args.force or None,
            "progress": False if args.no_progress else None}


def _load(path: Path | None, overrides: Mapping[str, Any], environ: Mapping[str, str] | None) -> CollectorSettings:
    """The shared order (table, MW_HISTORY_<KEY>, flags), but ``--set`` constants merge into the table's."""
    import os

    from pydantic import ValidationError

    from machinewatch.config import validation_problems

    table: dict[str, Any] = dict(read_toml_table(path, "history", "history", PluginConfigError)) if path else {}
    table.update(env_overrides("history", HistoryConfig, os.environ if environ is None else environ))
    given = {k: v for k, v in overrides.items() if v is not None}
    if "constants" in given:
        constants = table.get("constants")
        given["constants"] = {**(constants if isinstance(constants, dict) else {}), **given["constants"]}
    table.update(given)
    if not table.get("files") or not table.get("mapping"):
        msg = "ingest history needs files and --mapping (or a --config with [history] files and mapping)"
        raise PluginConfigError(msg)
    try:
        return HistoryConfig.model_validate(table)
    except ValidationError as exc:
        msg = f"invalid history config ({path or 'command line'}): {validation_problems(exc, 'history')}"
        raise PluginConfigError(msg) from exc


def _with_state_file(config: HistoryConfig, settings: Settings) -> HistoryConfig:
    if "state_file" in config.model_fields_set:
        return config
    return config.model_copy(update={"state_file": settings.state_dir / "history-state.json"})


def config_from(args: argparse.Namespace, settings: Settings) -> HistoryConfig:
    """The ``[history]`` table of ``--config`` with the command line's options on top, validated."""
    try:
        loaded = plugin.load_settings(args.config, _flag_overrides(args))
    except PluginConfigError as exc:
        msg = f"ingest history: {exc}"
        raise RuntimeError(msg) from exc
    assert isinstance(loaded, HistoryConfig)
    return _with_state_file(loaded, settings)


def _make_source(config: Any, settings: Settings) -> Source:
    from ingest.history.loader import HistorySource
    from ingest.history.state import LoadState
    from ingest.history.target import RetentionGuard, ensure_topic

    config = _with_state_file(config, settings)
    mapping = config.load_mapping()
    source = HistorySource(mapping, config.paths(), LoadState(config.state_file), config.topic, config.chunk_rows,
                           config.progress, guard=RetentionGuard(settings, config.bucket), force=config.force,
                           max_future_ms=round(settings.max_future_skew_s * 1000))
    ensure_topic(settings, config.topic)
    return source


def _summary(source: Any, _counters: Counters) -> str:
    from ingest.history.loader import LoadReport

    total = LoadReport(topic=source.topic)
    for report in source.reports:
        total.add(report)
    return total.describe()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``machinewatch ingest history ...`` for parsed arguments (the registry's command)."""
    return run_command(args, settings)


plugin = Collector(
    name="history",
    summary="load historical CSV / JSON-lines / Parquet files through a mapping (resumable)",
    description="Load files through a declared mapping (ingest/formats/mappings/*.toml) into Kafka. "
    "Progress is kept in a state file per file content and load options (mapping, base date, constants, "
    "topic): an interrupted load resumes, a second run with the same options sends nothing, a run with "
    "changed options loads again; --force re-sends, with the same event ids. Old data goes in as a "
    f"backfill: --topic {HISTORY_TOPIC} --bucket {HISTORY_BUCKET} (see ingest/history/README.md).",
    settings_model=HistoryConfig,
    make_source=_make_source,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
    add_arguments=_add_arguments,
    flag_overrides=_flag_overrides,
    summary_line=_summary,
    settings_loader=_load,
)
